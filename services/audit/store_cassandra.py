"""AuditStore on Apache Cassandra (keyspace ``<prefix>_audit``).

Tables, shaped by their queries:

- ``log_head``: one row (``id = 0``): the committed tree ``size`` and the ``pending_*``
  leaf being appended at index ``size`` (or none). Written only with lightweight
  transactions; it is the log's sequencer.
- ``events_by_id``: the idempotency key. ``INSERT ... IF NOT EXISTS`` claims an event id
  and keeps the first leaf bytes; ``leaf_index`` is filled in once the leaf is placed.
- ``nodes``: the Merkle node table, one tiny partition per complete subtree
  ``(level, node_index)``; immutable once written, read by point lookups.
- ``leaves``: the leaves in log order, partitioned in buckets of 4096 indexes (for
  verifiers and rebuilds that walk the log).
- ``leaves_by_person`` (newest first) partitioned by ``(person_token, year)`` so no
  partition grows without bound, and ``person_years`` listing a person's partitions.

Appending an event is a small state machine on ``log_head``, safe for any number of
processes and for a crash at any step:

1. claim the event id (LWT ``IF NOT EXISTS``); a retry finds the first leaf (and its
   index once placed);
2. with the head at ``(size = n, no pending)``: check that the event has no index yet,
   then ``UPDATE log_head SET pending_* = event IF size = n AND pending_event = null``;
3. whoever sees a pending leaf at ``n`` (its owner, or any later appender helping after
   a crash) writes the leaf, its person rows, its new Merkle nodes and the event's
   ``leaf_index``. All of these are determined by the pending leaf and the committed
   nodes, so helpers write identical values;
4. ``UPDATE log_head SET size = n + 1, pending_* = null IF size = n AND pending_event = e``.

The head only moves ``(n, none) -> (n, e) -> (n + 1, none)``, so an event is placed at most
once and indexes are dense. Readers read ``size`` with a serial read and see only nodes
written before it advanced, never a half-built subtree. Within one process appends queue
on a lock, so the LWT contention is one appender per process.

A claim whose process died before step 2 is logged by the event's retry (with the first
leaf bytes); the audit client retries until it gets an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from healthbank.ledger import merkle
from healthbank.ledger.merkle import NodeKey
from healthbank.records import from_micros, to_micros
from healthbank.storage.cassandra import CassandraDatabase
from services.audit.store import (
    AppendOutcome,
    IndexedLeaf,
    LeafEntry,
    LoggedLeaf,
    PersonCursor,
)

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS log_head (
        id int PRIMARY KEY,
        size bigint,
        pending_event text,
        pending_leaf blob,
        pending_person text,
        pending_occur_us bigint
    );
    CREATE TABLE IF NOT EXISTS events_by_id (
        event_id text PRIMARY KEY,
        leaf blob,
        person_token text,
        occur_us bigint,
        leaf_index bigint
    );
    CREATE TABLE IF NOT EXISTS nodes (
        level int, node_index bigint, hash blob,
        PRIMARY KEY ((level, node_index))
    );
    CREATE TABLE IF NOT EXISTS leaves (
        bucket bigint, leaf_index bigint, event_id text, leaf blob,
        PRIMARY KEY ((bucket), leaf_index)
    );
    CREATE TABLE IF NOT EXISTS leaves_by_person (
        person_token text, year int, occur_us bigint, leaf_index bigint, leaf blob,
        PRIMARY KEY ((person_token, year), occur_us, leaf_index)
    ) WITH CLUSTERING ORDER BY (occur_us DESC, leaf_index DESC);
    CREATE TABLE IF NOT EXISTS person_years (
        person_token text, year int,
        PRIMARY KEY ((person_token), year)
    ) WITH CLUSTERING ORDER BY (year DESC)
    """,
]

_HEAD = 0
_LEAF_BUCKET_BITS = 12
# Serial reads follow the locality of the LWTs (the driver's serial level is LOCAL_SERIAL).
_SERIAL = "LOCAL_SERIAL"

_READ_HEAD = (
    "SELECT size, pending_event, pending_leaf, pending_person, pending_occur_us"
    " FROM log_head WHERE id = ?"
)
_SET_PENDING = (
    "UPDATE log_head SET pending_event = ?, pending_leaf = ?, pending_person = ?,"
    " pending_occur_us = ? WHERE id = ? IF size = ? AND pending_event = null"
)
_ADVANCE = (
    "UPDATE log_head SET size = ?, pending_event = null, pending_leaf = null,"
    " pending_person = null, pending_occur_us = null WHERE id = ? IF size = ? AND pending_event = ?"
)


@dataclass(frozen=True)
class _Leaf:
    """A leaf on its way into the log (from a claim or from the head's pending columns)."""

    event_id: str
    leaf: bytes
    person_token: str
    occur_us: int


@dataclass(frozen=True)
class _Head:
    """The sequencer row: committed size and the leaf being placed at that index, if any."""

    size: int
    pending: _Leaf | None


class CassandraAuditStore:
    """AuditStore on Cassandra; see the module docstring for the append protocol."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database
        # One appender per process at a time: appends are serial anyway, and this keeps
        # the LWT contention on the head row down to one contender per process.
        self._sequencing = asyncio.Lock()
        # The last head this process saw; a stale one only costs a failed LWT and a re-read.
        self._head: _Head | None = None

    async def open(self) -> CassandraAuditStore:
        """Connect, migrate and create the head row of an empty log; returns self."""
        await self._db.open()
        try:
            await self._db.execute(
                "INSERT INTO log_head (id, size) VALUES (?, 0) IF NOT EXISTS", (_HEAD,)
            )
        except BaseException:
            await self._db.close()
            raise
        return self

    async def append(self, entry: LeafEntry) -> AppendOutcome:
        """See AuditStore.append."""
        claim = (
            await self._db.execute(
                "INSERT INTO events_by_id (event_id, leaf, person_token, occur_us)"
                " VALUES (?, ?, ?, ?) IF NOT EXISTS",
                (entry.event_id, entry.leaf, entry.person_token, to_micros(entry.occur_time)),
            )
        )[0]
        if claim.applied:
            leaf = _Leaf(
                entry.event_id, entry.leaf, entry.person_token, to_micros(entry.occur_time)
            )
        else:
            leaf = _Leaf(entry.event_id, claim.leaf, claim.person_token, claim.occur_us)
            if claim.leaf_index is not None:
                return _outcome(claim.leaf_index, leaf, duplicate=True)
            # Claimed by an attempt that is still running or died: place its leaf once.
        async with self._sequencing:
            index = await self._place(leaf)
        return _outcome(index, leaf, duplicate=not claim.applied)

    async def _place(self, leaf: _Leaf) -> int:
        """Drive the head until ``leaf`` has an index; returns that index."""
        head = self._head or await self._read_head()
        while True:
            if head.pending is not None:
                placed, index = head.pending, head.size
                await self._write_leaf(index, placed)
                advanced = await self._db.execute(
                    _ADVANCE, (index + 1, _HEAD, index, placed.event_id)
                )
                # Applied or not, the head only leaves (n, e) for (n + 1, none): e is at n.
                head = _Head(index + 1, None) if advanced[0].applied else await self._read_head()
                self._head = head
                if placed.event_id == leaf.event_id:
                    return index
                continue
            logged = await self._logged_index(leaf.event_id)
            if logged is not None:
                # Another attempt of this event placed it (the head moved past it already).
                return logged
            claimed = await self._db.execute(
                _SET_PENDING,
                (leaf.event_id, leaf.leaf, leaf.person_token, leaf.occur_us, _HEAD, head.size),
            )
            head = _Head(head.size, leaf) if claimed[0].applied else await self._read_head()
            self._head = head

    async def _read_head(self) -> _Head:
        rows = await self._db.execute(_READ_HEAD, (_HEAD,), consistency=_SERIAL)
        if not rows:
            return _Head(0, None)
        row = rows[0]
        pending = None
        if row.pending_event is not None:
            pending = _Leaf(
                row.pending_event, row.pending_leaf, row.pending_person, row.pending_occur_us
            )
        return _Head(int(row.size or 0), pending)

    async def _logged_index(self, event_id: str) -> int | None:
        rows = await self._db.execute(
            "SELECT leaf_index FROM events_by_id WHERE event_id = ?", (event_id,)
        )
        if not rows or rows[0].leaf_index is None:
            return None
        return int(rows[0].leaf_index)

    async def _write_leaf(self, index: int, leaf: _Leaf) -> None:
        """Write everything leaf ``index`` adds; idempotent (helpers write the same values)."""
        siblings = await self.get_nodes(merkle.append_keys(index))
        new_nodes = merkle.append_nodes(index, merkle.leaf_hash(leaf.leaf), siblings)
        year = from_micros(leaf.occur_us).year
        writes: list[Awaitable[list[Any]]] = [
            self._db.execute(
                "INSERT INTO leaves (bucket, leaf_index, event_id, leaf) VALUES (?, ?, ?, ?)",
                (index >> _LEAF_BUCKET_BITS, index, leaf.event_id, leaf.leaf),
            ),
            self._db.execute(
                "INSERT INTO leaves_by_person (person_token, year, occur_us, leaf_index, leaf)"
                " VALUES (?, ?, ?, ?, ?)",
                (leaf.person_token, year, leaf.occur_us, index, leaf.leaf),
            ),
            self._db.execute(
                "INSERT INTO person_years (person_token, year) VALUES (?, ?)",
                (leaf.person_token, year),
            ),
            self._db.execute(
                "UPDATE events_by_id SET leaf_index = ? WHERE event_id = ?",
                (index, leaf.event_id),
            ),
            *(
                self._db.execute(
                    "INSERT INTO nodes (level, node_index, hash) VALUES (?, ?, ?)",
                    (level, node_index, value),
                )
                for (level, node_index), value in new_nodes
            ),
        ]
        # A handful of writes (4 + log2 n at most); all must land before the head advances.
        await asyncio.gather(*writes)

    async def tree_size(self) -> int:
        """See AuditStore.tree_size."""
        rows = await self._db.execute(
            "SELECT size FROM log_head WHERE id = ?", (_HEAD,), consistency=_SERIAL
        )
        return int(rows[0].size or 0) if rows else 0

    async def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """See AuditStore.get_nodes."""
        wanted = list(dict.fromkeys(keys))
        # O(log n) point lookups of immutable rows, issued together.
        results = await asyncio.gather(
            *(
                self._db.execute(
                    "SELECT hash FROM nodes WHERE level = ? AND node_index = ?",
                    (level, node_index),
                )
                for level, node_index in wanted
            )
        )
        return {key: rows[0].hash for key, rows in zip(wanted, results, strict=True) if rows}

    async def list_person_leaves(
        self, person_token: str, *, after: PersonCursor | None, limit: int
    ) -> list[LoggedLeaf]:
        """See AuditStore.list_person_leaves."""
        if limit <= 0:
            return []
        first_year = None if after is None else from_micros(after.occur_us).year
        years = [
            int(row.year)
            for row in await self._db.execute(
                "SELECT year FROM person_years WHERE person_token = ?", (person_token,)
            )
            if first_year is None or row.year <= first_year
        ]
        found: list[LoggedLeaf] = []
        for year in sorted(years, reverse=True):
            if after is not None and year == first_year:
                rows = await self._db.execute(
                    "SELECT occur_us, leaf_index, leaf FROM leaves_by_person"
                    " WHERE person_token = ? AND year = ? AND (occur_us, leaf_index) < (?, ?)"
                    " LIMIT ?",
                    (person_token, year, after.occur_us, after.leaf_index, limit - len(found)),
                )
            else:
                rows = await self._db.execute(
                    "SELECT occur_us, leaf_index, leaf FROM leaves_by_person"
                    " WHERE person_token = ? AND year = ? LIMIT ?",
                    (person_token, year, limit - len(found)),
                )
            found.extend(
                LoggedLeaf(leaf_index=int(r.leaf_index), occur_us=int(r.occur_us), leaf=r.leaf)
                for r in rows
            )
            if len(found) >= limit:
                break
        return found

    async def get_leaves(self, start: int, end: int, *, limit: int) -> list[IndexedLeaf]:
        """See AuditStore.get_leaves."""
        found: list[IndexedLeaf] = []
        bucket = start >> _LEAF_BUCKET_BITS
        # Bucket by bucket in log order until the range or the limit is exhausted.
        while start < end and len(found) < limit and bucket <= (end - 1) >> _LEAF_BUCKET_BITS:
            rows = await self._db.execute(
                "SELECT leaf_index, leaf FROM leaves"
                " WHERE bucket = ? AND leaf_index >= ? AND leaf_index < ? LIMIT ?",
                (bucket, start, end, limit - len(found)),
            )
            found.extend(IndexedLeaf(leaf_index=int(r.leaf_index), leaf=r.leaf) for r in rows)
            bucket += 1
            start = bucket << _LEAF_BUCKET_BITS
        return found

    async def check(self) -> None:
        """See AuditStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See AuditStore.close."""
        await self._db.close()


def _outcome(index: int, leaf: _Leaf, *, duplicate: bool) -> AppendOutcome:
    return AppendOutcome(
        leaf_index=int(index),
        leaf_hash=merkle.leaf_hash(leaf.leaf),
        leaf=leaf.leaf,
        duplicate=duplicate,
    )
