"""What the audit service persists: leaves, the Merkle node table, the tree size.

The store is the single writer of the log. Appends are group-committed
(:class:`healthbank.core.group_commit.GroupCommit`): the appends that arrive while one batch
is being committed become
the next batch (up to 1,000 events), which takes its leaf indexes in one step; each caller
returns only once its own event is durable and its index fixed. Readers see a batch's
leaves and Merkle nodes only whole, never a part of them, and every event answered before
they read:

- SQLite (embedded): one IMMEDIATE transaction per batch (SQLite allows one writer).
- Cassandra (:mod:`services.audit.store_cassandra`): the batch is written aside and one
  lightweight transaction on the sequencer row (``log_head``) makes it pending at the
  current size; its callers are answered then (ADR 37). Its leaves, nodes and lookups are
  written in unlogged batches and one more LWT advances the size, by its owner or by
  whoever reads the head next; nodes are immutable once written, so readers never see a
  half-built subtree at a published size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from healthbank.core.group_commit import GroupCommit
from healthbank.ledger import merkle
from healthbank.ledger.merkle import NodeKey
from healthbank.records import to_micros
from healthbank.storage.sqlite import SqliteDatabase


@dataclass(frozen=True)
class LeafEntry:
    """A leaf to append: the serialized event and what it is looked up by."""

    event_id: str
    person_token: str
    occur_time: datetime
    leaf: bytes
    leaf_hash: bytes


@dataclass(frozen=True)
class AppendOutcome:
    """Where an event landed; ``duplicate`` when its event_id was already in the log."""

    leaf_index: int
    leaf_hash: bytes
    leaf: bytes
    duplicate: bool


@dataclass(frozen=True)
class LoggedLeaf:
    """A stored leaf of one person's access history (occur time in UTC microseconds)."""

    leaf_index: int
    occur_us: int
    leaf: bytes


@dataclass(frozen=True)
class IndexedLeaf:
    """A stored leaf and its index in the log."""

    leaf_index: int
    leaf: bytes


@dataclass(frozen=True)
class PersonCursor:
    """Position in a person's newest-first history: list what sorts strictly after it.

    Integers (UTC microseconds, leaf index) so that a cursor round-trips exactly.
    """

    occur_us: int
    leaf_index: int


# Larger batches would hold one commit's callers back longer for little gain.
MAX_BATCH = 1000


class AuditStore(Protocol):
    """Persistence of the audit log. Implementations: SQLite (embedded) and Cassandra."""

    async def append(self, entry: LeafEntry) -> AppendOutcome:
        """Append ``entry`` as the next leaf, once per event_id.

        A repeated event_id writes nothing and returns the first append's outcome (with
        the leaf bytes stored then, so the caller can tell a retry from a conflict).
        """
        ...

    async def append_many(self, entries: Sequence[LeafEntry]) -> list[AppendOutcome]:
        """Append ``entries`` in order, as :meth:`append` each (an id repeated within
        ``entries`` is a duplicate of its first occurrence); one outcome per entry."""
        ...

    async def tree_size(self) -> int:
        """The number of leaves committed."""
        ...

    async def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """The stored hashes of the given complete subtrees (missing keys are left out)."""
        ...

    async def list_person_leaves(
        self, person_token: str, *, after: PersonCursor | None, limit: int
    ) -> list[LoggedLeaf]:
        """A person's leaves, newest occur_time first (ties: higher leaf index first)."""
        ...

    async def get_leaves(self, start: int, end: int, *, limit: int) -> list[IndexedLeaf]:
        """The stored leaves with ``start <= leaf_index < end``, ascending, at most ``limit``.

        Indexes with no stored leaf are left out (verifiers notice the gap).
        """
        ...

    async def check(self) -> None:
        """Raise unless the store answers now (health checks)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE tree_state (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        size INTEGER NOT NULL
    );
    INSERT INTO tree_state (id, size) VALUES (0, 0);
    CREATE TABLE leaves (
        leaf_index INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        person_token TEXT NOT NULL,
        occur_us INTEGER NOT NULL,
        leaf BLOB NOT NULL
    );
    CREATE INDEX leaves_by_person ON leaves (person_token, occur_us, leaf_index);
    CREATE TABLE nodes (
        level INTEGER NOT NULL,
        node_index INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, node_index)
    ) WITHOUT ROWID
    """,
]


class SqliteAuditStore:
    """AuditStore on an embedded SQLite file (``audit.db`` in the data dir)."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)
        self._group: GroupCommit[LeafEntry, AppendOutcome] = GroupCommit(
            self._commit_batch, max_batch=MAX_BATCH
        )

    async def open(self) -> SqliteAuditStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def append(self, entry: LeafEntry) -> AppendOutcome:
        """See AuditStore.append."""
        return (await self._group.append([entry]))[0]

    async def append_many(self, entries: Sequence[LeafEntry]) -> list[AppendOutcome]:
        """See AuditStore.append_many."""
        return await self._group.append(entries)

    async def _commit_batch(self, entries: list[LeafEntry]) -> list[AppendOutcome]:
        def work(connection: sqlite3.Connection) -> list[AppendOutcome]:
            return [_append_one(connection, entry) for entry in entries]

        return await self._db.write(work)

    async def tree_size(self) -> int:
        """See AuditStore.tree_size."""
        return await self._db.read(_size)

    async def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """See AuditStore.get_nodes."""
        wanted = list(keys)
        return await self._db.read(lambda c: _nodes(c, wanted))

    async def list_person_leaves(
        self, person_token: str, *, after: PersonCursor | None, limit: int
    ) -> list[LoggedLeaf]:
        """See AuditStore.list_person_leaves."""
        sql = "SELECT leaf_index, occur_us, leaf FROM leaves WHERE person_token = ?"
        params: list[object] = [person_token]
        if after is not None:
            sql += " AND (occur_us, leaf_index) < (?, ?)"
            params.extend([after.occur_us, after.leaf_index])
        sql += " ORDER BY occur_us DESC, leaf_index DESC LIMIT ?"
        params.append(limit)
        rows = await self._db.read(lambda c: c.execute(sql, params).fetchall())
        return [
            LoggedLeaf(
                leaf_index=row["leaf_index"],
                occur_us=row["occur_us"],
                leaf=bytes(row["leaf"]),
            )
            for row in rows
        ]

    async def get_leaves(self, start: int, end: int, *, limit: int) -> list[IndexedLeaf]:
        """See AuditStore.get_leaves."""
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT leaf_index, leaf FROM leaves WHERE leaf_index >= ? AND leaf_index < ?"
                " ORDER BY leaf_index LIMIT ?",
                (start, end, limit),
            ).fetchall()
        )
        return [IndexedLeaf(leaf_index=row["leaf_index"], leaf=bytes(row["leaf"])) for row in rows]

    async def check(self) -> None:
        """See AuditStore.check."""
        await self._db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See AuditStore.close."""
        await self._db.close()


def _append_one(connection: sqlite3.Connection, entry: LeafEntry) -> AppendOutcome:
    """Append one entry inside the batch's transaction (a repeated id returns the first)."""
    existing = connection.execute(
        "SELECT leaf_index, leaf FROM leaves WHERE event_id = ?", (entry.event_id,)
    ).fetchone()
    if existing is not None:
        stored_leaf = bytes(existing["leaf"])
        return AppendOutcome(
            leaf_index=existing["leaf_index"],
            leaf_hash=merkle.leaf_hash(stored_leaf),
            leaf=stored_leaf,
            duplicate=True,
        )
    index = _size(connection)
    siblings = _nodes(connection, merkle.append_keys(index))
    new_nodes = merkle.append_nodes(index, entry.leaf_hash, siblings)
    connection.execute(
        "INSERT INTO leaves (leaf_index, event_id, person_token, occur_us, leaf)"
        " VALUES (?, ?, ?, ?, ?)",
        (index, entry.event_id, entry.person_token, to_micros(entry.occur_time), entry.leaf),
    )
    connection.executemany(
        "INSERT INTO nodes (level, node_index, hash) VALUES (?, ?, ?)",
        [(level, node_index, value) for (level, node_index), value in new_nodes],
    )
    connection.execute("UPDATE tree_state SET size = ? WHERE id = 0", (index + 1,))
    return AppendOutcome(
        leaf_index=index, leaf_hash=entry.leaf_hash, leaf=entry.leaf, duplicate=False
    )


def _size(connection: sqlite3.Connection) -> int:
    size: int = connection.execute("SELECT size FROM tree_state WHERE id = 0").fetchone()["size"]
    return size


def _nodes(connection: sqlite3.Connection, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
    # Point lookups on the primary key: O(log n) of them per proof or append.
    found: dict[NodeKey, bytes] = {}
    for level, node_index in keys:
        row = connection.execute(
            "SELECT hash FROM nodes WHERE level = ? AND node_index = ?", (level, node_index)
        ).fetchone()
        if row is not None:
            found[(level, node_index)] = bytes(row["hash"])
    return found
