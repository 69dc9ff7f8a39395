"""ArchiveStore on Apache Cassandra (keyspace ``<prefix>_archive``).

The objects themselves (blobs, segments) stay in the object store; these tables hold
what points at them, shaped by their queries:

- ``blobs``: blob metadata by content address. ``INSERT ... IF NOT EXISTS`` (a
  lightweight transaction), because the first owner and content type of some content
  must win everywhere, also when two processes store the same bytes at once.
- ``segments``: one row per written, verified segment.
- ``cold_records``: the cold index keyed by record id ("is this record archived?").
- ``cold_by_person``: the same entries partitioned by ``(person_token, year)`` and
  ordered by (effective time in microseconds, record id): FetchRecords reads one
  partition slice per year; ``cold_person_years`` lists a person's partitions.

``add_segment`` writes the segment row, then the person rows, then ``cold_records``
(bounded concurrency). ``cold_records`` is what tiering trusts before deleting hot
copies, so it is written last: a crash part-way leaves records that are not "archived"
yet, and the retry rewrites their person rows (same key) with its own segment, never a
second entry. Records already in ``cold_records`` keep their first location.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from healthbank.records import from_micros, to_micros
from healthbank.storage.cassandra import CassandraDatabase
from services.archive.store import BlobMeta, ColdIndexEntry, SegmentMeta

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS blobs (
        sha256 text PRIMARY KEY,
        size_bytes bigint,
        content_type text,
        person_token text
    );
    CREATE TABLE IF NOT EXISTS segments (
        segment_id text PRIMARY KEY,
        object_key text,
        sha256 text,
        record_count int,
        size_bytes bigint,
        created_time timestamp
    );
    CREATE TABLE IF NOT EXISTS cold_records (
        record_id text PRIMARY KEY,
        person_token text,
        effective_us bigint,
        segment_id text,
        frame_offset bigint
    );
    CREATE TABLE IF NOT EXISTS cold_by_person (
        person_token text, year int, effective_us bigint, record_id text,
        segment_id text, frame_offset bigint,
        PRIMARY KEY ((person_token, year), effective_us, record_id)
    ) WITH CLUSTERING ORDER BY (effective_us ASC, record_id ASC);
    CREATE TABLE IF NOT EXISTS cold_person_years (
        person_token text, year int,
        PRIMARY KEY ((person_token), year)
    )
    """,
]

# Parallel requests per call when a segment's worth of rows is read or written.
_CONCURRENCY = 32


class CassandraArchiveStore:
    """ArchiveStore on Cassandra; see the module docstring for the tables."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database

    async def open(self) -> CassandraArchiveStore:
        """Connect (``healthbank migrate`` creates the schema); returns self."""
        await self._db.open()
        return self

    async def put_blob(self, blob: BlobMeta) -> BlobMeta:
        """See ArchiveStore.put_blob."""
        rows = await self._db.execute(
            "INSERT INTO blobs (sha256, size_bytes, content_type, person_token)"
            " VALUES (?, ?, ?, ?) IF NOT EXISTS",
            (blob.sha256, blob.size_bytes, blob.content_type, blob.person_token),
        )
        return blob if rows[0].applied else _blob(rows[0])

    async def get_blob(self, sha256: str) -> BlobMeta | None:
        """See ArchiveStore.get_blob."""
        rows = await self._db.execute(
            "SELECT sha256, size_bytes, content_type, person_token FROM blobs WHERE sha256 = ?",
            (sha256,),
        )
        return _blob(rows[0]) if rows else None

    async def archived_record_ids(self, record_ids: Sequence[str]) -> set[str]:
        """See ArchiveStore.archived_record_ids."""
        wanted = list(dict.fromkeys(record_ids))
        limit = asyncio.Semaphore(_CONCURRENCY)

        # Point reads by partition key, a bounded number in flight (no coordinator fan-out
        # of a large IN list).
        async def indexed(record_id: str) -> bool:
            async with limit:
                rows = await self._db.execute(
                    "SELECT record_id FROM cold_records WHERE record_id = ?", (record_id,)
                )
            return bool(rows)

        found = await asyncio.gather(*(indexed(record_id) for record_id in wanted))
        return {record_id for record_id, hit in zip(wanted, found, strict=True) if hit}

    async def add_segment(self, segment: SegmentMeta, index: Sequence[ColdIndexEntry]) -> int:
        """See ArchiveStore.add_segment."""
        await self._db.execute(
            "INSERT INTO segments (segment_id, object_key, sha256, record_count, size_bytes,"
            " created_time) VALUES (?, ?, ?, ?, ?, ?)",
            (
                segment.segment_id,
                segment.object_key,
                segment.sha256,
                segment.record_count,
                segment.size_bytes,
                segment.created_time,
            ),
        )
        indexed = await self.archived_record_ids([entry.record_id for entry in index])
        fresh = list(
            {entry.record_id: entry for entry in index if entry.record_id not in indexed}.values()
        )
        await self._db.execute_many(
            "INSERT INTO cold_person_years (person_token, year) VALUES (?, ?)",
            sorted({(entry.person_token, entry.effective_time.year) for entry in fresh}),
            concurrency=_CONCURRENCY,
        )
        await self._db.execute_many(
            "INSERT INTO cold_by_person (person_token, year, effective_us, record_id,"
            " segment_id, frame_offset) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    entry.person_token,
                    entry.effective_time.year,
                    to_micros(entry.effective_time),
                    entry.record_id,
                    entry.segment_id,
                    entry.offset,
                )
                for entry in fresh
            ],
            concurrency=_CONCURRENCY,
        )
        # Last: once a record is here, tiering may delete its hot copy.
        await self._db.execute_many(
            "INSERT INTO cold_records (record_id, person_token, effective_us, segment_id,"
            " frame_offset) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    entry.record_id,
                    entry.person_token,
                    to_micros(entry.effective_time),
                    entry.segment_id,
                    entry.offset,
                )
                for entry in fresh
            ],
            concurrency=_CONCURRENCY,
        )
        return len(fresh)

    async def list_segments(self) -> list[SegmentMeta]:
        """See ArchiveStore.list_segments (a full scan: maintenance jobs only)."""
        rows = await self._db.execute(
            "SELECT segment_id, object_key, sha256, record_count, size_bytes, created_time"
            " FROM segments"
        )
        segments = [
            SegmentMeta(
                segment_id=row.segment_id,
                object_key=row.object_key,
                sha256=row.sha256,
                record_count=int(row.record_count),
                size_bytes=int(row.size_bytes),
                created_time=row.created_time.replace(tzinfo=UTC),
            )
            for row in rows
        ]
        return sorted(segments, key=lambda segment: segment.segment_id)

    async def list_blobs(self) -> list[BlobMeta]:
        """See ArchiveStore.list_blobs (a full scan: maintenance jobs only)."""
        rows = await self._db.execute(
            "SELECT sha256, size_bytes, content_type, person_token FROM blobs"
        )
        return sorted((_blob(row) for row in rows), key=lambda blob: blob.sha256)

    async def list_cold(
        self, person_token: str, start: datetime | None, end: datetime | None
    ) -> list[ColdIndexEntry]:
        """See ArchiveStore.list_cold."""
        years = sorted(
            int(row.year)
            for row in await self._db.execute(
                "SELECT year FROM cold_person_years WHERE person_token = ?", (person_token,)
            )
            if (start is None or row.year >= start.year) and (end is None or row.year <= end.year)
        )
        lower = to_micros(start) if start is not None else None
        upper = to_micros(end) if end is not None else None
        found: list[ColdIndexEntry] = []
        for year in years:
            cql = (
                "SELECT record_id, effective_us, segment_id, frame_offset FROM cold_by_person"
                " WHERE person_token = ? AND year = ?"
            )
            params: list[Any] = [person_token, year]
            if lower is not None:
                cql += " AND effective_us >= ?"
                params.append(lower)
            if upper is not None:
                cql += " AND effective_us < ?"
                params.append(upper)
            rows = await self._db.execute(cql, params)
            found.extend(
                ColdIndexEntry(
                    record_id=row.record_id,
                    person_token=person_token,
                    effective_time=from_micros(row.effective_us),
                    segment_id=row.segment_id,
                    offset=int(row.frame_offset),
                )
                for row in rows
            )
        return found

    async def check(self) -> None:
        """See ArchiveStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See ArchiveStore.close."""
        await self._db.close()


def _blob(row: Any) -> BlobMeta:
    return BlobMeta(
        sha256=row.sha256,
        size_bytes=int(row.size_bytes),
        content_type=row.content_type,
        person_token=row.person_token,
    )
