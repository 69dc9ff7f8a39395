"""The principal's codecs: proto (consent checks, audit events), stored JSON and log form.

The token codec is covered with the interceptor in test_rpc_errors.py; the tests here that
touch it check only that it applies the same principal rules as the other decoders.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import (
    InvalidPrincipal,
    InvalidToken,
    Principal,
    PrincipalKind,
    Purpose,
    decode_token,
    encode_token,
    principal_from_json,
    principal_from_proto,
    principal_log_fields,
    principal_to_json,
    principal_to_proto,
)
from healthbank.core.logs import JsonFormatter

PERSON = "c" * 64
SECRET = b"unit-test-secret"


@pytest.mark.parametrize("kind", list(PrincipalKind))
@pytest.mark.parametrize("purpose", list(Purpose))
def test_proto_round_trip(kind: PrincipalKind, purpose: Purpose) -> None:
    principal = Principal(kind, "subject-1", "hospital-a", ("er",), purpose)
    message = principal_to_proto(principal)
    assert common_pb2.PrincipalKind.Name(message.kind) == f"PRINCIPAL_KIND_{kind.name}"
    assert common_pb2.PurposeOfUse.Name(message.purpose) == f"PURPOSE_OF_USE_{purpose.name}"
    assert principal_from_proto(message) == principal


def test_proto_problems_are_all_listed_by_field() -> None:
    message = common_pb2.Principal(hospital_id="bad id")
    with pytest.raises(InvalidPrincipal) as raised:
        principal_from_proto(message)
    assert [field for field, _ in raised.value.violations] == [
        "kind",
        "subject",
        "hospital_id",
        "purpose",
    ]


@pytest.mark.parametrize(
    ("kind", "purpose", "subject", "bad_field"),
    [
        (0, 1, "doc-7", "kind"),
        (99, 1, "doc-7", "kind"),  # proto3 enums are open: unknown numbers arrive
        (1, 0, "doc-7", "purpose"),
        (1, 99, "doc-7", "purpose"),
        (1, 1, "has space", "subject"),
        (1, 1, "x" * 129, "subject"),
    ],
)
def test_proto_rejects_each_bad_field(
    kind: int, purpose: int, subject: str, bad_field: str
) -> None:
    message = common_pb2.Principal(subject=subject)
    # Set as numbers: the constructor refuses unknown enum numbers, fields accept them.
    message.kind = kind  # type: ignore[assignment]
    message.purpose = purpose  # type: ignore[assignment]
    with pytest.raises(InvalidPrincipal) as raised:
        principal_from_proto(message)
    assert [field for field, _ in raised.value.violations] == [bad_field]


def test_invalid_principal_never_echoes_values() -> None:
    with pytest.raises(InvalidPrincipal) as raised:
        principal_from_proto(common_pb2.Principal(subject="13800138000 x", hospital_id="a b"))
    text = str(raised.value) + repr(raised.value.violations)
    assert "13800138000" not in text
    assert "a b" not in text


@pytest.mark.parametrize("kind", list(PrincipalKind))
def test_json_round_trip(kind: PrincipalKind) -> None:
    principal = Principal(kind, "ingest", "hospital-a", ("a", "b"), Purpose.OPERATIONS)
    assert principal_from_json(principal_to_json(principal)) == principal


def test_json_form_is_stable() -> None:
    # Rows written by earlier versions must stay readable: the stored keys are a contract.
    stored = (
        '{"kind":"service","subject":"ingest","hospital_id":"hospital-a",'
        '"roles":[],"purpose":"operations"}'
    )
    principal = Principal(PrincipalKind.SERVICE, "ingest", "hospital-a", (), Purpose.OPERATIONS)
    assert principal_from_json(stored) == principal
    assert json.loads(principal_to_json(principal)) == json.loads(stored)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"kind":"service"}',
        '{"kind":"wizard","subject":"s","hospital_id":"","roles":[],"purpose":"operations"}',
        '{"kind":"service","subject":"","hospital_id":"","roles":[],"purpose":"operations"}',
        '{"kind":"service","subject":"s","hospital_id":"","roles":[1],"purpose":"operations"}',
    ],
)
def test_json_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        principal_from_json(text)


def test_token_decoder_applies_the_same_rules() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    good = Principal(PrincipalKind.CLINICIAN, "doc-7", "hospital-a")
    assert decode_token(encode_token(good, SECRET, now=now), SECRET, now=now) == good
    # Signed, so only a bug or a stolen secret makes one; still refused like a forgery.
    spaced = Principal(PrincipalKind.CLINICIAN, "doc 7", "hospital-a")
    with pytest.raises(InvalidToken):
        decode_token(encode_token(spaced, SECRET, now=now), SECRET, now=now)


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (
            Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS),
            {
                "principal_kind": "service",
                "principal_purpose": "operations",
                "principal_service": "ingest",
            },
        ),
        (
            Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", "hospital-a"),
            {
                "principal_kind": "hospital_engine",
                "principal_purpose": "treatment",
                "principal_hospital": "hospital-a",
                "principal_engine": "hospital-a-engine",
            },
        ),
        (
            Principal(PrincipalKind.PATIENT, PERSON, purpose=Purpose.PATIENT_ACCESS),
            {
                "principal_kind": "patient",
                "principal_purpose": "patient_access",
                "principal_person_token": PERSON,
            },
        ),
        (
            Principal(PrincipalKind.CLINICIAN, "staff-0042", "hospital-a"),
            {
                "principal_kind": "clinician",
                "principal_purpose": "treatment",
                "principal_hospital": "hospital-a",
            },
        ),
        (
            # A patient subject that is not a person token is not a pseudonym: left out.
            Principal(PrincipalKind.PATIENT, "someone", purpose=Purpose.PATIENT_ACCESS),
            {"principal_kind": "patient", "principal_purpose": "patient_access"},
        ),
    ],
)
def test_log_fields(principal: Principal, expected: dict[str, str]) -> None:
    assert principal_log_fields(principal) == expected


@pytest.mark.parametrize(
    "kind",
    [
        PrincipalKind.CLINICIAN,
        PrincipalKind.EMERGENCY,
        PrincipalKind.COMMITTEE,
        PrincipalKind.RESEARCHER,
    ],
)
def test_staff_ids_stay_out_of_log_lines(kind: PrincipalKind) -> None:
    principal = Principal(kind, "staff-0042", "hospital-a", ("er",))
    record = logging.LogRecord("t", logging.INFO, "", 0, "read", None, None)
    for key, value in principal_log_fields(principal).items():
        setattr(record, key, value)
    line = json.loads(JsonFormatter("test").format(record))
    assert line["principal_kind"] == kind.value
    assert "staff-0042" not in json.dumps(line)
