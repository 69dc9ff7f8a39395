"""Master patient index rules: validation, matching and sealed-profile encoding (no I/O)."""

from __future__ import annotations

import dataclasses

import pytest

from services.identity.domain import (
    MAX_MRN_LENGTH,
    Demographics,
    demographics_aad,
    demographics_problems,
    hospital_id_problem,
    hospital_mrn,
    mrn_problem,
)

TOKEN = "0123456789abcdef" * 4
OTHER_TOKEN = "f" * 64


@pytest.mark.parametrize("hospital_id", ["h1", "city-general", "H.2_b", "a" * 64])
def test_good_hospital_ids(hospital_id: str) -> None:
    assert hospital_id_problem(hospital_id) is None


def test_hospital_id_required() -> None:
    assert hospital_id_problem("") == "is required"


@pytest.mark.parametrize("hospital_id", ["-h", "h 1", "h/1", "a" * 65, "h\u00e9"])
def test_bad_hospital_ids(hospital_id: str) -> None:
    problem = hospital_id_problem(hospital_id)
    assert problem is not None
    assert hospital_id not in problem


@pytest.mark.parametrize("mrn", ["1", "MRN-0001", "A 12/34", "x" * MAX_MRN_LENGTH])
def test_good_mrns(mrn: str) -> None:
    assert mrn_problem(mrn) is None


def test_mrn_rules() -> None:
    assert mrn_problem("") == "is required"
    assert mrn_problem("x" * (MAX_MRN_LENGTH + 1)) == "must be at most 64 characters"
    for bad in ["M7\nQ2", "M7\tQ2", " M7Q2", "M7Q2 ", "M7\x00"]:
        problem = mrn_problem(bad)
        assert problem is not None
        assert "M7" not in problem


def test_hospital_mrn_pairs_are_unambiguous() -> None:
    # Hospital ids cannot contain the separator, so no two pairs hash the same value.
    assert hospital_mrn("h1", "23") != hospital_mrn("h12", "3")
    assert hospital_mrn("h1", "MRN-1") == "h1\x00MRN-1"


def test_demographics_round_trip() -> None:
    demographics = Demographics("Zhang", "Wei", "1980-02-29", "male", "13800138000")
    assert Demographics.from_bytes(demographics.to_bytes()) == demographics
    assert not demographics.is_empty()
    assert Demographics().is_empty()
    assert not Demographics(address="1 Road").is_empty()


def test_demographics_by_field_is_every_field_as_asdict_gives_it() -> None:
    # by_field is a shallow copy: right only while every field is a plain str.
    demographics = Demographics("Zhang", "Wei", "1980-02-29", "male", "13800138000", "1 Road")
    assert demographics.by_field() == dataclasses.asdict(demographics)
    assert all(type(value) is str for value in demographics.by_field().values())
    assert [field.name for field in dataclasses.fields(Demographics)] == list(
        demographics.by_field()
    )


def test_demographics_aad_binds_the_person() -> None:
    assert demographics_aad(TOKEN) != demographics_aad(OTHER_TOKEN)
    assert TOKEN.encode() in demographics_aad(TOKEN)


def test_valid_demographics() -> None:
    assert demographics_problems(Demographics("Li", "Na", "2001-12-31", "female")) == []
    assert demographics_problems(Demographics()) == []


def test_demographics_problems_never_echo_values() -> None:
    demographics = Demographics(
        family_name="x" * 201,
        given_name="Bad\nName",
        birth_date="1980-02-30",
        sex="yes",
        phone="13800138000",
    )
    problems = demographics_problems(demographics)
    assert [field for field, _ in problems] == ["family_name", "given_name", "birth_date", "sex"]
    for _, rule in problems:
        for value in ("Bad", "1980-02-30", "yes"):
            assert value not in rule


@pytest.mark.parametrize("birth_date", ["1980-1-1", "19800101", "1980-13-01", "abcd-ef-gh"])
def test_birth_date_format(birth_date: str) -> None:
    problems = demographics_problems(Demographics(birth_date=birth_date))
    assert problems == [("birth_date", "must be a date as YYYY-MM-DD")]
