"""What the ingest service persists itself: which submitted messages may still owe their
audit event, and the hospitals' directories.

The records, emergency facts and idempotency receipts live in the shared hot record store
(``healthbank.records``). A message's write audit event (its id, occur time and actor) is
reserved *in its receipt claim* (``MessageReceipt.claim_note``, see ADR 0019): the first
claim's event is the message's event, whoever commits it, so a retry re-appends the very
same event and the audit service's idempotency by event id leaves one write per message.

Why a store at all: the audit event is appended *after* the records commit (the audit log
must never name records that do not exist), so a crash or an unreachable audit service can
leave a committed message without its event. Before its claim, an attempt notes its message
here as pending (:meth:`IngestStore.note_pending`, a plain write); after the append it marks
it appended. :meth:`services.ingest.pipeline.IngestPipeline.flush_pending_audits` appends the
event of a committed message noted but never marked, even if the hospital never retries,
taking the event from the receipt (the note may be a losing attempt's).

:class:`IngestStore` is backend-neutral and needs no lightweight transaction: the receipt
claim decides everything. :class:`SqliteIngestStore` is the embedded implementation
(``ingest.db`` in the data dir), :class:`services.ingest.store_cassandra.CassandraIngestStore`
the one at scale (keyspace ``<prefix>_ingest``). No patient data is stored here.

The directory (``directory_entries``): the FHIR Organization, Practitioner, Location ...
resources a hospital sent, one row per (hospital, resource type, resource id), the latest
version winning. They describe the hospital, not a patient, so they are kept here, unsealed,
and not in the record store (whose every row belongs to a person).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
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


class IngestStore(Protocol):
    """Persistence of the ingest service's pending audit events and directories."""

    async def note_pending(self, audit: WriteAudit) -> None:
        """Note that ``audit``'s message may be committed without its event appended.

        Idempotent; a message noted by several attempts may keep any of their notes.
        """
        ...

    async def mark_audit_appended(self, audit: WriteAudit) -> None:
        """Record that the audit service holds the event of ``audit``'s message."""
        ...

    async def is_audit_appended(self, hospital_id: str, message_id: str, content_hash: str) -> bool:
        """Whether the event of this message content was marked appended."""
        ...

    async def list_unappended_audits(self, before: datetime, limit: int) -> list[WriteAudit]:
        """Notes made before ``before`` whose message is not marked appended, oldest first."""
        ...

    async def discard_audit(self, audit: WriteAudit) -> None:
        """Forget the note of a message that was never stored (never one marked appended)."""
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


_SQLITE_KEY = "hospital_id = ? AND message_id = ? AND content_hash = ?"


class SqliteIngestStore:
    """IngestStore on an embedded SQLite file."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteIngestStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def note_pending(self, audit: WriteAudit) -> None:
        """See IngestStore.note_pending."""
        await self._db.execute(
            "INSERT INTO write_audits VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            _audit_row(audit),
        )

    async def mark_audit_appended(self, audit: WriteAudit) -> None:
        """See IngestStore.mark_audit_appended."""
        await self._db.execute(
            "INSERT INTO write_audits VALUES (?, ?, ?, ?, ?, ?, 1)"
            " ON CONFLICT DO UPDATE SET appended = 1",
            _audit_row(audit),
        )

    async def is_audit_appended(self, hospital_id: str, message_id: str, content_hash: str) -> bool:
        """See IngestStore.is_audit_appended."""
        row = await self._db.read(
            lambda c: c.execute(
                f"SELECT appended FROM write_audits WHERE {_SQLITE_KEY}",
                (hospital_id, message_id, content_hash),
            ).fetchone()
        )
        return row is not None and bool(row["appended"])

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

    async def discard_audit(self, audit: WriteAudit) -> None:
        """See IngestStore.discard_audit."""
        await self._db.execute(
            f"DELETE FROM write_audits WHERE {_SQLITE_KEY} AND appended = 0",
            (audit.hospital_id, audit.message_id, audit.content_hash),
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
        await self._db.execute_many(
            "INSERT INTO directory_entries VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
            " SET resource = excluded.resource, updated_us = excluded.updated_us",
            rows,
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


def _audit_row(audit: WriteAudit) -> tuple[object, ...]:
    """``audit``'s columns of ``write_audits`` up to ``appended``."""
    return (
        audit.hospital_id,
        audit.message_id,
        audit.content_hash,
        audit.event_id,
        to_micros(audit.occur_time),
        principal_to_json(audit.actor),
    )


def _audit_from_row(row: sqlite3.Row) -> WriteAudit:
    return WriteAudit(
        hospital_id=row["hospital_id"],
        message_id=row["message_id"],
        content_hash=row["content_hash"],
        event_id=row["event_id"],
        occur_time=from_micros(row["occur_us"]),
        actor=principal_from_json(row["actor"]),
    )


def write_audit_json(audit: WriteAudit) -> str:
    """A reserved audit event as its receipt claim carries it (and Cassandra's notes)."""
    return json.dumps(
        {
            "hospital_id": audit.hospital_id,
            "message_id": audit.message_id,
            "content_hash": audit.content_hash,
            "event_id": audit.event_id,
            "occur_us": to_micros(audit.occur_time),
            "actor": principal_to_json(audit.actor),
        },
        separators=(",", ":"),
    )


def write_audit_from_json(text: str) -> WriteAudit:
    """The inverse of :func:`write_audit_json`."""
    fields = json.loads(text)
    return WriteAudit(
        hospital_id=fields["hospital_id"],
        message_id=fields["message_id"],
        content_hash=fields["content_hash"],
        event_id=fields["event_id"],
        occur_time=from_micros(fields["occur_us"]),
        actor=principal_from_json(fields["actor"]),
    )
