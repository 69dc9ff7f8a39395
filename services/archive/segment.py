"""Cold segments: the file format records are archived in. Pure (bytes in, bytes out).

A segment holds a batch of records moved out of the hot store, each with its payload
still sealed (the archive never sees plaintext)::

    header   b"HBSEG\\0" | version u16 BE | segment id (26-byte ULID) | entry count u32 BE
    frames   entry count times: frame length u32 BE | zlib(frame body)
             frame body = record length u32 BE | healthbank.common.v1.Record | sealed payload
    trailer  SHA-256 of every byte before it (32 bytes)

Frames are compressed one by one, so a record is read from its frame offset without
inflating the rest; the trailer checksum covers the whole file and is checked before
anything in it is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from healthbank.common.v1 import common_pb2
from healthbank.core.ids import ULID_LENGTH, is_ulid

MAGIC = b"HBSEG\x00"
VERSION = 1
CHECKSUM_SIZE = 32

_HEADER = struct.Struct(f">{len(MAGIC)}sH{ULID_LENGTH}sI")
_U32 = struct.Struct(">I")
_U32_MAX = 2**32 - 1


class SegmentCorrupt(Exception):
    """The bytes are not an intact segment (checksum, framing or content is wrong)."""


@dataclass(frozen=True)
class SegmentEntry:
    """One archived record: metadata (no plaintext) and the sealed payload."""

    record: common_pb2.Record
    sealed_payload: bytes


@dataclass(frozen=True)
class EncodedSegment:
    """A segment file's bytes and where each entry's frame starts."""

    segment_id: str
    data: bytes
    offsets: list[int]

    @property
    def sha256(self) -> str:
        """The trailing checksum, lowercase hex."""
        return self.data[-CHECKSUM_SIZE:].hex()


@dataclass(frozen=True)
class SegmentHeader:
    """What a verified segment says about itself."""

    segment_id: str
    entry_count: int
    offsets: list[int]


def encode_segment(segment_id: str, entries: Sequence[SegmentEntry]) -> EncodedSegment:
    """Serialize ``entries`` into a segment named ``segment_id`` (a ULID)."""
    if not is_ulid(segment_id):
        raise ValueError("segment id must be a ULID")
    if not entries or len(entries) > _U32_MAX:
        raise ValueError("a segment holds 1 to 2**32 - 1 entries")
    parts = [_HEADER.pack(MAGIC, VERSION, segment_id.encode("ascii"), len(entries))]
    offsets: list[int] = []
    position = _HEADER.size
    for entry in entries:
        record = entry.record.SerializeToString(deterministic=True)
        frame = zlib.compress(_U32.pack(len(record)) + record + entry.sealed_payload)
        if len(frame) > _U32_MAX:
            raise ValueError("a record is too large for one segment frame")
        offsets.append(position)
        parts.append(_U32.pack(len(frame)))
        parts.append(frame)
        position += _U32.size + len(frame)
    body = b"".join(parts)
    return EncodedSegment(
        segment_id=segment_id, data=body + hashlib.sha256(body).digest(), offsets=offsets
    )


def verify_segment(data: bytes) -> SegmentHeader:
    """Check checksum, header and framing of a whole segment; SegmentCorrupt if anything is off."""
    if len(data) < _HEADER.size + CHECKSUM_SIZE:
        raise SegmentCorrupt("segment is truncated")
    body, checksum = data[:-CHECKSUM_SIZE], data[-CHECKSUM_SIZE:]
    if not hmac.compare_digest(hashlib.sha256(body).digest(), checksum):
        raise SegmentCorrupt("segment checksum does not match")
    magic, version, raw_id, count = _HEADER.unpack_from(body, 0)
    if magic != MAGIC or version != VERSION:
        raise SegmentCorrupt("not a healthbank segment of a known version")
    segment_id = raw_id.decode("ascii", "replace")
    if not is_ulid(segment_id):
        raise SegmentCorrupt("segment id in header is not a ULID")
    offsets: list[int] = []
    position = _HEADER.size
    while position < len(body):
        offsets.append(position)
        position = _frame_end(body, position)
    if position != len(body) or len(offsets) != count:
        raise SegmentCorrupt("segment framing does not match its entry count")
    return SegmentHeader(segment_id=segment_id, entry_count=count, offsets=offsets)


def read_entry(data: bytes, offset: int) -> SegmentEntry:
    """Decode the entry whose frame starts at ``offset`` of a segment already verified."""
    # A view, not a slice: a copy of the whole segment per entry made a 1,000-record fetch
    # of a 16 MiB segment take seconds.
    body = memoryview(data)[:-CHECKSUM_SIZE]
    if not _HEADER.size <= offset < len(body):
        raise SegmentCorrupt("entry offset is outside the segment")
    end = _frame_end(body, offset)
    try:
        inflated = zlib.decompress(body[offset + _U32.size : end])
    except zlib.error:
        raise SegmentCorrupt("segment frame does not inflate") from None
    if len(inflated) < _U32.size:
        raise SegmentCorrupt("segment frame is truncated")
    (record_length,) = _U32.unpack_from(inflated, 0)
    record_end = _U32.size + record_length
    if record_end > len(inflated):
        raise SegmentCorrupt("segment frame is truncated")
    record = common_pb2.Record()
    try:
        record.ParseFromString(inflated[_U32.size : record_end])
    except DecodeError:
        raise SegmentCorrupt("segment record does not parse") from None
    return SegmentEntry(record=record, sealed_payload=inflated[record_end:])


def decode_segment(data: bytes, offsets: Sequence[int] | None = None) -> list[SegmentEntry]:
    """Verify a whole segment (SegmentCorrupt if anything is off), then decode the entries
    whose frames start at ``offsets`` (None: every entry, in order)."""
    header = verify_segment(data)
    return [read_entry(data, offset) for offset in (header.offsets if offsets is None else offsets)]


def _frame_end(body: bytes | memoryview, offset: int) -> int:
    if offset + _U32.size > len(body):
        raise SegmentCorrupt("segment frame header is truncated")
    (length,) = _U32.unpack_from(body, offset)
    end = offset + _U32.size + length
    if end > len(body):
        raise SegmentCorrupt("segment frame runs past the end")
    return end
