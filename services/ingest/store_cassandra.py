"""IngestStore on Apache Cassandra (keyspace ``<prefix>_ingest``), without a single
lightweight transaction: the receipt claim in the record store decides (ADR 0019).

Tables, shaped by their queries:

- ``pending_audits``: the notes of messages that may owe their audit event, with the
  noted event (``audit``, JSON), for the background repair's "oldest pending before T"
  query. Partitioned by (minute of the occur time, shard): each partition holds one minute
  of one shard, so writes spread over ``PENDING_SHARDS`` partitions and the tombstones left
  by appended events (every message writes and soon deletes one row) stay a few hundred
  per partition instead of piling up in one partition that every scan would read through.
- ``pending_minutes``: which (shard, minute) partitions of ``pending_audits`` may hold
  rows, one partition per shard; a scan reads these markers instead of guessing minutes.
  A marker is deleted when a scan finds its minute empty and wholly before ``before``.
- ``appended_audits``: one row per message content whose event the audit service holds.
- ``write_audits``: the reservations of the earlier protocol (reserved with LWTs), only
  read: an older reservation's appended flag and its note still count.

Order of writes: the note (its index row and marker in one logged batch) before the claim;
after the append, the appended row and the deletion of the note in one logged batch. A note
whose message is appended, or was never stored, is stale: scans check every note against
``appended_audits`` and delete stale ones; the pipeline discards the never-stored ones.

The index tables use ``gc_grace_seconds = 3600``: a deleted row that a lagging replica
resurrects is harmless (the scan finds it stale, or the marker empty, and deletes it again).
A note made with a clock more than the pipeline's grace period behind the scanning
process could lose its marker to a concurrent scan; the hospital's retry still appends it.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from healthbank.contracts.principal import principal_from_json
from healthbank.records import from_micros, to_micros
from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.coalesced import CoalescedWrites
from services.ingest.model import DirectoryEntry
from services.ingest.store import (
    WriteAudit,
    directory_json,
    write_audit_from_json,
    write_audit_json,
)

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS write_audits (
        hospital_id text, message_id text, content_hash text,
        event_id text, occur_us bigint, actor text, appended boolean,
        PRIMARY KEY ((hospital_id, message_id, content_hash))
    );
    CREATE TABLE IF NOT EXISTS pending_audits (
        minute bigint, shard int, occur_us bigint,
        hospital_id text, message_id text, content_hash text,
        PRIMARY KEY ((minute, shard), occur_us, hospital_id, message_id, content_hash)
    ) WITH gc_grace_seconds = 3600;
    CREATE TABLE IF NOT EXISTS pending_minutes (
        shard int, minute bigint,
        PRIMARY KEY ((shard), minute)
    ) WITH gc_grace_seconds = 3600
    """,
    """
    CREATE TABLE IF NOT EXISTS directory_entries (
        hospital_id text, resource_type text, resource_id text, resource text, updated_us bigint,
        PRIMARY KEY ((hospital_id), resource_type, resource_id)
    )
    """,
    """
    ALTER TABLE pending_audits ADD IF NOT EXISTS audit text;
    CREATE TABLE IF NOT EXISTS appended_audits (
        hospital_id text, message_id text, content_hash text, event_id text,
        PRIMARY KEY ((hospital_id, message_id, content_hash))
    )
    """,
]

PENDING_SHARDS = 8
_MINUTE_US = 60_000_000
# Point reads of one scan run at most this many at once.
_READ_CONCURRENCY = 32

_KEY = "hospital_id = ? AND message_id = ? AND content_hash = ?"
_READ_LEGACY = f"SELECT * FROM write_audits WHERE {_KEY}"
_READ_APPENDED = f"SELECT event_id FROM appended_audits WHERE {_KEY}"
_MARK = (
    "INSERT INTO appended_audits (hospital_id, message_id, content_hash, event_id)"
    " VALUES (?, ?, ?, ?)"
)
_INDEX = (
    "INSERT INTO pending_audits (minute, shard, occur_us, hospital_id, message_id, content_hash,"
    " audit) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UNINDEX = f"DELETE FROM pending_audits WHERE minute = ? AND shard = ? AND occur_us = ? AND {_KEY}"
_PUT_DIRECTORY = (
    "INSERT INTO directory_entries (hospital_id, resource_type, resource_id, resource,"
    " updated_us) VALUES (?, ?, ?, ?, ?)"
)
_LIST_DIRECTORY = (
    "SELECT resource_type, resource_id, resource FROM directory_entries WHERE hospital_id = ?"
)
_MARK_MINUTE = "INSERT INTO pending_minutes (shard, minute) VALUES (?, ?)"
_UNMARK_MINUTE = "DELETE FROM pending_minutes WHERE shard = ? AND minute = ?"
_MINUTES = "SELECT minute FROM pending_minutes WHERE shard = ? AND minute <= ?"
_PENDING = (
    "SELECT occur_us, hospital_id, message_id, content_hash, audit FROM pending_audits"
    " WHERE minute = ? AND shard = ? AND occur_us < ? LIMIT ?"
)


class CassandraIngestStore:
    """IngestStore on Cassandra; see the module docstring for the tables and write order."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database
        # Concurrent submissions' notes leave together (ADR 53).
        self._writes = CoalescedWrites(database)

    async def open(self) -> CassandraIngestStore:
        """Connect (``healthbank migrate`` creates the schema); returns self."""
        await self._db.open()
        return self

    async def note_pending(self, audit: WriteAudit) -> None:
        """See IngestStore.note_pending (when it returns, the note row and its minute's
        marker are both written; after an error the submission stops before its commit, so
        a note without its marker is of a message not stored by this attempt)."""
        key = _key(audit)
        occur_us = to_micros(audit.occur_time)
        minute, shard = _minute(occur_us), _shard(key)
        await self._writes.apply(
            [
                (_INDEX, (minute, shard, occur_us, *key, write_audit_json(audit))),
                (_MARK_MINUTE, (shard, minute)),
            ]
        )

    async def put_directory(
        self, hospital_id: str, entries: Sequence[DirectoryEntry], now: datetime
    ) -> None:
        """See IngestStore.put_directory (an upsert per entry: the latest version wins)."""
        updated_us = to_micros(now)
        for start in range(0, len(entries), _READ_CONCURRENCY):
            await asyncio.gather(
                *(
                    self._db.execute(
                        _PUT_DIRECTORY,
                        (
                            hospital_id,
                            entry.resource_type,
                            entry.resource_id,
                            directory_json(entry),
                            updated_us,
                        ),
                    )
                    for entry in entries[start : start + _READ_CONCURRENCY]
                )
            )

    async def list_directory(self, hospital_id: str) -> list[DirectoryEntry]:
        """See IngestStore.list_directory."""
        rows = await self._db.execute(_LIST_DIRECTORY, (hospital_id,))
        return [
            DirectoryEntry(row.resource_type, row.resource_id, json.loads(row.resource))
            for row in rows
        ]

    async def mark_audit_appended(self, audit: WriteAudit) -> None:
        """See IngestStore.mark_audit_appended (after an error, either may be written: the
        append is idempotent by event id, so appending again is harmless)."""
        key = _key(audit)
        occur_us = to_micros(audit.occur_time)
        await self._db.execute_batch(
            [
                (_MARK, (*key, audit.event_id)),
                (_UNINDEX, (_minute(occur_us), _shard(key), occur_us, *key)),
            ]
        )

    async def is_audit_appended(self, hospital_id: str, message_id: str, content_hash: str) -> bool:
        """See IngestStore.is_audit_appended."""
        return await self._appended((hospital_id, message_id, content_hash))

    async def list_unappended_audits(self, before: datetime, limit: int) -> list[WriteAudit]:
        """See IngestStore.list_unappended_audits."""
        if limit <= 0:
            return []
        before_us = to_micros(before)
        shards_by_minute: dict[int, list[int]] = {}
        markers = await asyncio.gather(
            *(
                self._db.execute(_MINUTES, (shard, _minute(before_us - 1)))
                for shard in range(PENDING_SHARDS)
            )
        )
        for shard, rows in enumerate(markers):
            for row in rows:
                shards_by_minute.setdefault(row.minute, []).append(shard)

        candidates: list[Any] = []
        for minute in sorted(shards_by_minute):
            shards = shards_by_minute[minute]
            found = await asyncio.gather(
                *(self._db.execute(_PENDING, (minute, s, before_us, limit)) for s in shards)
            )
            closed = (minute + 1) * _MINUTE_US <= before_us
            empty = [s for s, rows in zip(shards, found, strict=True) if not rows and closed]
            await self._db.execute_many(_UNMARK_MINUTE, [(s, minute) for s in empty])
            candidates.extend(row for rows in found for row in rows)
            # Later minutes hold only later reservations.
            if len(candidates) >= limit:
                break
        candidates.sort(key=lambda r: (r.occur_us, r.hospital_id, r.message_id, r.content_hash))
        candidates = candidates[:limit]

        reads = asyncio.Semaphore(_READ_CONCURRENCY)

        async def noted(pending: Any) -> WriteAudit | None:
            """The note's event, or None if the note is stale."""
            key = (pending.hospital_id, pending.message_id, pending.content_hash)
            async with reads:
                if await self._appended(key):
                    return None
                if pending.audit is not None:
                    return write_audit_from_json(pending.audit)
                # A note of the earlier protocol: its event is its reservation's.
                rows = await self._db.execute(_READ_LEGACY, key)
            if not rows or rows[0].occur_us != pending.occur_us:
                return None
            return _audit_from_row(rows[0])

        found_audits = await asyncio.gather(*(noted(pending) for pending in candidates))
        result: list[WriteAudit] = []
        stale: list[Any] = []
        for pending, found_audit in zip(candidates, found_audits, strict=True):
            if found_audit is None:
                stale.append(pending)
            else:
                result.append(found_audit)
        await self._db.execute_many(
            _UNINDEX,
            [
                (
                    _minute(p.occur_us),
                    _shard((p.hospital_id, p.message_id, p.content_hash)),
                    p.occur_us,
                    p.hospital_id,
                    p.message_id,
                    p.content_hash,
                )
                for p in stale
            ],
        )
        return result

    async def discard_audit(self, audit: WriteAudit) -> None:
        """See IngestStore.discard_audit."""
        occur_us = to_micros(audit.occur_time)
        key = _key(audit)
        await self._writes.apply([(_UNINDEX, (_minute(occur_us), _shard(key), occur_us, *key))])

    async def check(self) -> None:
        """See IngestStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See IngestStore.close."""
        await self._db.close()

    async def _appended(self, key: tuple[str, str, str]) -> bool:
        if await self._db.execute(_READ_APPENDED, key):
            return True
        # Marked appended under the earlier protocol?
        legacy = await self._db.execute(_READ_LEGACY, key)
        return bool(legacy and legacy[0].appended)


def _key(audit: WriteAudit) -> tuple[str, str, str]:
    return (audit.hospital_id, audit.message_id, audit.content_hash)


def _minute(occur_us: int) -> int:
    return occur_us // _MINUTE_US


def _shard(key: Sequence[str]) -> int:
    """A stable shard of a message content (the same in every process)."""
    return zlib.crc32("\x1f".join(key).encode()) % PENDING_SHARDS


def _audit_from_row(row: Any) -> WriteAudit:
    return WriteAudit(
        hospital_id=row.hospital_id,
        message_id=row.message_id,
        content_hash=row.content_hash,
        event_id=row.event_id,
        occur_time=from_micros(row.occur_us),
        actor=principal_from_json(row.actor),
    )
