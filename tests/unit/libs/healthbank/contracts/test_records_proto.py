"""The StoredRecord <-> Record conversion (healthbank.contracts.records)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from healthbank.common.v1 import common_pb2
from healthbank.contracts.records import (
    fill_descriptive,
    record_from_packed,
    record_from_proto,
    record_to_proto,
)
from healthbank.records import StoredRecord
from healthbank.records.model import PACKED_FIELDS, packed_fields_of

RECORD = StoredRecord(
    record_id="01JD0000000000000000000000",
    person_token="c3" * 32,
    source_hospital="city-general",
    source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
    message_id="msg-1",
    source_version="1",
    content_hash="ab" * 32,
    category=common_pb2.RECORD_CATEGORY_OBSERVATION,
    code_system="http://loinc.org",
    code="1558-6",
    code_display="Fasting glucose",
    effective_time=datetime(2023, 9, 9, 7, 30, 15, 123456, tzinfo=UTC),
    status="final",
    sealed_payload=b"sealed",
    blob_name="",
)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2023, 9, 9, 7, 30, 15, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch
        datetime(1901, 2, 3, 4, 5, 6, 7, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2020, 1, 1, 12, 0),  # naive: UTC
    ],
)
def test_the_effective_time_is_the_timestamp_protobuf_would_build(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    shown = record_to_proto(replace(RECORD, effective_time=moment), tier=common_pb2.TIER_HOT)
    assert (shown.effective_time.seconds, shown.effective_time.nanos) == (
        expected.seconds,
        expected.nanos,
    )


def test_a_record_survives_the_round_trip_with_its_payload_kept_aside() -> None:
    shown = record_to_proto(RECORD, tier=common_pb2.TIER_COLD, fhir_json=b"{}")
    assert (shown.name, shown.tier, shown.fhir_json) == (RECORD.name, common_pb2.TIER_COLD, b"{}")
    assert record_from_proto(shown, RECORD.sealed_payload) == RECORD


def _packed(record: StoredRecord) -> bytes:
    """The record's cell as the Cassandra store writes it (ADR 60)."""
    message = common_pb2.Record()
    fill_descriptive(message, record)
    return message.SerializeToString()


def _read_back(record: StoredRecord) -> StoredRecord:
    return record_from_packed(
        _packed(record),
        record_id=record.record_id,
        person_token=record.person_token,
        effective_time=record.effective_time,
        sealed_payload=record.sealed_payload,
    )


@pytest.mark.parametrize(
    "record",
    [
        RECORD,
        replace(RECORD, blob_name="blobs/" + "b" * 64, code_display="空腹血糖", source_format=0),
        replace(RECORD, source_hospital="", message_id="", code_system="", code="", status=""),
    ],
)
def test_a_record_read_from_its_packed_cell_is_the_record_and_is_shown_alike(
    record: StoredRecord,
) -> None:
    read = _read_back(record)
    shown = record_to_proto(read, tier=common_pb2.TIER_HOT, fhir_json=b"{}")
    assert not PACKED_FIELDS & read.__dict__.keys()  # shown from the cell's bytes (ADR 63)
    expected = record_to_proto(record, tier=common_pb2.TIER_HOT, fhir_json=b"{}")
    assert shown.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
    assert read == record and hash(read) == hash(record)  # unpacked on first read
    assert [getattr(read, name) for name in sorted(PACKED_FIELDS)] == [
        getattr(record, name) for name in sorted(PACKED_FIELDS)
    ]


@pytest.mark.parametrize("name", sorted(PACKED_FIELDS))
def test_each_packed_field_read_first_is_the_cells(name: str) -> None:
    record = replace(RECORD, blob_name="blobs/" + "c" * 64)
    assert getattr(_read_back(record), name) == getattr(record, name)


def test_a_changed_copy_of_a_packed_record_is_shown_with_its_change() -> None:
    changed = replace(_read_back(RECORD), status="amended", category=2)
    assert packed_fields_of(changed) is None
    shown = record_to_proto(changed, tier=common_pb2.TIER_HOT)
    assert (shown.status, shown.category) == ("amended", 2)
    assert shown.code.code == RECORD.code


def test_a_packed_record_has_only_the_fields_of_a_record() -> None:
    read = _read_back(RECORD)
    with pytest.raises(AttributeError, match="nothing"):
        read.nothing  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ValueError, match="every field but the packed ones"):
        StoredRecord.with_packed_fields({"record_id": "x"}, b"", lambda _: {})
    odd = StoredRecord.with_packed_fields(
        {
            "record_id": RECORD.record_id,
            "person_token": RECORD.person_token,
            "effective_time": RECORD.effective_time,
            "sealed_payload": b"",
        },
        b"",
        lambda _: {"status": "final"},
    )
    with pytest.raises(ValueError, match="exactly the packed fields"):
        odd.status  # noqa: B018
