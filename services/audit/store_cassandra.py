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

Appends are group-committed (:class:`healthbank.core.group_commit.GroupCommit`): a batch of events
is placed by a small state machine on ``log_head``, safe for any number of processes and
for a crash at any step:

1. read ``events_by_id`` for the batch's ids: an id with a leaf index is a duplicate
   (answered from the stored leaf) and leaves the batch; an id claimed without an index (by
   an appender of an older version that died) keeps its claimed leaf bytes;
2. write the batch aside (``pending_batches``, keyed by a new uuid), then with the head at
   ``(size = n, nothing pending)``: ``UPDATE log_head SET pending_batch = b IF size = n AND
   pending_event = null AND pending_batch = null`` -- one sequence reservation per batch;
3. whoever sees batch ``b`` pending at ``n`` (its owner, or any later appender helping after
   a crash) places it: an event whose ``events_by_id.leaf_index`` is below ``n`` was placed
   by an earlier batch and is skipped, as is a second copy of an id; the others take
   ``n, n + 1, ...`` in batch order. It writes their leaves, person rows, ``events_by_id``
   rows and the Merkle nodes they complete, in unlogged batches. All of these follow from
   the pending batch and the committed tree, so helpers write identical values;
4. ``UPDATE log_head SET size = n + k, pending_batch = null IF size = n AND
   pending_batch = b``, then the aside copy is deleted.

The head only moves ``(n, none) -> (n, b) -> (n + k, none)``, so an event is placed at most
once and indexes are dense: two LWTs per batch, where there were three per event. Readers
read ``size`` with a serial read and see only nodes written before it advanced, never a
half-built subtree. A head left with a single ``pending_event`` by an older version is
finished the same way, as a batch of one.

A batch whose process died before step 2 was never acknowledged; its events' retries log
them. The audit client retries until it gets an answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from healthbank.core.group_commit import GroupCommit
from healthbank.ledger import merkle
from healthbank.ledger.merkle import NodeKey
from healthbank.records import from_micros, to_micros
from healthbank.storage.cassandra import CassandraDatabase
from services.audit.store import (
    MAX_BATCH,
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
    # Group commit: the head reserves indexes for a batch written aside.
    """
    ALTER TABLE log_head ADD IF NOT EXISTS pending_batch uuid;
    CREATE TABLE IF NOT EXISTS pending_batches (
        batch_id uuid PRIMARY KEY,
        leaves list<frozen<tuple<text, blob, text, bigint>>>
    )
    """,
]

_HEAD = 0
_LEAF_BUCKET_BITS = 12
# Serial reads follow the locality of the LWTs (the driver's serial level is LOCAL_SERIAL).
_SERIAL = "LOCAL_SERIAL"

_READ_HEAD = (
    "SELECT size, pending_batch, pending_event, pending_leaf, pending_person, pending_occur_us"
    " FROM log_head WHERE id = ?"
)
_SET_PENDING = (
    "UPDATE log_head SET pending_batch = ? WHERE id = ?"
    " IF size = ? AND pending_event = null AND pending_batch = null"
)
_ADVANCE = (
    "UPDATE log_head SET size = ?, pending_batch = null WHERE id = ?"
    " IF size = ? AND pending_batch = ?"
)
# A single event left pending by an older version of this store.
_ADVANCE_EVENT = (
    "UPDATE log_head SET size = ?, pending_event = null, pending_leaf = null,"
    " pending_person = null, pending_occur_us = null WHERE id = ? IF size = ? AND pending_event = ?"
)
_READ_EVENT = "SELECT event_id, leaf, person_token, occur_us, leaf_index FROM events_by_id"
# Ids per multi-partition read of events_by_id.
_READ_CHUNK = 100


@dataclass(frozen=True)
class _Leaf:
    """A leaf on its way into the log (from a claim or from the head's pending columns)."""

    event_id: str
    leaf: bytes
    person_token: str
    occur_us: int


# Where a batch put an event: its index, its leaf, and whether this batch placed it (False:
# an earlier batch had).
_Placed = tuple[int, "_Leaf", bool]


@dataclass(frozen=True)
class _Pending:
    """A batch reserved at the head's size: its aside copy's id (None: an older version's
    single pending event) and its leaves in order."""

    batch_id: uuid.UUID | None
    leaves: list[_Leaf]


@dataclass(frozen=True)
class _Head:
    """The sequencer row: committed size and the batch being placed at that index, if any."""

    size: int
    pending: _Pending | None


class CassandraAuditStore:
    """AuditStore on Cassandra; see the module docstring for the append protocol."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database
        # One batch at a time per process: the head takes one reservation at a time anyway.
        self._group: GroupCommit[LeafEntry, AppendOutcome] = GroupCommit(
            self._commit_batch, max_batch=MAX_BATCH
        )
        # The last head this process saw; a stale one only costs a failed LWT and a re-read.
        self._head: _Head | None = None
        # The complete subtrees tiling the first ``size`` leaves, as this process last wrote
        # them: the next batch at that size needs exactly these (immutable) nodes, so it
        # need not read them back. Another process's batch moves the size on: then read.
        self._frontier: tuple[int, dict[NodeKey, bytes]] | None = None
        # Deletions of placed batches' aside copies, awaited on close (not by the callers).
        self._cleanups: set[asyncio.Task[Any]] = set()

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
        return (await self._group.append([entry]))[0]

    async def append_many(self, entries: Sequence[LeafEntry]) -> list[AppendOutcome]:
        """See AuditStore.append_many."""
        return await self._group.append(entries)

    async def _commit_batch(self, entries: list[LeafEntry]) -> list[AppendOutcome]:
        """Steps 1-4 of the module docstring for one batch; one outcome per entry."""
        known = await self._events([entry.event_id for entry in entries])
        to_place: dict[str, _Leaf] = {}
        for entry in entries:
            row = known.get(entry.event_id)
            if entry.event_id in to_place or (row is not None and row.leaf_index is not None):
                continue
            if row is not None:
                # Claimed by an older version's attempt that died: its bytes are the event.
                to_place[entry.event_id] = _Leaf(
                    entry.event_id, row.leaf, row.person_token, row.occur_us
                )
            else:
                to_place[entry.event_id] = _Leaf(
                    entry.event_id, entry.leaf, entry.person_token, to_micros(entry.occur_time)
                )
        placed = await self._place(list(to_place.values())) if to_place else {}
        outcomes: list[AppendOutcome] = []
        answered: set[str] = set()
        for entry in entries:
            row = known.get(entry.event_id)
            if entry.event_id in to_place:
                # An event an earlier batch placed (a racing retry elsewhere) is a duplicate,
                # answered with the leaf stored then.
                index, leaf, fresh = placed[entry.event_id]
                first = fresh and row is None and entry.event_id not in answered
                outcomes.append(_outcome(index, leaf, duplicate=not first))
            else:
                assert row is not None  # only ids already logged are left out of to_place
                stored = _Leaf(entry.event_id, row.leaf, row.person_token, row.occur_us)
                outcomes.append(_outcome(row.leaf_index, stored, duplicate=True))
            answered.add(entry.event_id)
        return outcomes

    async def _events(self, event_ids: Sequence[str]) -> dict[str, Any]:
        """The ``events_by_id`` rows of ``event_ids`` that exist, by id."""
        wanted = list(dict.fromkeys(event_ids))
        chunks = [
            wanted[start : start + _READ_CHUNK] for start in range(0, len(wanted), _READ_CHUNK)
        ]
        results = await asyncio.gather(
            *(
                self._db.execute(
                    f"{_READ_EVENT} WHERE event_id IN ({', '.join('?' * len(chunk))})", chunk
                )
                for chunk in chunks
            )
        )
        return {row.event_id: row for rows in results for row in rows}

    async def _place(self, leaves: list[_Leaf]) -> dict[str, _Placed]:
        """Drive the head until ``leaves`` are placed; where each id is."""
        batch_id = uuid.uuid4()
        await self._db.execute(
            "INSERT INTO pending_batches (batch_id, leaves) VALUES (?, ?)",
            (
                batch_id,
                [(leaf.event_id, leaf.leaf, leaf.person_token, leaf.occur_us) for leaf in leaves],
            ),
        )
        head = self._head or await self._read_head()
        while True:
            if head.pending is not None:
                pending = head.pending
                placed = await self._finish(head.size, pending)
                added = sum(fresh for _, _, fresh in placed.values())
                self._head = head = _Head(head.size + added, None)
                if pending.batch_id == batch_id:
                    return placed
                continue
            claimed = await self._db.execute(_SET_PENDING, (batch_id, _HEAD, head.size))
            if claimed[0].applied:
                head = _Head(head.size, _Pending(batch_id, leaves))
            else:
                head = await self._read_head()
            self._head = head

    async def _finish(self, size: int, pending: _Pending) -> dict[str, _Placed]:
        """Step 3 and 4 for the batch pending at ``size``; idempotent (see the docstring)."""
        known = await self._events([leaf.event_id for leaf in pending.leaves])
        placed: dict[str, _Placed] = {}
        new_leaves: list[_Leaf] = []
        for leaf in pending.leaves:
            if leaf.event_id in placed:
                continue
            row = known.get(leaf.event_id)
            if row is not None and row.leaf_index is not None and row.leaf_index < size:
                stored = _Leaf(row.event_id, row.leaf, row.person_token, row.occur_us)
                placed[leaf.event_id] = (int(row.leaf_index), stored, False)
                continue
            placed[leaf.event_id] = (size + len(new_leaves), leaf, True)
            new_leaves.append(leaf)
        await self._write_leaves(size, new_leaves)
        new_size = size + len(new_leaves)
        if pending.batch_id is None:
            # An older version's single pending event: the head only moves past it once.
            await self._db.execute(
                _ADVANCE_EVENT, (new_size, _HEAD, size, pending.leaves[0].event_id)
            )
        else:
            # Applied or not, the head only leaves (n, b) for (n + k, none).
            await self._db.execute(_ADVANCE, (new_size, _HEAD, size, pending.batch_id))
            # The aside copy is garbage now (nothing reads a batch the head moved past): its
            # deletion need not hold the batch's callers back.
            cleanup = asyncio.create_task(
                self._db.execute(
                    "DELETE FROM pending_batches WHERE batch_id = ?", (pending.batch_id,)
                )
            )
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
        return placed

    async def _read_head(self) -> _Head:
        rows = await self._db.execute(_READ_HEAD, (_HEAD,), consistency=_SERIAL)
        if not rows:
            return _Head(0, None)
        row = rows[0]
        pending = None
        if row.pending_batch is not None:
            aside = await self._db.execute(
                "SELECT leaves FROM pending_batches WHERE batch_id = ?", (row.pending_batch,)
            )
            leaves = [_Leaf(*fields) for fields in (aside[0].leaves if aside else [])]
            pending = _Pending(row.pending_batch, leaves)
        elif row.pending_event is not None:
            pending = _Pending(
                None,
                [
                    _Leaf(
                        row.pending_event,
                        row.pending_leaf,
                        row.pending_person,
                        row.pending_occur_us,
                    )
                ],
            )
        return _Head(int(row.size or 0), pending)

    async def _write_leaves(self, first_index: int, leaves: list[_Leaf]) -> None:
        """Write everything ``leaves`` add from ``first_index`` on; idempotent (helpers
        write the same values). All of it lands before the head advances."""
        if not leaves:
            return
        # The complete subtrees left of first_index are all a later leaf can need.
        if not first_index:
            nodes: dict[NodeKey, bytes] = {}
        elif self._frontier is not None and self._frontier[0] == first_index:
            nodes = dict(self._frontier[1])
        else:
            nodes = await self.get_nodes(merkle.range_keys(0, first_index))
        # One list per table, each in partition order, so most unlogged batches touch one
        # partition (all of a batch's leaves share a bucket; a person's rows sit together).
        in_log: list[tuple[str, Sequence[Any]]] = []
        by_person: list[tuple[tuple[str, int], tuple[str, Sequence[Any]]]] = []
        person_years: set[tuple[str, int]] = set()
        lookups: list[tuple[str, Sequence[Any]]] = []
        node_rows: list[tuple[str, Sequence[Any]]] = []
        for index, leaf in enumerate(leaves, start=first_index):
            new_nodes = merkle.append_nodes(index, merkle.leaf_hash(leaf.leaf), nodes)
            nodes.update(new_nodes)
            year = from_micros(leaf.occur_us).year
            in_log.append(
                (
                    "INSERT INTO leaves (bucket, leaf_index, event_id, leaf) VALUES (?, ?, ?, ?)",
                    (index >> _LEAF_BUCKET_BITS, index, leaf.event_id, leaf.leaf),
                )
            )
            by_person.append(
                (
                    (leaf.person_token, year),
                    (
                        "INSERT INTO leaves_by_person"
                        " (person_token, year, occur_us, leaf_index, leaf) VALUES (?, ?, ?, ?, ?)",
                        (leaf.person_token, year, leaf.occur_us, index, leaf.leaf),
                    ),
                )
            )
            person_years.add((leaf.person_token, year))
            lookups.append(
                (
                    "UPDATE events_by_id SET leaf = ?, person_token = ?, occur_us = ?,"
                    " leaf_index = ? WHERE event_id = ?",
                    (leaf.leaf, leaf.person_token, leaf.occur_us, index, leaf.event_id),
                )
            )
            node_rows += [
                (
                    "INSERT INTO nodes (level, node_index, hash) VALUES (?, ?, ?)",
                    (level, node_index, value),
                )
                for (level, node_index), value in new_nodes
            ]
        by_person.sort(key=lambda keyed: keyed[0])
        statements = [
            *in_log,
            *(statement for _, statement in by_person),
            *(
                ("INSERT INTO person_years (person_token, year) VALUES (?, ?)", key)
                for key in sorted(person_years)
            ),
            *lookups,
            *node_rows,
        ]
        self._frontier = None
        await self._db.execute_unlogged(statements)
        end = first_index + len(leaves)
        frontier = merkle.range_keys(0, end)
        if all(key in nodes for key in frontier):
            self._frontier = (end, {key: nodes[key] for key in frontier})

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
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self._db.close()


def _outcome(index: int, leaf: _Leaf, *, duplicate: bool) -> AppendOutcome:
    return AppendOutcome(
        leaf_index=int(index),
        leaf_hash=merkle.leaf_hash(leaf.leaf),
        leaf=leaf.leaf,
        duplicate=duplicate,
    )
