"""The gRPC edge of the archive service: authorization, request validation, proto conversion.

Every RPC is for services only: ingest stores imaging blobs, record-lookup reads blobs and
cold records (and decrypts after its own consent check), operators' tooling tiers. A user's
blob read is recorded by record-lookup's consent gate (GetImage), not here (ADR 13).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import timestamp_pb2

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.contracts.names import PERSON_TOKEN_RULE, is_person_token
from healthbank.rpc import ServiceError, Violations
from services.archive.archive import (
    Archive,
    BlobCorrupt,
    BlobMetadataConflict,
    BlobNotFound,
    ColdDataCorrupt,
)
from services.archive.store import BlobMeta

MAX_BLOB_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000
MAX_RECORDS = 100_000

_BLOB_NAME = re.compile(r"^blobs/([0-9a-f]{64})$")
# RFC 6838 type/subtype, optionally with parameters.
_CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=[^;\s]+)*$"
)
_MAX_CONTENT_TYPE = 255

# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


class ArchiveServicer(archive_pb2_grpc.ArchiveServiceServicer):  # type: ignore[misc, unused-ignore]
    """healthbank.archive.v1.ArchiveService over an :class:`Archive`."""

    def __init__(self, archive: Archive, now: Callable[[], datetime]) -> None:
        """Serve ``archive``; ``now`` is the UTC clock (for cutoff checks)."""
        self._archive = archive
        self._now = now

    async def PutBlob(self, request: archive_pb2.PutBlobRequest, context: Any) -> archive_pb2.Blob:
        """Store a sealed blob under its SHA-256 (idempotent)."""
        violations = Violations()
        _check_person_token(violations, request.person_token, "person_token")
        if violations.require(request.content_type, "content_type"):
            violations.check(
                len(request.content_type) <= _MAX_CONTENT_TYPE
                and _CONTENT_TYPE.match(request.content_type) is not None,
                "content_type",
                "must be a MIME type such as application/dicom",
            )
        if violations.require(request.content, "content"):
            violations.check(
                len(request.content) <= MAX_BLOB_BYTES, "content", "must be at most 64 MiB"
            )
        violations.raise_if_any()
        try:
            blob = await self._archive.put_blob(
                request.person_token, request.content_type, request.content
            )
        except BlobMetadataConflict:
            raise ServiceError.already_exists(
                "this content is stored already with other metadata",
                reason="BLOB_METADATA_CONFLICT",
            ) from None
        return _blob_proto(blob)

    async def GetBlob(
        self, request: archive_pb2.GetBlobRequest, context: Any
    ) -> AsyncIterator[archive_pb2.GetBlobResponse]:
        """Stream a blob in chunks of at most 1 MiB; the first carries the metadata."""
        violations = Violations()
        match = violations.parse(
            request.name, "name", _BLOB_NAME.match, "must be blobs/{sha256 lowercase hex}"
        )
        violations.raise_if_any()
        assert match is not None
        try:
            blob = await self._archive.get_blob(match.group(1))
        except BlobNotFound:
            raise ServiceError.not_found("no such blob", reason="BLOB_NOT_FOUND") from None
        first = True
        try:
            async for chunk in self._archive.blob_chunks(blob):
                response = archive_pb2.GetBlobResponse(chunk=chunk)
                if first:
                    response.blob.CopyFrom(_blob_proto(blob))
                    first = False
                yield response
        except BlobCorrupt as corrupt:
            raise _data_loss(
                f"{corrupt.object_name} does not match its checksum", "BLOB_CORRUPT"
            ) from None

    async def TierRecords(
        self, request: archive_pb2.TierRecordsRequest, context: Any
    ) -> archive_pb2.TierRecordsResponse:
        """Move hot records effective before the cutoff into cold segments."""
        violations = Violations()
        cutoff: datetime | None = None
        if violations.check(request.HasField("cutoff"), "cutoff", "is required"):
            if _valid_timestamp(request.cutoff):
                cutoff = request.cutoff.ToDatetime(tzinfo=UTC)
                violations.check(cutoff <= self._now(), "cutoff", "must not be in the future")
            else:
                violations.add("cutoff", "must be a valid timestamp")
        violations.check(
            0 <= request.max_records <= MAX_RECORDS,
            "max_records",
            f"must be between 0 and {MAX_RECORDS} (0 means {DEFAULT_MAX_RECORDS})",
        )
        violations.raise_if_any()
        assert cutoff is not None
        try:
            result = await self._archive.tier(cutoff, request.max_records or DEFAULT_MAX_RECORDS)
        except ColdDataCorrupt as corrupt:
            raise _data_loss(
                f"{corrupt.object_name} failed verification; no hot record was removed for it",
                "SEGMENT_CORRUPT",
            ) from None
        return archive_pb2.TierRecordsResponse(
            records_moved=result.records_moved, segment_names=result.segment_names
        )

    async def FetchRecords(
        self, request: archive_pb2.FetchRecordsRequest, context: Any
    ) -> AsyncIterator[archive_pb2.FetchRecordsResponse]:
        """Stream a person's cold records, oldest first, payloads still sealed."""
        violations = Violations()
        _check_person_token(violations, request.person_token, "person_token")
        start = _interval_bound(violations, request.effective, "start")
        end = _interval_bound(violations, request.effective, "end")
        if start is not None and end is not None:
            violations.check(start < end, "effective.end", "must be after effective.start")
        violations.raise_if_any()
        try:
            entries = await self._archive.fetch(request.person_token, start, end)
        except ColdDataCorrupt as corrupt:
            raise _data_loss(
                f"{corrupt.object_name} failed its checksum or index check", "SEGMENT_CORRUPT"
            ) from None
        for entry in entries:
            yield archive_pb2.FetchRecordsResponse(
                record=entry.record, sealed_payload=entry.sealed_payload
            )


def _check_person_token(violations: Violations, value: str, field: str) -> None:
    if violations.require(value, field):
        violations.check(is_person_token(value), field, PERSON_TOKEN_RULE)


def _valid_timestamp(timestamp: timestamp_pb2.Timestamp) -> bool:
    return (
        _MIN_SECONDS <= timestamp.seconds <= _MAX_SECONDS and 0 <= timestamp.nanos < 1_000_000_000
    )


def _interval_bound(violations: Violations, interval: Any, bound: str) -> datetime | None:
    if not interval.HasField(bound):
        return None
    timestamp = getattr(interval, bound)
    if not _valid_timestamp(timestamp):
        violations.add(f"effective.{bound}", "must be a valid timestamp")
        return None
    moment: datetime = timestamp.ToDatetime(tzinfo=UTC)
    return moment


def _blob_proto(blob: BlobMeta) -> archive_pb2.Blob:
    return archive_pb2.Blob(
        name=blob.name,
        sha256=blob.sha256,
        size_bytes=blob.size_bytes,
        content_type=blob.content_type,
        person_token=blob.person_token,
    )


def _data_loss(message: str, reason: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.DATA_LOSS, message, reason=reason)
