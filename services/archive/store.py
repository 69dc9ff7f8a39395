"""What the archive service persists besides the objects: blob metadata, segments and
the cold record index (person, effective time, record id -> segment, offset).

The index is keyed by record id, so a record is indexed at most once: a tiering run
that is retried after a crash never makes a record appear twice in FetchRecords.

Backends: :class:`SqliteArchiveStore` below (embedded, ``archive.db``) and
:class:`services.archive.store_cassandra.CassandraArchiveStore` (keyspace
``<prefix>_archive``); the objects themselves live in an ObjectStore either way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from healthbank.records import from_micros, to_micros
from healthbank.storage.sqlite import SqliteDatabase


@dataclass(frozen=True)
class BlobMeta:
    """A stored blob: content address, size, type and owner."""

    sha256: str
    size_bytes: int
    content_type: str
    person_token: str

    @property
    def name(self) -> str:
        """Resource name ``blobs/{sha256}``."""
        return f"blobs/{self.sha256}"


@dataclass(frozen=True)
class SegmentMeta:
    """A written, verified segment."""

    segment_id: str
    object_key: str
    sha256: str
    record_count: int
    size_bytes: int
    created_time: datetime


@dataclass(frozen=True)
class ColdIndexEntry:
    """Where one archived record lives."""

    record_id: str
    person_token: str
    effective_time: datetime
    segment_id: str
    offset: int


class ArchiveStore(Protocol):
    """Archive metadata. Implementations: SQLite (embedded) and Cassandra."""

    async def put_blob(self, blob: BlobMeta) -> BlobMeta:
        """Record ``blob`` unless its sha256 is known; return what is stored."""
        ...

    async def get_blob(self, sha256: str) -> BlobMeta | None:
        """The blob with this content address, if stored."""
        ...

    async def archived_record_ids(self, record_ids: Sequence[str]) -> set[str]:
        """Which of ``record_ids`` are already in the cold index."""
        ...

    async def add_segment(self, segment: SegmentMeta, index: Sequence[ColdIndexEntry]) -> int:
        """Record a segment and index its records in one step; returns records newly indexed.

        Records already indexed keep their first location.
        """
        ...

    async def list_cold(
        self, person_token: str, start: datetime | None, end: datetime | None
    ) -> list[ColdIndexEntry]:
        """A person's cold records with effective time in [start, end), oldest first."""
        ...

    async def list_segments(self) -> list[SegmentMeta]:
        """Every indexed segment (scrub and orphan collection walk them all)."""
        ...

    async def list_blobs(self) -> list[BlobMeta]:
        """Every stored blob's metadata (scrub walks them all)."""
        ...

    async def check(self) -> None:
        """Raise unless the store answers now (health checks)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size_bytes INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        person_token TEXT NOT NULL
    );
    CREATE TABLE segments (
        segment_id TEXT PRIMARY KEY,
        object_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        record_count INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE TABLE cold_records (
        record_id TEXT PRIMARY KEY,
        person_token TEXT NOT NULL,
        effective_us INTEGER NOT NULL,
        segment_id TEXT NOT NULL REFERENCES segments (segment_id),
        frame_offset INTEGER NOT NULL
    );
    CREATE INDEX cold_records_by_person ON cold_records (person_token, effective_us, record_id)
    """,
]


class SqliteArchiveStore:
    """ArchiveStore on an embedded SQLite file (``archive.db`` in the data dir)."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteArchiveStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def put_blob(self, blob: BlobMeta) -> BlobMeta:
        """See ArchiveStore.put_blob."""

        def work(connection: sqlite3.Connection) -> BlobMeta:
            connection.execute(
                "INSERT INTO blobs (sha256, size_bytes, content_type, person_token)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                (blob.sha256, blob.size_bytes, blob.content_type, blob.person_token),
            )
            stored = _blob(connection, blob.sha256)
            assert stored is not None  # inserted or already there, inside this transaction
            return stored

        return await self._db.write(work)

    async def get_blob(self, sha256: str) -> BlobMeta | None:
        """See ArchiveStore.get_blob."""
        return await self._db.read(lambda c: _blob(c, sha256))

    async def archived_record_ids(self, record_ids: Sequence[str]) -> set[str]:
        """See ArchiveStore.archived_record_ids."""
        wanted = list(record_ids)

        def work(connection: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            # SQLite limits bound parameters; ask in slices.
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                rows = connection.execute(
                    "SELECT record_id FROM cold_records"
                    f" WHERE record_id IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                found.update(row["record_id"] for row in rows)
            return found

        return await self._db.read(work)

    async def add_segment(self, segment: SegmentMeta, index: Sequence[ColdIndexEntry]) -> int:
        """See ArchiveStore.add_segment."""

        def work(connection: sqlite3.Connection) -> int:
            connection.execute(
                "INSERT INTO segments (segment_id, object_key, sha256, record_count, size_bytes,"
                " created_us) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    segment.segment_id,
                    segment.object_key,
                    segment.sha256,
                    segment.record_count,
                    segment.size_bytes,
                    to_micros(segment.created_time),
                ),
            )
            before = connection.total_changes
            connection.executemany(
                "INSERT INTO cold_records (record_id, person_token, effective_us, segment_id,"
                " frame_offset) VALUES (?, ?, ?, ?, ?) ON CONFLICT (record_id) DO NOTHING",
                [
                    (
                        entry.record_id,
                        entry.person_token,
                        to_micros(entry.effective_time),
                        entry.segment_id,
                        entry.offset,
                    )
                    for entry in index
                ],
            )
            return connection.total_changes - before

        return await self._db.write(work)

    async def list_cold(
        self, person_token: str, start: datetime | None, end: datetime | None
    ) -> list[ColdIndexEntry]:
        """See ArchiveStore.list_cold."""
        sql = "SELECT * FROM cold_records WHERE person_token = ?"
        params: list[object] = [person_token]
        if start is not None:
            sql += " AND effective_us >= ?"
            params.append(to_micros(start))
        if end is not None:
            sql += " AND effective_us < ?"
            params.append(to_micros(end))
        sql += " ORDER BY effective_us, record_id"
        rows = await self._db.read(lambda c: c.execute(sql, params).fetchall())
        return [
            ColdIndexEntry(
                record_id=row["record_id"],
                person_token=row["person_token"],
                effective_time=from_micros(row["effective_us"]),
                segment_id=row["segment_id"],
                offset=row["frame_offset"],
            )
            for row in rows
        ]

    async def list_segments(self) -> list[SegmentMeta]:
        """See ArchiveStore.list_segments."""
        rows = await self._db.read(
            lambda c: c.execute("SELECT * FROM segments ORDER BY segment_id").fetchall()
        )
        return [
            SegmentMeta(
                segment_id=row["segment_id"],
                object_key=row["object_key"],
                sha256=row["sha256"],
                record_count=row["record_count"],
                size_bytes=row["size_bytes"],
                created_time=from_micros(row["created_us"]),
            )
            for row in rows
        ]

    async def list_blobs(self) -> list[BlobMeta]:
        """See ArchiveStore.list_blobs."""
        rows = await self._db.read(
            lambda c: c.execute("SELECT * FROM blobs ORDER BY sha256").fetchall()
        )
        return [
            BlobMeta(
                sha256=row["sha256"],
                size_bytes=row["size_bytes"],
                content_type=row["content_type"],
                person_token=row["person_token"],
            )
            for row in rows
        ]

    async def check(self) -> None:
        """See ArchiveStore.check."""
        await self._db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See ArchiveStore.close."""
        await self._db.close()


def _blob(connection: sqlite3.Connection, sha256: str) -> BlobMeta | None:
    row = connection.execute("SELECT * FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
    if row is None:
        return None
    return BlobMeta(
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        content_type=row["content_type"],
        person_token=row["person_token"],
    )
