"""Cold segments (encode, verify, decode) and the archive's pure helpers; no I/O."""

from __future__ import annotations

import hashlib
import struct
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from healthbank.common.v1 import common_pb2
from healthbank.core.ids import new_ulid
from healthbank.records import StoredRecord
from services.archive.archive import blob_key, cold_record, plan_segments, segment_key
from services.archive.segment import (
    CHECKSUM_SIZE,
    MAGIC,
    SegmentCorrupt,
    SegmentEntry,
    decode_segment,
    encode_segment,
    read_entry,
    verify_segment,
)

BASE = datetime(2015, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def stored(index: int, payload_size: int = 40, person: str = "e" * 64) -> StoredRecord:
    return StoredRecord(
        record_id=new_ulid(BASE + timedelta(days=index)),
        person_token=person,
        source_hospital="hospital-a",
        source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
        message_id=f"msg-{index}",
        source_version="1",
        content_hash="c" * 64,
        category=common_pb2.RECORD_CATEGORY_OBSERVATION,
        code_system="http://loinc.org",
        code="718-7",
        code_display="Hemoglobin",
        effective_time=BASE + timedelta(days=index),
        status="final",
        sealed_payload=bytes((index + i) % 256 for i in range(payload_size)),
        blob_name="blobs/" + "d" * 64 if index % 2 else "",
    )


def entries(count: int) -> list[SegmentEntry]:
    return [
        SegmentEntry(cold_record(record), record.sealed_payload)
        for record in (stored(i) for i in range(count))
    ]


def test_round_trip_keeps_metadata_and_sealed_payload() -> None:
    originals = entries(5)
    segment_id = new_ulid()
    encoded = encode_segment(segment_id, originals)
    assert encoded.data.startswith(MAGIC)
    assert encoded.sha256 == hashlib.sha256(encoded.data[:-CHECKSUM_SIZE]).hexdigest()
    header = verify_segment(encoded.data)
    assert header.segment_id == segment_id
    assert header.entry_count == 5
    assert header.offsets == encoded.offsets
    assert decode_segment(encoded.data) == originals
    # Each record is readable on its own from its offset.
    for offset, original in zip(encoded.offsets, originals, strict=True):
        assert read_entry(encoded.data, offset) == original


def test_cold_record_metadata_is_complete() -> None:
    record = stored(3)
    proto = cold_record(record)
    assert proto.name == f"persons/{record.person_token}/records/{record.record_id}"
    assert proto.tier == common_pb2.TIER_COLD
    assert proto.effective_time.ToDatetime(tzinfo=UTC) == record.effective_time
    assert (proto.code.system, proto.code.code, proto.code.display) == (
        record.code_system,
        record.code,
        record.code_display,
    )
    assert proto.source.format == record.source_format
    assert proto.source.message_id == record.message_id
    assert proto.blob_name == record.blob_name
    # Metadata only: plaintext never goes into a segment.
    assert proto.fhir_json == b""


def test_every_flipped_byte_is_detected() -> None:
    data = encode_segment(new_ulid(), entries(3)).data
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        with pytest.raises(SegmentCorrupt):
            verify_segment(bytes(damaged))


def test_truncation_and_extension_are_detected() -> None:
    data = encode_segment(new_ulid(), entries(3)).data
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(SegmentCorrupt):
            verify_segment(data[:cut])
    with pytest.raises(SegmentCorrupt):
        verify_segment(data + b"\x00")


def test_a_consistent_but_malformed_segment_is_rejected() -> None:
    # Right checksum, wrong content: framing is checked too, not just the hash.
    encoded = encode_segment(new_ulid(), entries(2))
    body = bytearray(encoded.data[:-CHECKSUM_SIZE])
    struct.pack_into(">I", body, len(MAGIC) + 2 + 26, 3)  # claims three entries
    resealed = bytes(body) + hashlib.sha256(body).digest()
    with pytest.raises(SegmentCorrupt):
        verify_segment(resealed)

    garbage_frame = zlib.compress(b"\xff\xff\xff\xff")
    body = bytearray(encoded.data[: encoded.offsets[1]])
    body += struct.pack(">I", len(garbage_frame)) + garbage_frame
    resealed = bytes(body) + hashlib.sha256(body).digest()
    verify_segment(resealed)
    with pytest.raises(SegmentCorrupt):
        read_entry(resealed, encoded.offsets[1])
    with pytest.raises(SegmentCorrupt):
        read_entry(resealed, 3)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_segment("not-a-ulid", entries(1))
    with pytest.raises(ValueError):
        encode_segment(new_ulid(), [])


def test_plan_segments_respects_count_and_size_limits() -> None:
    records = [stored(i, payload_size=1000) for i in range(25)]
    batches = plan_segments(records, max_records=10, max_bytes=10**9)
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert [r for batch in batches for r in batch] == records
    by_size = plan_segments(records, max_records=1000, max_bytes=3 * 1512)
    assert [len(batch) for batch in by_size] == [3] * 8 + [1]
    # A single record larger than the limit still gets a segment of its own.
    huge = [stored(0, payload_size=10_000)]
    assert plan_segments(huge, max_records=10, max_bytes=100) == [huge]
    assert plan_segments([]) == []


def test_plan_segments_keeps_each_segment_to_one_person_and_one_year() -> None:
    # Interleaved as the hot store lists them: by time across persons.
    first, second = "e" * 64, "f" * 64
    records = [stored(i * 100, person=first if i % 2 else second) for i in range(8)]
    batches = plan_segments(records, max_records=1000, max_bytes=10**9)
    groups = [{(r.person_token, r.effective_time.year) for r in batch} for batch in batches]
    assert all(len(group) == 1 for group in groups)
    assert len(groups) == len({group.pop() for group in groups})
    assert sorted(r.record_id for batch in batches for r in batch) == sorted(
        r.record_id for r in records
    )


def test_object_keys() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert blob_key(sha) == f"blobs/{sha[:2]}/{sha}"
    segment_id = new_ulid()
    assert segment_key(segment_id) == f"segments/{segment_id}.seg"
