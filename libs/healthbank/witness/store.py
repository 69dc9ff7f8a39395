"""The witness's own store: one SQLite file with the heads it co-signed and its alarms."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from healthbank.storage.sqlite import SqliteDatabase

_MIGRATIONS = [
    """
    CREATE TABLE heads (
        tree_size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        log_signature BLOB NOT NULL,
        log_public_key BLOB NOT NULL,
        cosignature BLOB NOT NULL,
        witnessed_ms INTEGER NOT NULL
    );
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finding TEXT NOT NULL,
        tree_size INTEGER NOT NULL,
        root_hash BLOB NOT NULL,
        raised_ms INTEGER NOT NULL
    )
    """,
]


@dataclass(frozen=True)
class CosignedHead:
    """A log head the witness checked and co-signed."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    log_signature: bytes
    log_public_key: bytes
    cosignature: bytes
    witnessed_ms: int


@dataclass(frozen=True)
class Alarm:
    """An alarm the witness raised about a head (``finding`` is a judge.Finding value)."""

    finding: str
    tree_size: int
    root_hash: bytes
    raised_ms: int


class WitnessStore:
    """Co-signed heads (one per tree size, the first seen) and alarms, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _MIGRATIONS)

    async def open(self) -> WitnessStore:
        """Open the file and migrate; returns self."""
        await self._db.open()
        return self

    async def latest(self) -> CosignedHead | None:
        """The largest head held, if any."""
        row = await self._db.read(
            lambda c: c.execute("SELECT * FROM heads ORDER BY tree_size DESC LIMIT 1").fetchone()
        )
        return None if row is None else _head(row)

    async def heads(self) -> list[CosignedHead]:
        """Every head held, by tree size."""
        rows = await self._db.read(
            lambda c: c.execute("SELECT * FROM heads ORDER BY tree_size").fetchall()
        )
        return [_head(row) for row in rows]

    async def add_head(self, head: CosignedHead) -> None:
        """Keep ``head`` (a head of a size already held is not replaced)."""
        await self._db.execute(
            "INSERT OR IGNORE INTO heads (tree_size, root_hash, timestamp_ms, log_signature,"
            " log_public_key, cosignature, witnessed_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                head.tree_size,
                head.root_hash,
                head.timestamp_ms,
                head.log_signature,
                head.log_public_key,
                head.cosignature,
                head.witnessed_ms,
            ),
        )

    async def add_alarm(self, alarm: Alarm) -> None:
        """Record ``alarm``."""
        await self._db.execute(
            "INSERT INTO alarms (finding, tree_size, root_hash, raised_ms) VALUES (?, ?, ?, ?)",
            (alarm.finding, alarm.tree_size, alarm.root_hash, alarm.raised_ms),
        )

    async def alarms(self) -> list[Alarm]:
        """Every alarm raised, oldest first."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT finding, tree_size, root_hash, raised_ms FROM alarms ORDER BY id"
            ).fetchall()
        )
        return [
            Alarm(row["finding"], row["tree_size"], bytes(row["root_hash"]), row["raised_ms"])
            for row in rows
        ]

    async def close(self) -> None:
        """Close the file."""
        await self._db.close()


def _head(row: sqlite3.Row) -> CosignedHead:
    return CosignedHead(
        tree_size=row["tree_size"],
        root_hash=bytes(row["root_hash"]),
        timestamp_ms=row["timestamp_ms"],
        log_signature=bytes(row["log_signature"]),
        log_public_key=bytes(row["log_public_key"]),
        cosignature=bytes(row["cosignature"]),
        witnessed_ms=row["witnessed_ms"],
    )
