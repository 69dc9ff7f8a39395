"""The emergency-fact codec (healthbank.contracts.facts): the one writer and reader."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from healthbank.common.v1 import common_pb2
from healthbank.contracts.facts import Fact, MalformedFact, decode_fact, encode_fact
from healthbank.contracts.names import record_name

TOKEN = "a" * 64
ALLERGY = common_pb2.RECORD_CATEGORY_ALLERGY
CONDITION = common_pb2.RECORD_CATEGORY_CONDITION
PROCEDURE = common_pb2.RECORD_CATEGORY_PROCEDURE

PENICILLIN = Fact(
    category=ALLERGY,
    system="http://snomed.info/sct",
    code="764146007",
    display="Penicillin",
    severity="high",
    status="active",
    effective_time=datetime(2019, 5, 2, 10, tzinfo=UTC),
    source_hospital="hospital-a",
    record_name=record_name(TOKEN, "01J"),
)

# A fact exactly as ingest has been storing it (sealed) since shape version 1.
STORED_TODAY = (
    '{"v":1,"category":"RECORD_CATEGORY_ALLERGY","system":"http://snomed.info/sct",'
    '"code":"764146007","display":"Penicillin","severity":"high","status":"active",'
    '"effective_time":"2019-05-02T10:00:00Z","source_hospital":"hospital-a",'
    f'"record_name":"persons/{TOKEN}/records/01J"}}'
).encode()


def test_encode_writes_the_stored_wire_form_byte_for_byte() -> None:
    assert encode_fact(PENICILLIN) == STORED_TODAY


def test_decode_reads_what_is_stored() -> None:
    assert decode_fact(STORED_TODAY, category=0) == PENICILLIN


def test_round_trip_keeps_non_ascii_text_and_other_zones() -> None:
    fact = Fact(
        category=CONDITION,
        system="",
        code="",
        display="Ménière’s disease",
        severity="severe",
        status="active",
        effective_time=datetime.fromisoformat("2020-01-01T08:00:00+08:00"),
        source_hospital="h",
        record_name=record_name(TOKEN, "R"),
    )
    decoded = decode_fact(encode_fact(fact), category=0)
    assert decoded == fact
    assert decoded.effective_time is not None
    assert decoded.effective_time.utcoffset() == UTC.utcoffset(None)


def test_decode_lower_cases_vocabulary_and_ignores_unknown_keys() -> None:
    document = json.dumps(
        {"category": "allergy", "severity": " High ", "status": "Active", "added_later": [1]}
    ).encode()
    fact = decode_fact(document, category=0)
    assert (fact.category, fact.severity, fact.status) == (ALLERGY, "high", "active")
    assert fact.effective_time is None and fact.display == ""


@pytest.mark.parametrize(
    ("category_field", "expected"),
    [
        (CONDITION, CONDITION),
        ("RECORD_CATEGORY_PROCEDURE", PROCEDURE),
        ("record_category_procedure", PROCEDURE),
        ("AllergyIntolerance", ALLERGY),
        (None, ALLERGY),  # the store row's category
        (0, ALLERGY),
        (99, ALLERGY),
        (True, ALLERGY),
        ("not-a-category", ALLERGY),
    ],
)
def test_decode_category_forms(category_field: object, expected: int) -> None:
    document = json.dumps({"category": category_field}).encode()
    assert decode_fact(document, category=ALLERGY).category == expected


def test_a_date_without_zone_is_utc_and_a_bad_date_is_none() -> None:
    assert decode_fact(b'{"effective_time": "2020-02-03"}', 1).effective_time == datetime(
        2020, 2, 3, tzinfo=UTC
    )
    assert decode_fact(b'{"effective_time": "yesterday"}', 1).effective_time is None


@pytest.mark.parametrize(
    "document", [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b'{"code": 5}', b'{"status": {}}']
)
def test_decode_rejects_malformed_documents(document: bytes) -> None:
    with pytest.raises(MalformedFact):
        decode_fact(document, category=1)


def test_repr_leaves_out_free_text() -> None:
    assert "Penicillin" not in repr(PENICILLIN)
    assert "764146007" in repr(PENICILLIN)
