"""The StoredRecord <-> Record conversion (healthbank.contracts.records)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from healthbank.common.v1 import common_pb2
from healthbank.contracts.records import record_from_proto, record_to_proto
from healthbank.records import StoredRecord

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
