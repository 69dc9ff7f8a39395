"""StoredRecord.from_fields: the store's fast way to build a record is the constructor's record."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, asdict
from datetime import UTC, datetime

import pytest

from healthbank.records import StoredRecord

RECORD = StoredRecord(
    record_id="01HZZZZZZZZZZZZZZZZZZZZZZZ",
    person_token="a" * 64,
    source_hospital="hospital-a",
    source_format=1,
    message_id="m-1",
    source_version="",
    content_hash="h",
    category=4,
    code_system="http://loinc.org",
    code="1558-6",
    code_display="Fasting glucose",
    effective_time=datetime(2024, 3, 1, 8, 30, tzinfo=UTC),
    status="final",
    sealed_payload=b"\x01sealed",
)


def test_from_fields_builds_the_constructors_record() -> None:
    built = StoredRecord.from_fields(asdict(RECORD).items())
    assert built == RECORD and hash(built) == hash(RECORD) and repr(built) == repr(RECORD)
    with pytest.raises(FrozenInstanceError):
        built.code = "other"  # type: ignore[misc]


def test_a_later_pair_overrides_an_earlier_one() -> None:
    built = StoredRecord.from_fields([*asdict(RECORD).items(), ("blob_name", "blobs/x")])
    assert built.blob_name == "blobs/x" and built.code == RECORD.code


@pytest.mark.parametrize(
    "pairs",
    [
        [(name, value) for name, value in asdict(RECORD).items() if name != "status"],
        [*asdict(RECORD).items(), ("not_a_field", 1)],
    ],
    ids=["a field missing", "an unknown field"],
)
def test_a_missing_or_unknown_field_is_refused(pairs: list[tuple[str, object]]) -> None:
    with pytest.raises(ValueError, match="every field"):
        StoredRecord.from_fields(pairs)
