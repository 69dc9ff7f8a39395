"""AuditStore on Apache Cassandra (keyspace ``<prefix>_audit``).

Tables, shaped by their queries:

- ``log_head``: one row (``id = 0``): the committed tree ``size`` and the ``pending_*``
  leaf being appended at index ``size`` (or none). Written only with lightweight
  transactions; it is the log's sequencer.
- ``event_ids``: the idempotency key, an event id's leaf and index, partitioned by the
  id's ULID time in buckets of ~16 s, so a batch of events made together is read and
  written as one or two partitions rather than one each.
- ``node_chunks``: the Merkle node table, one row per complete subtree
  ``(level, node_index)`` of level 1 and up, 1,024 nodes of a level per partition (a batch's
  new nodes land in a few partitions); immutable once written. A level-0 node is its leaf's
  hash, so it is computed from ``leaves`` when read, never stored (ADR 42); rows of level 0
  that earlier versions wrote are ignored.
- ``events_by_id`` and ``nodes``: the same, one partition per row, as versions before
  ADR 28 wrote them. Still read, never written: a node missing from ``node_chunks`` is
  looked up there, and so is an event id older than ``log_head.events_bucketed_since_ms``
  (the time this version first opened the log, plus an hour for callers' clock skew; 0 for
  a log this version created).
- ``leaves``: the leaves in log order, partitioned in buckets of 4096 indexes (for
  verifiers and rebuilds that walk the log).
- ``leaves_by_person`` (newest first) partitioned by ``(person_token, year)`` so no
  partition grows without bound, and ``person_years`` listing a person's partitions.

Appends are group-committed (:class:`healthbank.core.group_commit.GroupCommit`): a batch of events
is placed by a small state machine on ``log_head``, safe for any number of processes and
for a crash at any step:

1. read ``event_ids`` for the batch's ids (an id with a leaf index is a duplicate, answered
   from the stored leaf; an id claimed without an index by an appender of an older version
   that died keeps its claimed leaf bytes) while the batch (each id once) is written aside
   (``pending_batches``, keyed by a new uuid);
2. with the head at ``(size = n, nothing pending)``: ``UPDATE log_head SET pending_batch = b
   IF size = n AND pending_event = null AND pending_batch = null`` -- one sequence
   reservation per batch. The batch is now durable and every index fixed (step 3 follows
   from the aside copy and the stored ids alone), so its callers are answered here;
3. whoever sees batch ``b`` pending at ``n`` (its owner right after answering, any later
   appender, or a reader asking for the size) places it: an event whose
   ``event_ids.leaf_index`` is below ``n`` was placed by an earlier batch and is skipped, as
   is a second copy of an id; the others take ``n, n + 1, ...`` in batch order. It writes
   their leaves, person rows, ``event_ids`` rows and the Merkle nodes they complete, in
   unlogged batches. All of these follow from the pending batch and the committed tree, so
   helpers write identical values;
4. ``UPDATE log_head SET size = n + k, pending_batch = null IF size = n AND
   pending_batch = b``, then the aside copy is deleted.

A process's next batch ``b'`` does not wait for step 4 (ADR 40): once ``b``'s leaves are
written (step 3) and ``b'`` is written aside, one LWT does step 4 of ``b`` and step 2 of
``b'``: ``UPDATE log_head SET size = n + k, pending_batch = b' IF size = n AND
pending_batch = b``. Step 1 of ``b'`` runs beside ``b``'s step 3, so its id read may miss
``b``'s ids: it adds ``b``'s placement, which this process holds. A batch whose successor
has not come within ``_SUCCESSOR_WAIT_S`` (50 ms) of its leaves being written is advanced
alone.

The head only moves ``(n, none) -> (n, b) -> (n + k, none)`` or ``(n, b) -> (n + k, b')``,
so an event is placed at most once and indexes are dense: one LWT per batch while batches
follow each other, two for a batch alone, where there were three per event. Readers read
the head with a serial read and finish a batch they find pending before they answer (or,
for this process's own batch, wait for its leaves), so an answered event is in every size,
proof and listing read after it, and no reader sees a half-built subtree.
A head left with a single ``pending_event`` by an older version is finished the same way,
as a batch of one.

A batch whose process died before step 2 was never answered; its events' retries log them.
The audit client retries until it gets an answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from healthbank.core.group_commit import GroupCommit
from healthbank.core.ids import is_ulid, ulid_millis
from healthbank.ledger import merkle
from healthbank.ledger.merkle import NodeKey
from healthbank.records import from_micros, to_micros
from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.errors import StorageUnavailable
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
    # Fewer partitions per event (ADR 28): ids bucketed by time, nodes in chunks.
    """
    ALTER TABLE log_head ADD IF NOT EXISTS events_bucketed_since_ms bigint;
    CREATE TABLE IF NOT EXISTS event_ids (
        bucket bigint, event_id text, leaf blob, person_token text, occur_us bigint,
        leaf_index bigint,
        PRIMARY KEY ((bucket), event_id)
    );
    CREATE TABLE IF NOT EXISTS node_chunks (
        level int, chunk bigint, node_index bigint, hash blob,
        PRIMARY KEY ((level, chunk), node_index)
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
# Step 4 of a process's batch and step 2 of its next one, in one LWT (ADR 40).
_ADVANCE_AND_RESERVE = (
    "UPDATE log_head SET size = ?, pending_batch = ? WHERE id = ? IF size = ? AND pending_batch = ?"
)
# A single event left pending by an older version of this store.
_ADVANCE_EVENT = (
    "UPDATE log_head SET size = ?, pending_event = null, pending_leaf = null,"
    " pending_person = null, pending_occur_us = null WHERE id = ? IF size = ? AND pending_event = ?"
)
# How long a batch whose leaves are written waits for a successor to take over its step 4
# before advancing the head alone (ADR 40). Nobody waits for it: callers have their answers
# and this process's readers only wait for the leaves. Longer than the ~40 ms between the
# events of a caller reading one thing after another (ADR 40's amendment).
_SUCCESSOR_WAIT_S = 0.05
_EVENT_COLUMNS = "event_id, leaf, person_token, occur_us, leaf_index"
# Ids per read of event_ids (one partition) or of events_by_id (one partition per id).
_READ_CHUNK = 100
# An event id's bucket: its ULID time in units of 2**14 ms (~16 s).
_EVENT_BUCKET_BITS = 14
# A node's partition: 1,024 consecutive nodes of one level (chunk = node_index >> this).
NODE_CHUNK_BITS = 10
# Event ids made up to this long after the upgrade may still sit in events_by_id (their
# callers' clocks may run ahead of the audit service's).
_LEGACY_ID_MARGIN_MS = 3_600_000
# Persons' years this process has written to person_years (the row is immutable), so later
# batches skip them; cleared when it grows past this many.
_PERSON_YEARS_REMEMBERED = 100_000


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
class _KnownId:
    """An event id's stored row as :meth:`CassandraAuditStore._events` returns it, made from
    a placement this process holds (its last batch's, whose rows may still be in flight)."""

    event_id: str
    leaf: bytes
    person_token: str
    occur_us: int
    leaf_index: int


@dataclass
class _Finishing:
    """This process's last reserved batch while its step 3 runs. Its successor may take
    over step 4 (``taken``), advancing the head past it with its own reservation, until
    step 4 alone has begun (``advancing``)."""

    size: int
    pending: _Pending
    placed: dict[str, _Placed]
    end: int
    leaves_written: asyncio.Task[None]
    advancing: bool = False
    taken: bool = False

    def known_ids(self) -> dict[str, _KnownId]:
        """Where this batch put each of its ids, as stored rows."""
        return {
            event_id: _KnownId(event_id, leaf.leaf, leaf.person_token, leaf.occur_us, index)
            for event_id, (index, leaf, _) in self.placed.items()
        }


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
        # Work the callers do not wait for (a reserved batch's step 3 and 4, deletions of
        # aside copies), awaited on close.
        self._background: set[asyncio.Task[Any]] = set()
        # This process's last reserved batch being finished, if any, and its placement.
        self._finishing: asyncio.Task[Any] | None = None
        self._last: _Finishing | None = None
        # The batches this process is placing, each done once it is finished (or given up).
        self._own: dict[uuid.UUID, asyncio.Future[None]] = {}
        # Event ids with a ULID time before this (ms) may be in events_by_id; 0: none are.
        self._legacy_ids_before_ms = 0
        # Whether the head row is known to exist and _legacy_ids_before_ms is set.
        self._head_ensured = False
        self._person_years: set[tuple[str, int]] = set()

    async def open(self) -> CassandraAuditStore:
        """Connect and create the head row of an empty log; returns self. Until
        ``healthbank migrate`` has created the keyspace, or while the head's LWT times out
        (a ring just created, issue 15), :meth:`check` and the first append do it instead:
        the service starts NOT_SERVING rather than crashing."""
        await self._db.open()
        try:
            await self._ensure_head()
        except StorageUnavailable:  # SchemaPending included
            pass
        except BaseException:
            await self._db.close()
            raise
        return self

    async def _ensure_head(self) -> None:
        if self._head_ensured:
            return
        since = await self._events_bucketed_since()
        self._legacy_ids_before_ms = since + _LEGACY_ID_MARGIN_MS if since else 0
        self._head_ensured = True

    async def _events_bucketed_since(self) -> int:
        """When event ids started going to ``event_ids`` (ms; 0: from the start): set once,
        by whichever process of this version opens the log first."""
        created = await self._db.execute(
            "INSERT INTO log_head (id, size, events_bucketed_since_ms) VALUES (?, 0, 0)"
            " IF NOT EXISTS",
            (_HEAD,),
        )
        if created[0].applied:
            return 0
        since = created[0].events_bucketed_since_ms
        if since is None:
            now_ms = time.time_ns() // 1_000_000
            marked = await self._db.execute(
                "UPDATE log_head SET events_bucketed_since_ms = ? WHERE id = ?"
                " IF events_bucketed_since_ms = null",
                (now_ms, _HEAD),
            )
            since = now_ms if marked[0].applied else marked[0].events_bucketed_since_ms
        return int(since)

    async def append(self, entry: LeafEntry) -> AppendOutcome:
        """See AuditStore.append."""
        return (await self._group.append([entry]))[0]

    async def append_many(self, entries: Sequence[LeafEntry]) -> list[AppendOutcome]:
        """See AuditStore.append_many."""
        return await self._group.append(entries)

    async def _commit_batch(self, entries: list[LeafEntry]) -> list[AppendOutcome]:
        """Steps 1-4 of the module docstring for one batch; one outcome per entry, answered
        once the batch is reserved (its leaves and the head's advance finish after)."""
        await self._ensure_head()
        previous = self._take_over()
        if previous is None:
            # The previous batch's step 3-4 first: this batch's id read must see its ids.
            await self._settle_own()
            # The size this process last saw, before step 1 reads the ids (see _place).
            head = self._head
            seen = head.size if head is not None and head.pending is None else None
        else:
            seen = previous.end
        firsts: dict[str, LeafEntry] = {}
        for entry in entries:
            firsts.setdefault(entry.event_id, entry)
        batch = [
            _Leaf(entry.event_id, entry.leaf, entry.person_token, to_micros(entry.occur_time))
            for entry in firsts.values()
        ]
        batch_id = uuid.uuid4()
        # Step 1 and the aside copy of step 2 at once: the copy holds every id of the batch
        # and step 3 skips those already placed.
        step_1 = asyncio.gather(
            self._events([leaf.event_id for leaf in batch]), self._write_aside(batch_id, batch)
        )
        if previous is None:
            known, _ = await step_1
        else:
            known = await self._beside_previous(step_1, previous)
        if all(_placed_before(known.get(leaf.event_id), None) for leaf in batch):
            self._forget_aside(batch_id)  # nothing to place: every id is logged already
            if previous is not None:
                await self._advance_alone(previous)
            placed: dict[str, _Placed] = {}
        else:
            if previous is not None:
                await self._advance_and_reserve(previous, _Pending(batch_id, batch))
            placed = await self._place(_Pending(batch_id, batch), seen, known)
        outcomes: list[AppendOutcome] = []
        answered: set[str] = set()
        for entry in entries:
            row = known.get(entry.event_id)
            if entry.event_id in placed:
                # An event an earlier batch placed (a racing retry elsewhere) is a duplicate,
                # answered with the leaf stored then.
                index, leaf, fresh = placed[entry.event_id]
                first = fresh and row is None and entry.event_id not in answered
                outcomes.append(_outcome(index, leaf, duplicate=not first))
            else:
                assert row is not None  # only ids logged before this batch are not placed
                stored = _Leaf(entry.event_id, row.leaf, row.person_token, row.occur_us)
                outcomes.append(_outcome(row.leaf_index, stored, duplicate=True))
            answered.add(entry.event_id)
        return outcomes

    def _take_over(self) -> _Finishing | None:
        """This process's last batch, marked taken, if its step 4 can still be done with the
        next reservation (ADR 40); None when there is none or it is being advanced alone."""
        last = self._last
        if last is None or last.advancing or last.taken:
            return None
        last.taken = True
        return last

    async def _beside_previous(
        self, step_1: Awaitable[tuple[dict[str, Any], None]], previous: _Finishing
    ) -> dict[str, Any]:
        """Step 1 run beside ``previous``'s step 3; the ids read, with ``previous``'s own
        placement added (its rows may have been written after the read). If either fails,
        ``previous`` is left pending for whoever reads the head next to finish."""
        try:
            (known, _), _ = await asyncio.gather(step_1, asyncio.shield(previous.leaves_written))
        except BaseException:
            self._give_up(previous)
            raise
        return {**known, **previous.known_ids()}

    async def _advance_and_reserve(self, previous: _Finishing, reserve: _Pending) -> None:
        """Step 4 of ``previous`` (its leaves written) and step 2 of ``reserve`` in one LWT.
        Applied, the head is ``(previous.end, reserve)``; not applied (another process
        finished ``previous``), it is read again by :meth:`_place`."""
        if self._last is previous:
            self._last = None
        try:
            assert reserve.batch_id is not None
            claimed = await self._db.execute(
                _ADVANCE_AND_RESERVE,
                (previous.end, reserve.batch_id, _HEAD, previous.size, previous.pending.batch_id),
            )
        except BaseException:
            self._give_up(previous)
            raise
        self._release_own(previous.pending.batch_id)
        if claimed[0].applied:
            assert previous.pending.batch_id is not None
            self._forget_aside(previous.pending.batch_id)
            self._head = _Head(previous.end, reserve)
        else:
            self._head = None

    def _give_up(self, previous: _Finishing) -> None:
        """Leave ``previous`` pending (finished by the next appender or reader, as after a
        crash) and release this process's readers waiting for it."""
        if self._last is previous:
            self._last = None
        self._head = None
        self._release_own(previous.pending.batch_id)

    async def _write_aside(self, batch_id: uuid.UUID, leaves: list[_Leaf]) -> None:
        await self._db.execute(
            "INSERT INTO pending_batches (batch_id, leaves) VALUES (?, ?)",
            (
                batch_id,
                [(leaf.event_id, leaf.leaf, leaf.person_token, leaf.occur_us) for leaf in leaves],
            ),
        )

    def _forget_aside(self, batch_id: uuid.UUID) -> None:
        """Delete an aside copy nothing will read again, without holding anyone back."""
        self._in_background(
            self._db.execute("DELETE FROM pending_batches WHERE batch_id = ?", (batch_id,))
        )

    def _in_background(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _events(self, event_ids: Sequence[str]) -> dict[str, Any]:
        """The stored rows of ``event_ids`` that exist, by id."""
        by_bucket: dict[int, list[str]] = {}
        for event_id in dict.fromkeys(event_ids):
            by_bucket.setdefault(_event_bucket(event_id), []).append(event_id)
        results = await asyncio.gather(
            *(
                self._db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM event_ids"
                    f" WHERE bucket = ? AND event_id IN ({', '.join('?' * len(chunk))})",
                    (bucket, *chunk),
                )
                for bucket, ids in by_bucket.items()
                for chunk in _chunks(ids, _READ_CHUNK)
            )
        )
        found = {row.event_id: row for rows in results for row in rows}
        legacy = [
            event_id
            for ids in by_bucket.values()
            for event_id in ids
            if event_id not in found and self._maybe_legacy(event_id)
        ]
        if legacy:
            results = await asyncio.gather(
                *(
                    self._db.execute(
                        f"SELECT {_EVENT_COLUMNS} FROM events_by_id"
                        f" WHERE event_id IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    )
                    for chunk in _chunks(legacy, _READ_CHUNK)
                )
            )
            found.update((row.event_id, row) for rows in results for row in rows)
        return found

    def _maybe_legacy(self, event_id: str) -> bool:
        """Whether ``event_id`` may have been logged by a version before ADR 28."""
        if not self._legacy_ids_before_ms:
            return False
        return not is_ulid(event_id) or ulid_millis(event_id) < self._legacy_ids_before_ms

    async def _place(
        self, batch: _Pending, seen: int | None, known: dict[str, Any]
    ) -> dict[str, _Placed]:
        """Drive the head until ``batch`` (written aside) is reserved; where each id goes.
        ``seen``: the size this process knew (nothing pending) before it read the ids
        (``known``); if the batch is reserved at that size, no batch was placed since that
        read, so step 3 may use it. Its step 3 and 4 then run in the background (see
        :meth:`_settle_own`): the reservation alone makes the batch durable and fixes every
        index, since whoever finishes it writes the same values."""
        # Readers that find this batch pending wait for this process to finish it.
        assert batch.batch_id is not None
        self._own[batch.batch_id] = asyncio.get_running_loop().create_future()
        handed_over = False
        try:
            head = self._head or await self._read_head()
            while True:
                if head.pending is not None:
                    pending = head.pending
                    if pending.batch_id == batch.batch_id and head.size == seen:
                        placed, new_leaves = _plan(head.size, pending, known)
                        finishing = _Finishing(
                            head.size,
                            pending,
                            placed,
                            head.size + len(new_leaves),
                            self._in_background(self._write_leaves(head.size, new_leaves)),
                        )
                        self._last = finishing
                        self._finishing = self._in_background(self._finish_own(finishing))
                        handed_over = True
                        return placed
                    placed = await self._finish(head.size, pending)
                    added = sum(fresh for _, _, fresh in placed.values())
                    self._head = head = _Head(head.size + added, None)
                    if pending.batch_id == batch.batch_id:
                        return placed
                    continue
                claimed = await self._db.execute(_SET_PENDING, (batch.batch_id, _HEAD, head.size))
                if claimed[0].applied:
                    head = _Head(head.size, batch)
                else:
                    head = await self._read_head()
                self._head = head
        finally:
            if not handed_over:
                self._release_own(batch.batch_id)

    async def _finish_own(self, finishing: _Finishing) -> None:
        """Step 3 of this process's reserved batch, then step 4 unless its successor took
        that over by then (and releases its readers once the head is past it)."""
        try:
            await finishing.leaves_written
        except BaseException:
            if not finishing.taken:
                self._give_up(finishing)
            raise
        if not finishing.taken:
            # Appends often come in chains (a read's events follow one another): a moment's
            # wait lets the next batch advance the head with its own reservation.
            await asyncio.sleep(_SUCCESSOR_WAIT_S)
        if finishing.taken:
            return
        finishing.advancing = True
        await self._advance_alone(finishing)

    async def _advance_alone(self, finishing: _Finishing) -> None:
        """Step 4 of this process's batch (its leaves written) without a reservation; its
        readers are released whatever the outcome (a failed advance is finished by the next
        appender or reader)."""
        try:
            await self._advance(finishing.size, finishing.pending, finishing.end)
        finally:
            if self._last is finishing:
                self._last = None
            self._release_own(finishing.pending.batch_id)

    def _release_own(self, batch_id: uuid.UUID | None) -> None:
        finished = self._own.pop(batch_id, None) if batch_id is not None else None
        if finished is not None and not finished.done():
            finished.set_result(None)

    async def _settle_own(self) -> None:
        """Wait for this process's last batch to be finished. If finishing it failed, the
        head is read again: whoever reads it next (an append, a reader) finishes it."""
        finishing = self._finishing
        if finishing is None:
            return
        try:
            # Shielded: a reader's cancelled call must not cancel the batch's finish.
            await asyncio.shield(finishing)
        except Exception:
            self._head = None
        if self._finishing is finishing:
            self._finishing = None

    async def _finish(self, size: int, pending: _Pending) -> dict[str, _Placed]:
        """Step 3 and 4 for the batch pending at ``size``; idempotent (see the docstring)."""
        known = await self._events([leaf.event_id for leaf in pending.leaves])
        placed, new_leaves = _plan(size, pending, known)
        await self._complete(size, pending, placed, new_leaves)
        return placed

    async def _complete(
        self, size: int, pending: _Pending, placed: dict[str, _Placed], new_leaves: list[_Leaf]
    ) -> None:
        """Write the batch's planned leaves, then advance the head past them."""
        await self._write_leaves(size, new_leaves)
        await self._advance(size, pending, size + len(new_leaves))

    async def _advance(self, size: int, pending: _Pending, new_size: int) -> None:
        """Step 4: the head from ``(size, pending)`` to ``(new_size, none)``."""
        if pending.batch_id is None:
            # An older version's single pending event: the head only moves past it once.
            await self._db.execute(
                _ADVANCE_EVENT, (new_size, _HEAD, size, pending.leaves[0].event_id)
            )
        else:
            # Applied or not, the head only leaves (n, b) for (n + k, none).
            await self._db.execute(_ADVANCE, (new_size, _HEAD, size, pending.batch_id))
            # The aside copy is garbage now (nothing reads a batch the head moved past).
            self._forget_aside(pending.batch_id)
        if self._head is not None and self._head.size == size and self._head.pending:
            self._head = _Head(new_size, None)

    async def _read_head(self, *, aside: bool = True) -> _Head:
        """The head (serial read), with the pending batch's leaves unless ``aside`` is False
        (then a pending batch's leaves are left empty)."""
        rows = await self._db.execute(_READ_HEAD, (_HEAD,), consistency=_SERIAL)
        if not rows:
            return _Head(0, None)
        row = rows[0]
        pending = None
        if row.pending_batch is not None:
            leaves = await self._aside(row.pending_batch) if aside else []
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

    async def _aside(self, batch_id: uuid.UUID) -> list[_Leaf]:
        """A batch's aside copy (empty once deleted: the head moved past the batch)."""
        rows = await self._db.execute(
            "SELECT leaves FROM pending_batches WHERE batch_id = ?", (batch_id,)
        )
        return [_Leaf(*fields) for fields in (rows[0].leaves if rows else [])]

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
        lookups: list[tuple[int, tuple[str, Sequence[Any]]]] = []
        node_rows: list[tuple[tuple[int, int], tuple[str, Sequence[Any]]]] = []
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
            if (leaf.person_token, year) not in self._person_years:
                person_years.add((leaf.person_token, year))
            bucket = _event_bucket(leaf.event_id)
            lookups.append(
                (
                    bucket,
                    (
                        "UPDATE event_ids SET leaf = ?, person_token = ?, occur_us = ?,"
                        " leaf_index = ? WHERE bucket = ? AND event_id = ?",
                        (leaf.leaf, leaf.person_token, leaf.occur_us, index, bucket, leaf.event_id),
                    ),
                )
            )
            node_rows += [
                (
                    (level, node_index >> NODE_CHUNK_BITS),
                    (
                        "INSERT INTO node_chunks (level, chunk, node_index, hash)"
                        " VALUES (?, ?, ?, ?)",
                        (level, node_index >> NODE_CHUNK_BITS, node_index, value),
                    ),
                )
                for (level, node_index), value in new_nodes
                if level  # level 0 is the leaf's hash, read from ``leaves`` (ADR 42)
            ]
        by_person.sort(key=lambda keyed: keyed[0])
        lookups.sort(key=lambda keyed: keyed[0])
        node_rows.sort(key=lambda keyed: keyed[0])
        statements = [
            *in_log,
            *(statement for _, statement in by_person),
            *(
                ("INSERT INTO person_years (person_token, year) VALUES (?, ?)", key)
                for key in sorted(person_years)
            ),
            *(statement for _, statement in lookups),
            *(statement for _, statement in node_rows),
        ]
        self._frontier = None
        await self._db.execute_unlogged(statements)
        if len(self._person_years) > _PERSON_YEARS_REMEMBERED:
            self._person_years.clear()
        self._person_years |= person_years
        end = first_index + len(leaves)
        frontier = merkle.range_keys(0, end)
        if all(key in nodes for key in frontier):
            self._frontier = (end, {key: nodes[key] for key in frontier})

    async def tree_size(self) -> int:
        """See AuditStore.tree_size. A batch still pending is finished first: its callers
        have their answers, so its leaves are part of the log."""
        if self._last is None:
            await self._settle_own()
        for _ in range(5):
            head = await self._read_head(aside=False)
            pending = head.pending
            if pending is None:
                return head.size
            last = self._last
            if last is not None and (head.size, pending.batch_id) == (
                last.size,
                last.pending.batch_id,
            ):
                # This process's batch, its head not advanced yet: once its leaves are
                # written, its end is a size every answered event of it is under.
                try:
                    await asyncio.shield(last.leaves_written)
                    return last.end
                except Exception:
                    continue  # released for others to finish; read the head again
            own = self._own.get(pending.batch_id) if pending.batch_id is not None else None
            if own is not None:
                await asyncio.shield(own)  # this process is finishing it: no need to help
                continue
            if pending.batch_id is not None:
                pending = _Pending(pending.batch_id, await self._aside(pending.batch_id))
            if pending.leaves:
                placed = await self._finish(head.size, pending)
                return head.size + sum(fresh for _, _, fresh in placed.values())
            # Its aside copy is gone: the head moved past it after it was read.
        return head.size

    async def get_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """See AuditStore.get_nodes."""
        by_chunk: dict[tuple[int, int], list[int]] = {}
        by_bucket: dict[int, list[int]] = {}
        for level, node_index in dict.fromkeys(keys):
            if level:
                by_chunk.setdefault((level, node_index >> NODE_CHUNK_BITS), []).append(node_index)
            else:
                by_bucket.setdefault(node_index >> _LEAF_BUCKET_BITS, []).append(node_index)
        # One read per partition touched (O(log n) of them for a proof), issued together.
        node_reads = asyncio.gather(
            *(
                self._db.execute(
                    "SELECT level, node_index, hash FROM node_chunks WHERE level = ? AND chunk = ?"
                    f" AND node_index IN ({', '.join('?' * len(chunk))})",
                    (level, chunk_index, *chunk),
                )
                for (level, chunk_index), indexes in by_chunk.items()
                for chunk in _chunks(indexes, _READ_CHUNK)
            )
        )
        leaf_reads = asyncio.gather(
            *(
                self._db.execute(
                    "SELECT leaf_index, leaf FROM leaves WHERE bucket = ?"
                    f" AND leaf_index IN ({', '.join('?' * len(chunk))})",
                    (bucket, *chunk),
                )
                for bucket, indexes in by_bucket.items()
                for chunk in _chunks(indexes, _READ_CHUNK)
            )
        )
        node_rows, leaf_rows = await asyncio.gather(node_reads, leaf_reads)
        found = {(row.level, row.node_index): row.hash for rows in node_rows for row in rows}
        found.update(
            ((0, row.leaf_index), merkle.leaf_hash(row.leaf)) for rows in leaf_rows for row in rows
        )
        missing = [
            (level, node_index)
            for (level, _), indexes in by_chunk.items()
            for node_index in indexes
            if (level, node_index) not in found
        ]
        if missing and self._legacy_ids_before_ms:
            # Nodes written before ADR 28 (a log this version did not create).
            legacy = await asyncio.gather(
                *(
                    self._db.execute(
                        "SELECT hash FROM nodes WHERE level = ? AND node_index = ?", key
                    )
                    for key in missing
                )
            )
            pairs = zip(missing, legacy, strict=True)
            found.update((key, rows[0].hash) for key, rows in pairs if rows)
        return found

    async def list_person_leaves(
        self, person_token: str, *, after: PersonCursor | None, limit: int
    ) -> list[LoggedLeaf]:
        """See AuditStore.list_person_leaves."""
        if limit <= 0:
            return []
        await self.tree_size()  # an answered event is listed (see tree_size)
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
        await self._ensure_head()

    async def close(self) -> None:
        """See AuditStore.close."""
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._db.close()


def _event_bucket(event_id: str) -> int:
    """The ``event_ids`` partition of ``event_id`` (-1 for an id that is not a ULID)."""
    return ulid_millis(event_id) >> _EVENT_BUCKET_BITS if is_ulid(event_id) else -1


def _placed_before(row: Any, size: int | None) -> bool:
    """Whether the stored id ``row`` (or None) was placed below ``size`` (None: anywhere)."""
    return (
        row is not None and row.leaf_index is not None and (size is None or row.leaf_index < size)
    )


def _plan(
    size: int, pending: _Pending, known: dict[str, Any]
) -> tuple[dict[str, _Placed], list[_Leaf]]:
    """Step 3's placement of the batch pending at ``size``, given its ids' stored rows: an
    id placed below ``size`` keeps its leaf, a second copy of an id is skipped, the others
    take ``size, size + 1, ...``. Stored bytes of an id not placed below ``size`` (an older
    version's claim, or a helper's write of this very batch) are its leaf, so every helper
    writes the same values."""
    placed: dict[str, _Placed] = {}
    new_leaves: list[_Leaf] = []
    for leaf in pending.leaves:
        if leaf.event_id in placed:
            continue
        row = known.get(leaf.event_id)
        if row is not None and row.leaf is not None:
            leaf = _Leaf(row.event_id, row.leaf, row.person_token, row.occur_us)
        if row is not None and _placed_before(row, size):
            placed[leaf.event_id] = (int(row.leaf_index), leaf, False)
            continue
        placed[leaf.event_id] = (size + len(new_leaves), leaf, True)
        new_leaves.append(leaf)
    return placed, new_leaves


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _outcome(index: int, leaf: _Leaf, *, duplicate: bool) -> AppendOutcome:
    return AppendOutcome(
        leaf_index=int(index),
        leaf_hash=merkle.leaf_hash(leaf.leaf),
        leaf=leaf.leaf,
        duplicate=duplicate,
    )
