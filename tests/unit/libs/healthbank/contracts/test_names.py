"""Resource names and the id rules every service validates with (contracts/names.py)."""

from __future__ import annotations

import pytest

from healthbank.contracts.names import (
    is_hospital_id,
    is_person_token,
    owning_person_token,
    parse_person_name,
    parse_record_name,
    person_name,
    record_name,
)
from healthbank.core.ids import new_ulid

TOKEN = "0123456789abcdef" * 4
RECORD_ID = "01HZY3M8Q6X0Z6E4J9T6R2K1AB"


def test_person_token_shape() -> None:
    assert is_person_token(TOKEN)
    assert not is_person_token(TOKEN.upper())
    assert not is_person_token(TOKEN[:-1])
    assert not is_person_token(TOKEN + "0")
    assert not is_person_token("g" * 64)
    assert not is_person_token(TOKEN + "\n")
    assert not is_person_token("")


def test_person_name_round_trip() -> None:
    assert person_name(TOKEN) == f"persons/{TOKEN}"
    assert parse_person_name(person_name(TOKEN)) == TOKEN


@pytest.mark.parametrize(
    "name",
    [
        "",
        "persons/",
        TOKEN,
        f"patients/{TOKEN}",
        f"persons/{TOKEN.upper()}",
        f"persons/{TOKEN[:-1]}",
        f"persons/{TOKEN}/",
        f"persons/{TOKEN}\n",
        f"persons/{TOKEN}/records/{RECORD_ID}",
    ],
)
def test_malformed_person_names(name: str) -> None:
    assert parse_person_name(name) is None


def test_record_name_round_trip() -> None:
    record_id = new_ulid()
    name = record_name(TOKEN, record_id)
    assert name == f"persons/{TOKEN}/records/{record_id}"
    assert parse_record_name(name) == (TOKEN, record_id)


@pytest.mark.parametrize(
    "name",
    [
        "",
        f"patients/{TOKEN}/records/{RECORD_ID}",
        f"persons/{TOKEN}/records/",
        f"persons/{TOKEN}/records/not-a-ulid",
        f"persons/{TOKEN}/records/{RECORD_ID.lower()}",
        f"persons/{TOKEN}/records/{RECORD_ID}/x",
        f"persons/{'g' * 64}/records/{RECORD_ID}",
        f"persons/{TOKEN}/grants/{RECORD_ID}",
        f"persons/{TOKEN}",
    ],
)
def test_malformed_record_names(name: str) -> None:
    assert parse_record_name(name) is None


@pytest.mark.parametrize(
    "name",
    [
        f"persons/{TOKEN}",
        f"persons/{TOKEN}/records/{RECORD_ID}",
        f"persons/{TOKEN}/grants/{RECORD_ID}",
        f"persons/{TOKEN}/breakGlass/{RECORD_ID}",
    ],
)
def test_owning_person_of_resources_under_a_person(name: str) -> None:
    assert owning_person_token(name) == TOKEN


@pytest.mark.parametrize(
    "name",
    [
        "",
        f"patients/{TOKEN}/records/{RECORD_ID}",
        f"persons/{TOKEN}/records",
        f"persons/{TOKEN}/records/",
        f"persons/{TOKEN}//{RECORD_ID}",
        f"persons/{TOKEN[:-1]}/records/{RECORD_ID}",
        f"blobs/{TOKEN}",
    ],
)
def test_no_owning_person(name: str) -> None:
    assert owning_person_token(name) is None


@pytest.mark.parametrize("value", ["h1", "hospital-a", "City.General_2", "a" * 64])
def test_hospital_ids(value: str) -> None:
    assert is_hospital_id(value)


@pytest.mark.parametrize("value", ["", "-lead", ".lead", "bad id", "a" * 65, "a/b", "ü"])
def test_malformed_hospital_ids(value: str) -> None:
    assert not is_hospital_id(value)
