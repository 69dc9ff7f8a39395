"""RecordStore on an embedded SQLite file (``records.db`` in the data dir).

Besides receipts, records and facts: ``surveillance_cases`` (one row per ILI case: local
day, district, age band, person token; ADR 30), written in the message's transaction.
``code_day_counts`` (the old forecast's counters per code and UTC day) is no longer written
or read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from healthbank.core.ids import new_ulid
from healthbank.records.model import (
    EmergencyFact,
    MessageIdConflict,
    MessageReceipt,
    PutOutcome,
    StoredRecord,
    SurveillanceCase,
    from_micros,
    to_micros,
)
from healthbank.storage.sqlite import SqliteDatabase

_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE receipts (
        hospital_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        person_token TEXT NOT NULL,
        record_ids TEXT NOT NULL,
        PRIMARY KEY (hospital_id, message_id)
    );
    CREATE TABLE records (
        person_token TEXT NOT NULL,
        record_id TEXT NOT NULL,
        source_hospital TEXT NOT NULL,
        source_format INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        source_version TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        category INTEGER NOT NULL,
        code_system TEXT NOT NULL,
        code TEXT NOT NULL,
        code_display TEXT NOT NULL,
        effective_us INTEGER NOT NULL,
        status TEXT NOT NULL,
        sealed_payload BLOB NOT NULL,
        blob_name TEXT NOT NULL,
        PRIMARY KEY (person_token, effective_us, record_id)
    );
    CREATE INDEX records_by_effective ON records (effective_us);
    CREATE TABLE facts (
        person_token TEXT NOT NULL,
        record_id TEXT NOT NULL,
        category INTEGER NOT NULL,
        sealed_fact BLOB NOT NULL,
        PRIMARY KEY (person_token, record_id)
    );
    CREATE TABLE code_day_counts (
        code_system TEXT NOT NULL,
        code TEXT NOT NULL,
        day TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (code_system, code, day)
    )
    """,
    "ALTER TABLE receipts ADD COLUMN claim_note TEXT NOT NULL DEFAULT ''",
    """
    CREATE TABLE facts_versions (
        person_token TEXT NOT NULL PRIMARY KEY,
        version TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE surveillance_cases (
        day TEXT NOT NULL,
        district TEXT NOT NULL,
        age_band TEXT NOT NULL,
        person_token TEXT NOT NULL,
        PRIMARY KEY (day, district, age_band, person_token)
    )
    """,
]


class SqliteRecordStore:
    """RecordStore on an embedded SQLite file (``records.db`` in the data dir)."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteRecordStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def put_message(
        self,
        receipt: MessageReceipt,
        records: Sequence[StoredRecord],
        facts: Sequence[EmergencyFact],
        cases: Sequence[SurveillanceCase] = (),
    ) -> PutOutcome:
        """See RecordStore.put_message."""

        def work(connection: sqlite3.Connection) -> PutOutcome:
            existing = _receipt_row(connection, receipt.hospital_id, receipt.message_id)
            if existing is not None:
                if existing.content_hash != receipt.content_hash:
                    raise MessageIdConflict(receipt.message_id)
                return PutOutcome(duplicate=True, receipt=existing)
            connection.execute(
                "INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?)",
                (
                    receipt.hospital_id,
                    receipt.message_id,
                    receipt.content_hash,
                    receipt.person_token,
                    ",".join(receipt.record_ids),
                    receipt.claim_note,
                ),
            )
            connection.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_record_row(record) for record in records],
            )
            connection.executemany(
                "INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?)",
                [(f.person_token, f.record_id, f.category, f.sealed_fact) for f in facts],
            )
            connection.executemany(
                "INSERT OR REPLACE INTO facts_versions VALUES (?, ?)",
                [(person, new_ulid()) for person in sorted({f.person_token for f in facts})],
            )
            connection.executemany(
                "INSERT OR IGNORE INTO surveillance_cases VALUES (?, ?, ?, ?)",
                [(c.day.isoformat(), c.district, c.age_band, c.person_token) for c in cases],
            )
            return PutOutcome(duplicate=False, receipt=receipt)

        return await self._db.write(work)

    async def get_receipt(
        self, hospital_id: str, message_id: str, *, linearizable: bool = True
    ) -> MessageReceipt | None:
        """See RecordStore.get_receipt (every read is linearizable here)."""
        return await self._db.read(lambda c: _receipt_row(c, hospital_id, message_id))

    async def list_records(
        self,
        person_token: str,
        *,
        categories: Sequence[int] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[StoredRecord]:
        """See RecordStore.list_records."""
        sql = "SELECT * FROM records WHERE person_token = ? AND effective_us >= ?"
        params: list[object] = [person_token, to_micros(start) if start else -(2**62)]
        if end is not None:
            sql += " AND effective_us < ?"
            params.append(to_micros(end))
        if categories:
            sql += f" AND category IN ({','.join('?' * len(categories))})"
            params.extend(categories)
        sql += " ORDER BY effective_us, record_id"
        rows = await self._db.read(lambda c: c.execute(sql, params).fetchall())
        return [_record_from_row(row) for row in rows]

    async def facts_version(self, person_token: str) -> str | None:
        """See RecordStore.facts_version (set in the message's transaction)."""
        row = await self._db.read(
            lambda c: c.execute(
                "SELECT version FROM facts_versions WHERE person_token = ?", (person_token,)
            ).fetchone()
        )
        return None if row is None else str(row["version"])

    async def list_facts(self, person_token: str) -> list[EmergencyFact]:
        """See RecordStore.list_facts."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT * FROM facts WHERE person_token = ? ORDER BY record_id", (person_token,)
            ).fetchall()
        )
        return [
            EmergencyFact(
                row["person_token"], row["record_id"], row["category"], row["sealed_fact"]
            )
            for row in rows
        ]

    async def list_effective_before(self, cutoff: datetime, limit: int) -> list[StoredRecord]:
        """See RecordStore.list_effective_before."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT * FROM records WHERE effective_us < ?"
                " ORDER BY effective_us, record_id LIMIT ?",
                (to_micros(cutoff), limit),
            ).fetchall()
        )
        return [_record_from_row(row) for row in rows]

    async def delete_records(self, records: Sequence[StoredRecord]) -> None:
        """See RecordStore.delete_records."""
        await self._db.execute_many(
            "DELETE FROM records WHERE person_token = ? AND effective_us = ? AND record_id = ?",
            [(r.person_token, to_micros(r.effective_time), r.record_id) for r in records],
        )

    async def surveillance_counts(self, start: date, end: date) -> dict[tuple[date, str], int]:
        """See RecordStore.surveillance_counts."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT day, district, COUNT(DISTINCT person_token) AS n FROM surveillance_cases"
                " WHERE day >= ? AND day < ? GROUP BY day, district",
                (start.isoformat(), end.isoformat()),
            ).fetchall()
        )
        return {(date.fromisoformat(row["day"]), row["district"]): int(row["n"]) for row in rows}

    async def check(self) -> None:
        """See RecordStore.check."""
        await self._db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See RecordStore.close."""
        await self._db.close()


def _receipt_row(
    connection: sqlite3.Connection, hospital_id: str, message_id: str
) -> MessageReceipt | None:
    row = connection.execute(
        "SELECT * FROM receipts WHERE hospital_id = ? AND message_id = ?",
        (hospital_id, message_id),
    ).fetchone()
    if row is None:
        return None
    return MessageReceipt(
        hospital_id=row["hospital_id"],
        message_id=row["message_id"],
        content_hash=row["content_hash"],
        person_token=row["person_token"],
        record_ids=tuple(filter(None, row["record_ids"].split(","))),
        claim_note=row["claim_note"],
    )


def _record_row(record: StoredRecord) -> tuple[object, ...]:
    return (
        record.person_token,
        record.record_id,
        record.source_hospital,
        record.source_format,
        record.message_id,
        record.source_version,
        record.content_hash,
        record.category,
        record.code_system,
        record.code,
        record.code_display,
        to_micros(record.effective_time),
        record.status,
        record.sealed_payload,
        record.blob_name,
    )


def _record_from_row(row: sqlite3.Row) -> StoredRecord:
    return StoredRecord(
        record_id=row["record_id"],
        person_token=row["person_token"],
        source_hospital=row["source_hospital"],
        source_format=row["source_format"],
        message_id=row["message_id"],
        source_version=row["source_version"],
        content_hash=row["content_hash"],
        category=row["category"],
        code_system=row["code_system"],
        code=row["code"],
        code_display=row["code_display"],
        effective_time=from_micros(row["effective_us"]),
        status=row["status"],
        sealed_payload=row["sealed_payload"],
        blob_name=row["blob_name"],
    )
