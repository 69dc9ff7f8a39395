"""The cold tier: content-addressed blobs, tiering hot records into segments, fetching them.

No grpc here: the servicer validates requests and maps the errors below to statuses.

Tiering order (nothing is lost, nothing is doubled):

1. read the hot records effective before the cutoff;
2. skip those already in the cold index (a previous run stopped after indexing);
3. write each new segment (temp file, fsync, rename), read it back and verify it;
4. index its records, keyed by record id (SQLite: one transaction; Cassandra: the
   per-person rows first, the record-id index that step 2 trusts last, see
   :mod:`services.archive.store_cassandra`);
5. only then delete those records from the hot store.

A crash before 4 leaves an unreferenced segment object and the records still hot; every
run ends by collecting such orphans once they are older than ``ORPHAN_GRACE`` (younger
ones may be another run's segment between its write and its index). A crash
during 4 on Cassandra leaves some per-person rows pointing at that segment while the
records are still hot and not "archived": the next run tiers them again and overwrites
those rows (same keys), never adding a second entry. A crash between 4 and 5 leaves the
records both hot and indexed, and the next run just deletes them from the hot store.
FetchRecords reads through the index only, so it never returns a record twice (but, like
any read during tiering, it may return a record that is also still hot). Two overlapping
runs (two archive replicas, or a CronJob overrunning) may both write a segment holding the
same record; the index keeps one location per record id, so it is still found once.

Scrub (:meth:`Archive.scrub`) re-reads every indexed segment and every blob and checks
their SHA-256; a damaged object is never returned as data (fetch raises the Corrupt
errors below, naming the object).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from healthbank.common.v1 import common_pb2
from healthbank.contracts.records import record_to_proto
from healthbank.core.digest import sha256_hex_off_loop
from healthbank.core.ids import is_ulid, new_ulid, ulid_time
from healthbank.records import RecordStore, StoredRecord
from services.archive.objects import ObjectMissing, ObjectStore
from services.archive.segment import (
    SegmentCorrupt,
    SegmentEntry,
    decode_segment,
    encode_segment,
    verify_segment,
)
from services.archive.store import ArchiveStore, BlobMeta, ColdIndexEntry, SegmentMeta

BLOB_CHUNK_BYTES = 1024 * 1024
# Segments are read whole (to check their checksum) when fetched; keep them modest.
SEGMENT_MAX_RECORDS = 1000
SEGMENT_MAX_BYTES = 32 * 1024 * 1024
# An unindexed segment this old is an orphan: no run still writing it is that slow.
ORPHAN_GRACE = timedelta(hours=1)


class BlobNotFound(Exception):
    """No blob with that content address."""


class BlobMetadataConflict(Exception):
    """The content is stored already, for another person or content type."""


class BlobCorrupt(Exception):
    """A stored blob no longer matches its content address (or is gone)."""

    def __init__(self, sha256: str) -> None:
        """The blob with content address ``sha256``; ``object_name`` is ``blobs/{sha256}``."""
        super().__init__(f"blobs/{sha256}")
        self.object_name = f"blobs/{sha256}"


class ColdDataCorrupt(Exception):
    """A segment or its index no longer match what was archived."""

    def __init__(self, segment_id: str) -> None:
        """The damaged segment; ``object_name`` is ``segments/{segment_id}``."""
        super().__init__(segment_name(segment_id))
        self.object_name = segment_name(segment_id)


@dataclass(frozen=True)
class TierResult:
    """What one tiering run moved."""

    records_moved: int
    segment_names: list[str]
    orphans_collected: int = 0


@dataclass(frozen=True)
class ScrubReport:
    """What a scrub checked and which objects failed (names, e.g. ``segments/<id>``)."""

    segments_checked: int
    blobs_checked: int
    damaged: list[str]


def blob_key(sha256: str) -> str:
    """Object key of a blob: ``blobs/<sha[:2]>/<sha>``."""
    return f"blobs/{sha256[:2]}/{sha256}"


def segment_key(segment_id: str) -> str:
    """Object key of a segment: ``segments/<ulid>.seg``."""
    return f"segments/{segment_id}.seg"


def segment_name(segment_id: str) -> str:
    """Resource name of a segment: ``segments/<ulid>``."""
    return f"segments/{segment_id}"


def cold_record(record: StoredRecord) -> common_pb2.Record:
    """The archived metadata of a hot record (no payload, no plaintext)."""
    return record_to_proto(record, tier=common_pb2.TIER_COLD)


def plan_segments(
    records: Sequence[StoredRecord],
    max_records: int = SEGMENT_MAX_RECORDS,
    max_bytes: int = SEGMENT_MAX_BYTES,
) -> list[list[StoredRecord]]:
    """Split records into segment-sized batches of one person and one year each.

    A person's history then reads only that person's segments (never another patient's
    bytes), a year at a time. Within a batch the records keep their given order.
    """
    batches: list[list[StoredRecord]] = []
    current: list[StoredRecord] = []
    size = 0
    for record in sorted(records, key=_segment_group):
        weight = len(record.sealed_payload) + 512
        full = len(current) >= max_records or size + weight > max_bytes
        if current and (full or _segment_group(current[0]) != _segment_group(record)):
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += weight
    if current:
        batches.append(current)
    return batches


def _segment_group(record: StoredRecord) -> tuple[str, int]:
    return record.person_token, record.effective_time.year


class Archive:
    """Blobs and cold segments over an object store, an index and the shared hot store."""

    def __init__(
        self,
        store: ArchiveStore,
        objects: ObjectStore,
        records: RecordStore,
        now: Callable[[], datetime],
        *,
        segment_max_records: int = SEGMENT_MAX_RECORDS,
        segment_max_bytes: int = SEGMENT_MAX_BYTES,
    ) -> None:
        """Archive into ``store`` and ``objects``, tiering from the hot ``records``."""
        self._store = store
        self._objects = objects
        self._records = records
        self._now = now
        self._segment_max_records = segment_max_records
        self._segment_max_bytes = segment_max_bytes
        # One tiering run at a time per process: two would read the same hot records.
        self._tiering = asyncio.Lock()

    # --- blobs -----------------------------------------------------------------------------

    async def put_blob(self, person_token: str, content_type: str, content: bytes) -> BlobMeta:
        """Store ``content`` under its SHA-256; a retry stores nothing new.

        Raises BlobMetadataConflict if the same content is stored for another person or
        content type.
        """
        sha256 = await sha256_hex_off_loop(content)
        wanted = BlobMeta(
            sha256=sha256,
            size_bytes=len(content),
            content_type=content_type,
            person_token=person_token,
        )
        existing = await self._store.get_blob(sha256)
        if existing is not None:
            _check_same_owner(existing, wanted)
            if await self._objects.exists(blob_key(sha256)):
                return existing
        # The file first, then the row: a row always points at durable bytes.
        await self._objects.put(blob_key(sha256), content)
        stored = await self._store.put_blob(wanted)
        _check_same_owner(stored, wanted)
        return stored

    async def get_blob(self, sha256: str) -> BlobMeta:
        """Metadata of a stored blob; BlobNotFound if unknown."""
        blob = await self._store.get_blob(sha256)
        if blob is None:
            raise BlobNotFound(sha256)
        return blob

    async def blob_chunks(self, blob: BlobMeta) -> AsyncIterator[bytes]:
        """The blob's content in chunks of at most 1 MiB, verified while read.

        The last chunk is held back until the whole content matched its SHA-256, so a
        damaged blob ends in BlobCorrupt instead of a complete-looking stream.
        """
        digest = hashlib.sha256()
        size = 0
        pending: bytes | None = None
        try:
            async for chunk in self._objects.chunks(blob_key(blob.sha256), BLOB_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                if pending is not None:
                    yield pending
                pending = chunk
        except ObjectMissing:
            raise BlobCorrupt(blob.sha256) from None
        if size != blob.size_bytes or not hmac.compare_digest(digest.hexdigest(), blob.sha256):
            raise BlobCorrupt(blob.sha256)
        if pending is not None:
            yield pending

    # --- tiering ---------------------------------------------------------------------------

    async def tier(
        self,
        cutoff: datetime,
        max_records: int,
        on_segment: Callable[[int], None] | None = None,
    ) -> TierResult:
        """Move up to ``max_records`` hot records effective before ``cutoff`` to the cold tier.

        ``on_segment(records)`` is called after each segment's hot copies are gone
        (progress); the run ends by collecting orphan segments.
        """
        async with self._tiering:
            hot = await self._records.list_effective_before(cutoff, max_records)
            if not hot:
                orphans = await self.collect_orphans()
                return TierResult(records_moved=0, segment_names=[], orphans_collected=orphans)
            indexed = await self._store.archived_record_ids([r.record_id for r in hot])
            leftovers = [record for record in hot if record.record_id in indexed]
            if leftovers:
                # Archived by an interrupted run: durable already, only the hot copy remains.
                await self._records.delete_records(leftovers)
            names: list[str] = []
            fresh = [record for record in hot if record.record_id not in indexed]
            for batch in plan_segments(fresh, self._segment_max_records, self._segment_max_bytes):
                names.append(await self._write_segment(batch))
                await self._records.delete_records(batch)
                if on_segment is not None:
                    on_segment(len(batch))
            orphans = await self.collect_orphans()
            return TierResult(
                records_moved=len(hot), segment_names=names, orphans_collected=orphans
            )

    async def collect_orphans(self, grace: timedelta = ORPHAN_GRACE) -> int:
        """Delete segment objects no index names that are older than ``grace``; how many.

        Such a segment was written by a run that crashed before indexing it; its records
        are still hot (and tiered again by a later run), so nothing in it is needed.
        """
        indexed = {segment.object_key for segment in await self._store.list_segments()}
        horizon = self._now() - grace
        collected = 0
        for key in await self._objects.list_keys("segments/"):
            segment_id = key.removeprefix("segments/").removesuffix(".seg")
            if key in indexed or not is_ulid(segment_id) or ulid_time(segment_id) > horizon:
                continue
            await self._objects.delete(key)
            collected += 1
        return collected

    # --- scrub -----------------------------------------------------------------------------

    async def scrub(self, on_object: Callable[[str, bool], None] | None = None) -> ScrubReport:
        """Re-read every indexed segment and every blob and check its SHA-256.

        ``on_object(name, intact)`` is called per object (progress). Nothing is repaired
        or deleted: a damaged object is reported for an operator to restore.
        """
        damaged: list[str] = []
        segments = await self._store.list_segments()
        for segment in segments:
            intact = await self._segment_intact(segment)
            if not intact:
                damaged.append(segment_name(segment.segment_id))
            if on_object is not None:
                on_object(segment_name(segment.segment_id), intact)
        blobs = await self._store.list_blobs()
        for blob in blobs:
            try:
                async for _ in self.blob_chunks(blob):
                    pass
                intact = True
            except BlobCorrupt:
                intact = False
                damaged.append(blob.name)
            if on_object is not None:
                on_object(blob.name, intact)
        return ScrubReport(
            segments_checked=len(segments), blobs_checked=len(blobs), damaged=damaged
        )

    async def _segment_intact(self, segment: SegmentMeta) -> bool:
        try:
            data = await self._objects.get(segment.object_key)
        except ObjectMissing:
            return False
        try:
            await asyncio.to_thread(verify_segment, data)
        except SegmentCorrupt:
            return False
        return hmac.compare_digest(data[-32:].hex(), segment.sha256)

    async def _write_segment(self, batch: Sequence[StoredRecord]) -> str:
        created = self._now()
        segment_id = new_ulid(created)
        entries = [SegmentEntry(cold_record(record), record.sealed_payload) for record in batch]
        # Compressing, hashing and verifying megabytes: on a worker thread, never the loop.
        encoded = await asyncio.to_thread(encode_segment, segment_id, entries)
        key = segment_key(segment_id)
        await self._objects.put(key, encoded.data)
        # Trust what the disk gives back, not what we meant to write.
        written = await self._objects.get(key)
        try:
            await asyncio.to_thread(verify_segment, written)
        except SegmentCorrupt:
            raise ColdDataCorrupt(segment_id) from None
        if written != encoded.data:
            raise ColdDataCorrupt(segment_id)
        await self._store.add_segment(
            SegmentMeta(
                segment_id=segment_id,
                object_key=key,
                sha256=encoded.sha256,
                record_count=len(batch),
                size_bytes=len(encoded.data),
                created_time=created,
            ),
            [
                ColdIndexEntry(
                    record_id=record.record_id,
                    person_token=record.person_token,
                    effective_time=record.effective_time,
                    segment_id=segment_id,
                    offset=offset,
                )
                for record, offset in zip(batch, encoded.offsets, strict=True)
            ],
        )
        return segment_name(segment_id)

    # --- fetching --------------------------------------------------------------------------

    async def fetch(
        self, person_token: str, start: datetime | None, end: datetime | None
    ) -> list[SegmentEntry]:
        """A person's cold records effective in [start, end), oldest first.

        Every segment touched is verified whole first; ColdDataCorrupt if one is damaged,
        missing or does not hold what the index says.
        """
        index = await self._store.list_cold(person_token, start, end)
        by_segment: dict[str, list[ColdIndexEntry]] = {}
        for entry in index:
            by_segment.setdefault(entry.segment_id, []).append(entry)
        found: dict[str, SegmentEntry] = {}
        # One segment in memory at a time, verified and decoded on a worker thread (a
        # segment holds up to a thousand records: too much work for the event loop).
        for segment_id, entries in by_segment.items():
            try:
                data = await self._objects.get(segment_key(segment_id))
                archived = await asyncio.to_thread(
                    decode_segment, data, [entry.offset for entry in entries]
                )
            except (ObjectMissing, SegmentCorrupt):
                raise ColdDataCorrupt(segment_id) from None
            for entry, record in zip(entries, archived, strict=True):
                if (
                    record.record.record_id != entry.record_id
                    or record.record.person_token != person_token
                ):
                    raise ColdDataCorrupt(segment_id)
                found[entry.record_id] = record
        return [found[entry.record_id] for entry in index]


def _check_same_owner(stored: BlobMeta, wanted: BlobMeta) -> None:
    if (stored.person_token, stored.content_type) != (wanted.person_token, wanted.content_type):
        raise BlobMetadataConflict(stored.sha256)
