"""What the ingest service persists itself: the audit ledger of submitted messages, and the
hospitals' directories.

The records, emergency facts and idempotency receipts live in the shared hot record store
(``healthbank.records``). Ingest's own store holds one row per accepted message content
(hospital, message id, content hash) with the audit event that reports the write: its
event id, occur time and actor, and whether the audit service has it yet.

Why a store at all: the audit event is appended *after* the records commit (the audit log
must never name records that do not exist), so a crash or an unreachable audit service can
leave a committed message without its event. The row is written *before* the commit, which
gives two things:

- a retry of the message re-appends the very same event (same id, same occur time, same
  actor), so the audit service's idempotency by event id applies and the ledger shows one
  write per message, however often the hospital retried;
- a committed message whose event never made it is found and appended later by
  :meth:`services.ingest.pipeline.IngestPipeline.flush_pending_audits`, even if the hospital
  never retries.

:class:`IngestStore` is backend-neutral; ``reserve_audit`` is an insert-if-absent.
:class:`SqliteIngestStore` is the embedded implementation (``ingest.db`` in the data dir),
:class:`services.ingest.store_cassandra.CassandraIngestStore` the one at scale (keyspace
``<prefix>_ingest``). No patient data is stored here.

The directory (``directory_entries``): the FHIR Organization, Practitioner, Location ...
resources a hospital sent, one row per (hospital, resource type, resource id), the latest
version winning. They describe the hospital, not a patient, so they are kept here, unsealed,
and not in the record store (whose every row belongs to a person).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from healthbank.contracts.principal import Principal, principal_from_json, principal_to_json
from healthbank.records import from_micros, to_micros
from healthbank.storage.sqlite import SqliteDatabase
from services.ingest.model import DirectoryEntry


@dataclass(frozen=True)
class WriteAudit:
    """The audit event reporting that a message's records were written."""

    hospital_id: str
    message_id: str
    content_hash: str
    event_id: str
    occur_time: datetime
    actor: Principal
    appended: bool = False

    def appended_copy(self) -> WriteAudit:
        """This event, marked as appended to the audit log."""
        return replace(self, appended=True)


class IngestStore(Protocol):
    """Persistence of the ingest service's audit ledger."""

    async def reserve_audit(self, audit: WriteAudit) -> WriteAudit:
        """Store ``audit`` unless an event exists for its message content; return the stored one.

        The first reservation wins, so concurrent and retried submissions of one message
        agree on one event.
        """
        ...

    async def mark_audit_appended(
        self, hospital_id: str, message_id: str, content_hash: str
    ) -> None:
        """Record that the audit service holds the event."""
        ...

    async def list_unappended_audits(self, before: datetime, limit: int) -> list[WriteAudit]:
        """Events reserved before ``before`` and not yet appended, oldest first."""
        ...

    async def discard_audit(self, hospital_id: str, message_id: str, content_hash: str) -> None:
        """Forget a reservation whose message was never stored."""
        ...

    async def put_directory(
        self, hospital_id: str, entries: Sequence[DirectoryEntry], now: datetime
    ) -> None:
        """Store a hospital's directory resources, replacing earlier versions of each
        (type, id): a retried message writes the same rows again."""
        ...

    async def list_directory(self, hospital_id: str) -> list[DirectoryEntry]:
        """A hospital's directory, ordered by resource type and id."""
        ...

    async def check(self) -> None:
        """Return if the store is usable; raise if it is not."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE write_audits (
        hospital_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        event_id TEXT NOT NULL,
        occur_us INTEGER NOT NULL,
        actor TEXT NOT NULL,
        appended INTEGER NOT NULL,
        PRIMARY KEY (hospital_id, message_id, content_hash)
    ) WITHOUT ROWID;
    CREATE INDEX write_audits_pending ON write_audits (appended, occur_us)
    """,
    """
    CREATE TABLE directory_entries (
        hospital_id TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        resource TEXT NOT NULL,
        updated_us INTEGER NOT NULL,
        PRIMARY KEY (hospital_id, resource_type, resource_id)
    ) WITHOUT ROWID
    """,
]


class SqliteIngestStore:
    """IngestStore on an embedded SQLite file."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteIngestStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def reserve_audit(self, audit: WriteAudit) -> WriteAudit:
        """See IngestStore.reserve_audit."""

        def work(connection: sqlite3.Connection) -> WriteAudit:
            connection.execute(
                "INSERT INTO write_audits VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    audit.hospital_id,
                    audit.message_id,
                    audit.content_hash,
                    audit.event_id,
                    to_micros(audit.occur_time),
                    principal_to_json(audit.actor),
                    int(audit.appended),
                ),
            )
            row = connection.execute(
                "SELECT * FROM write_audits WHERE hospital_id = ? AND message_id = ?"
                " AND content_hash = ?",
                (audit.hospital_id, audit.message_id, audit.content_hash),
            ).fetchone()
            return _audit_from_row(row)

        return await self._db.write(work)

    async def mark_audit_appended(
        self, hospital_id: str, message_id: str, content_hash: str
    ) -> None:
        """See IngestStore.mark_audit_appended."""
        await self._db.write(
            lambda c: c.execute(
                "UPDATE write_audits SET appended = 1 WHERE hospital_id = ? AND message_id = ?"
                " AND content_hash = ?",
                (hospital_id, message_id, content_hash),
            )
        )

    async def list_unappended_audits(self, before: datetime, limit: int) -> list[WriteAudit]:
        """See IngestStore.list_unappended_audits."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT * FROM write_audits WHERE appended = 0 AND occur_us < ?"
                " ORDER BY occur_us LIMIT ?",
                (to_micros(before), limit),
            ).fetchall()
        )
        return [_audit_from_row(row) for row in rows]

    async def discard_audit(self, hospital_id: str, message_id: str, content_hash: str) -> None:
        """See IngestStore.discard_audit."""
        await self._db.write(
            lambda c: c.execute(
                "DELETE FROM write_audits WHERE hospital_id = ? AND message_id = ?"
                " AND content_hash = ? AND appended = 0",
                (hospital_id, message_id, content_hash),
            )
        )

    async def put_directory(
        self, hospital_id: str, entries: Sequence[DirectoryEntry], now: datetime
    ) -> None:
        """See IngestStore.put_directory."""
        rows = [
            (
                hospital_id,
                entry.resource_type,
                entry.resource_id,
                directory_json(entry),
                to_micros(now),
            )
            for entry in entries
        ]
        await self._db.write(
            lambda c: c.executemany(
                "INSERT INTO directory_entries VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET resource = excluded.resource, updated_us = excluded.updated_us",
                rows,
            )
        )

    async def list_directory(self, hospital_id: str) -> list[DirectoryEntry]:
        """See IngestStore.list_directory."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT resource_type, resource_id, resource FROM directory_entries"
                " WHERE hospital_id = ? ORDER BY resource_type, resource_id",
                (hospital_id,),
            ).fetchall()
        )
        return [DirectoryEntry(row[0], row[1], json.loads(row[2])) for row in rows]

    async def check(self) -> None:
        """See IngestStore.check."""
        await self._db.read(lambda c: c.execute("SELECT 1 FROM write_audits LIMIT 1").fetchall())

    async def close(self) -> None:
        """See IngestStore.close."""
        await self._db.close()


def directory_json(entry: DirectoryEntry) -> str:
    """A directory resource as stored: the JSON the hospital sent, compact."""
    return json.dumps(entry.resource, ensure_ascii=False, separators=(",", ":"))


def _audit_from_row(row: sqlite3.Row) -> WriteAudit:
    return WriteAudit(
        hospital_id=row["hospital_id"],
        message_id=row["message_id"],
        content_hash=row["content_hash"],
        event_id=row["event_id"],
        occur_time=from_micros(row["occur_us"]),
        actor=principal_from_json(row["actor"]),
        appended=bool(row["appended"]),
    )
