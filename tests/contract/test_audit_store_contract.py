"""One contract for the audit log's store, run against SQLite and real Cassandra.

Both backends must allocate dense leaf indexes exactly once per event id, keep the node
table consistent with RFC 6962, and list a person's leaves newest first with exact
cursors, also when several store instances (processes) append to the same log at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contract_support import StoreKind
from engine_support import cassandra_database

from healthbank.ledger import merkle
from healthbank.records import to_micros
from healthbank.storage.cassandra import (
    STATEMENT_COUNTS,
    CassandraDatabase,
    StatementCounts,
    counts_now,
)
from healthbank.storage.errors import StorageUnavailable
from services.audit.store import (
    AuditStore,
    LeafEntry,
    LoggedLeaf,
    PersonCursor,
    SqliteAuditStore,
)
from services.audit.store_cassandra import MIGRATIONS, CassandraAuditStore

T0 = datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)
PERSON = "a" * 64
OTHER = "b" * 64

Opener = Callable[[], Awaitable[AuditStore]]


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(SqliteAuditStore, "audit.db", CassandraAuditStore, "audit", MIGRATIONS)


def entry(
    event_id: str, person: str = PERSON, when: datetime = T0, body: bytes | None = None
) -> LeafEntry:
    leaf = body if body is not None else f"event {event_id} of {person}".encode()
    return LeafEntry(
        event_id=event_id,
        person_token=person,
        occur_time=when,
        leaf=leaf,
        leaf_hash=merkle.leaf_hash(leaf),
    )


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash, computed naively from the leaves."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(mth(leaves[:split]), mth(leaves[split:]))


async def root_of(store: AuditStore, size: int) -> bytes:
    # The size first, as every reader does (services/audit/log.py): reading it finishes a
    # batch whose nodes are still being written after its answer (ADR 37). Read straight
    # after an append, the nodes could be missing (a CI run, 2026-12-03).
    assert await store.tree_size() >= size
    nodes = await store.get_nodes(merkle.root_keys(size))
    return merkle.root_hash(size, nodes)


# --- appending ---------------------------------------------------------------------------


async def test_empty_log(store: AuditStore) -> None:
    assert await store.tree_size() == 0
    assert await store.get_nodes([(0, 0), (1, 0)]) == {}
    assert await store.list_person_leaves(PERSON, after=None, limit=10) == []
    await store.check()


async def test_appends_get_dense_indexes_and_a_consistent_node_table(store: AuditStore) -> None:
    leaves: list[bytes] = []
    for i in range(11):
        added = entry(f"e{i}")
        outcome = await store.append(added)
        assert outcome.leaf_index == i
        assert not outcome.duplicate
        assert outcome.leaf == added.leaf
        assert outcome.leaf_hash == merkle.leaf_hash(added.leaf)
        leaves.append(added.leaf)
        assert await store.tree_size() == i + 1
    for size in range(1, 12):
        assert await root_of(store, size) == mth(leaves[:size])
    # Every complete subtree is stored, and nothing beyond the tree.
    nodes = await store.get_nodes([(0, 10), (1, 4), (2, 1), (3, 0), (0, 11), (1, 5), (4, 0)])
    assert set(nodes) == {(0, 10), (1, 4), (2, 1), (3, 0)}
    assert nodes[(3, 0)] == mth(leaves[:8])
    assert nodes[(0, 10)] == merkle.leaf_hash(leaves[10])


async def test_roots_and_proofs_hold_across_leaf_blocks(store: AuditStore) -> None:
    # 40 leaves: complete subtrees of every size up to 32, across several node chunks' worth
    # of levels, and right edges of every shape.
    added = [entry(f"m{i}") for i in range(40)]
    await store.append_many(added)
    leaves = [item.leaf for item in added]
    for size in range(1, 41):
        assert await root_of(store, size) == mth(leaves[:size])
    root40 = mth(leaves)
    for index in (0, 15, 16, 17, 31, 32, 39):
        nodes = await store.get_nodes(merkle.inclusion_keys(index, 40))
        path = merkle.inclusion_path(index, 40, nodes)
        assert merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, 40, path, root40)
    for first in (1, 15, 16, 17, 33):
        nodes = await store.get_nodes(merkle.consistency_keys(first, 40))
        proof = merkle.consistency_proof(first, 40, nodes)
        assert merkle.verify_consistency(first, 40, mth(leaves[:first]), root40, proof)


async def test_inclusion_and_consistency_proofs_verify_from_stored_nodes(
    store: AuditStore,
) -> None:
    leaves = [entry(f"p{i}").leaf for i in range(7)]
    for i in range(7):
        await store.append(entry(f"p{i}"))
    root7 = await root_of(store, 7)
    for index in range(7):
        nodes = await store.get_nodes(merkle.inclusion_keys(index, 7))
        path = merkle.inclusion_path(index, 7, nodes)
        assert merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, 7, path, root7)
    for first in range(1, 7):
        nodes = await store.get_nodes(merkle.consistency_keys(first, 7))
        proof = merkle.consistency_proof(first, 7, nodes)
        assert merkle.verify_consistency(first, 7, await root_of(store, first), root7, proof)


async def test_a_repeated_event_id_returns_the_first_append(store: AuditStore) -> None:
    first = await store.append(entry("dup"))
    await store.append(entry("other"))
    again = await store.append(entry("dup"))
    assert again.duplicate
    assert (again.leaf_index, again.leaf_hash, again.leaf) == (
        first.leaf_index,
        first.leaf_hash,
        first.leaf,
    )
    assert await store.tree_size() == 2


async def test_a_repeated_event_id_with_other_content_returns_the_stored_leaf(
    store: AuditStore,
) -> None:
    first = await store.append(entry("same-id", body=b"first content"))
    second = await store.append(entry("same-id", body=b"other content"))
    assert second.duplicate
    assert second.leaf_index == first.leaf_index
    assert second.leaf == b"first content"
    assert second.leaf_hash == merkle.leaf_hash(b"first content")
    assert await store.tree_size() == 1


async def test_concurrent_appends_from_two_instances_get_each_index_once(
    open_store: Opener,
) -> None:
    one, two = await open_store(), await open_store()
    entries = [entry(f"c{i:02}", person=PERSON if i % 2 else OTHER) for i in range(40)]
    # Half the appends on each instance, and two retries of the first event racing with it.
    outcomes = await asyncio.gather(
        *((one if i % 2 else two).append(added) for i, added in enumerate(entries)),
        two.append(entries[0]),
        one.append(entries[0]),
    )
    firsts, retries = outcomes[:40], outcomes[40:]
    assert sorted(o.leaf_index for o in firsts) == list(range(40))
    assert not any(o.duplicate for o in firsts[1:])
    attempts = [firsts[0], *retries]
    assert {o.leaf_index for o in attempts} == {firsts[0].leaf_index}
    assert sum(not o.duplicate for o in attempts) == 1
    assert await one.tree_size() == await two.tree_size() == 40
    # The tree is the leaves in index order, as both instances see it.
    by_index = sorted(zip(firsts, entries, strict=True), key=lambda pair: pair[0].leaf_index)
    expected = mth([added.leaf for _, added in by_index])
    assert await root_of(one, 40) == await root_of(two, 40) == expected
    # A later retry still gets the first index.
    late = await two.append(entries[7])
    assert late.duplicate and late.leaf_index == firsts[7].leaf_index
    assert await one.tree_size() == 40


async def test_a_retry_racing_the_first_attempt_places_the_event_once(
    open_store: Opener,
) -> None:
    one, two = await open_store(), await open_store()
    racing = [entry("race", body=b"racing event") for _ in range(6)]
    others = [entry(f"o{i}") for i in range(6)]
    outcomes = await asyncio.gather(
        *((one if i % 2 else two).append(added) for i, added in enumerate(racing + others))
    )
    race_indexes = {o.leaf_index for o in outcomes[:6]}
    assert len(race_indexes) == 1
    assert sum(not o.duplicate for o in outcomes[:6]) == 1
    assert sorted(o.leaf_index for o in outcomes[5:]) == list(range(7))
    assert await one.tree_size() == 7


# --- listing a person's leaves -------------------------------------------------------------


async def test_list_person_leaves_newest_first_with_exact_cursors(store: AuditStore) -> None:
    # Microsecond times, a tie on occur time, and events across a year boundary.
    times = [
        T0,
        T0 + timedelta(microseconds=1),
        T0 - timedelta(days=400),
        T0 + timedelta(days=1),
        T0 + timedelta(days=1),
        T0 - timedelta(days=800),
    ]
    for i, when in enumerate(times):
        await store.append(entry(f"l{i}", when=when))
    await store.append(entry("not-mine", person=OTHER))
    everything = await store.list_person_leaves(PERSON, after=None, limit=100)
    assert [leaf.leaf_index for leaf in everything] == [4, 3, 1, 0, 2, 5]
    assert [leaf.occur_us for leaf in everything] == [
        to_micros(times[i]) for i in (4, 3, 1, 0, 2, 5)
    ]
    assert everything[0].leaf == entry("l4").leaf
    assert isinstance(everything[0], LoggedLeaf)

    pages: list[list[int]] = []
    cursor: PersonCursor | None = None
    while True:
        page = await store.list_person_leaves(PERSON, after=cursor, limit=2)
        if not page:
            break
        pages.append([leaf.leaf_index for leaf in page])
        cursor = PersonCursor(occur_us=page[-1].occur_us, leaf_index=page[-1].leaf_index)
    assert pages == [[4, 3], [1, 0], [2, 5]]

    # A cursor in the middle of a tie continues with the lower index of the same time.
    tie = PersonCursor(occur_us=to_micros(times[4]), leaf_index=4)
    after_tie = await store.list_person_leaves(PERSON, after=tie, limit=1)
    assert [leaf.leaf_index for leaf in after_tie] == [3]
    others = await store.list_person_leaves(OTHER, after=None, limit=5)
    assert [leaf.leaf_index for leaf in others] == [6]
    assert await store.list_person_leaves("c" * 64, after=None, limit=5) == []


# --- Cassandra only: an appender that died half-way -----------------------------------------


async def cassandra_store(engines: dict[str, str], keyspace: str) -> CassandraAuditStore:
    return await CassandraAuditStore(cassandra_database(engines, keyspace, MIGRATIONS)).open()


async def written_before_adr_28(engines: dict[str, str], keyspace: str, *cql: str) -> None:
    """Make the log look like one an older version wrote: run ``cql`` on it, and mark it
    as first opened by this version now (so its old tables are read again)."""
    database = cassandra_database(engines, keyspace, MIGRATIONS)
    await database.open()
    try:
        for statement in cql:
            await database.execute(statement, ())
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        await database.execute(
            "UPDATE log_head SET events_bucketed_since_ms = ? WHERE id = 0", (now_ms,)
        )
    finally:
        await database.close()


async def test_cassandra_a_claim_whose_appender_died_is_placed_by_its_retry(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    first = await cassandra_store(engines, cassandra_keyspace)
    await first.append(entry("before"))
    await first.close()
    # An older version's first attempt claimed the id with its content, then its process died.
    crashed = entry("crashed", body=b"first attempt content")
    await written_before_adr_28(
        engines,
        cassandra_keyspace,
        "INSERT INTO events_by_id (event_id, leaf, person_token, occur_us) VALUES"
        f" ('{crashed.event_id}', 0x{crashed.leaf.hex()}, '{PERSON}', {to_micros(T0)})",
    )
    store = await cassandra_store(engines, cassandra_keyspace)
    try:
        assert await store.tree_size() == 1
        retry = await store.append(entry("crashed", body=b"retry content"))
        # The claim's content is logged, once, and the retry is told it is a duplicate.
        assert retry.duplicate and retry.leaf_index == 1 and retry.leaf == b"first attempt content"
        assert (await store.append(entry("crashed"))).leaf_index == 1
        assert await store.tree_size() == 2
        assert await root_of(store, 2) == mth([entry("before").leaf, b"first attempt content"])
    finally:
        await store.close()


async def test_cassandra_a_leaf_left_pending_is_finished_by_the_next_appender(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    first = await cassandra_store(engines, cassandra_keyspace)
    await first.append(entry("zero"))
    await first.close()
    await written_before_adr_28(engines, cassandra_keyspace)
    store = await cassandra_store(engines, cassandra_keyspace)
    try:
        # An older version's appender claimed its event and index 1, then died before
        # writing the leaf.
        stuck = entry("stuck")
        database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
        await database.open()
        try:
            await database.execute(
                "INSERT INTO events_by_id (event_id, leaf, person_token, occur_us)"
                " VALUES (?, ?, ?, ?) IF NOT EXISTS",
                (stuck.event_id, stuck.leaf, PERSON, to_micros(T0)),
            )
            applied = await database.execute(
                "UPDATE log_head SET pending_event = ?, pending_leaf = ?, pending_person = ?,"
                " pending_occur_us = ? WHERE id = 0 IF size = 1 AND pending_event = null",
                (stuck.event_id, stuck.leaf, PERSON, to_micros(T0)),
            )
            assert applied[0].applied
        finally:
            await database.close()
        # Another instance (a fresh process) appends: it finishes index 1 first.
        other = await cassandra_store(engines, cassandra_keyspace)
        try:
            nxt = await other.append(entry("next"))
        finally:
            await other.close()
        assert nxt.leaf_index == 2
        again = await store.append(entry("stuck"))
        assert again.duplicate and again.leaf_index == 1
        assert await store.tree_size() == 3
        expected = mth([entry("zero").leaf, stuck.leaf, entry("next").leaf])
        assert await root_of(store, 3) == expected
        listed = await store.list_person_leaves(PERSON, after=None, limit=10)
        assert sorted(leaf.leaf_index for leaf in listed) == [0, 1, 2]
    finally:
        await store.close()


async def test_cassandra_a_log_written_before_adr_28_is_read_from_its_old_tables(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    first = await cassandra_store(engines, cassandra_keyspace)
    await first.append_many([entry(f"old{i}") for i in range(5)])
    await first.close()
    # Move every id and node where versions before ADR 28 kept them.
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    await database.open()
    try:
        ids = await database.execute(
            "SELECT event_id, leaf, person_token, occur_us, leaf_index FROM event_ids", ()
        )
        nodes = await database.execute("SELECT level, node_index, hash FROM node_chunks", ())
        for row in ids:
            await database.execute(
                "INSERT INTO events_by_id (event_id, leaf, person_token, occur_us, leaf_index)"
                " VALUES (?, ?, ?, ?, ?)",
                (row.event_id, row.leaf, row.person_token, row.occur_us, row.leaf_index),
            )
        for row in nodes:
            await database.execute(
                "INSERT INTO nodes (level, node_index, hash) VALUES (?, ?, ?)",
                (row.level, row.node_index, row.hash),
            )
    finally:
        await database.close()
    assert len(ids) == 5 and len(nodes) == 3  # (1, 0), (1, 1), (2, 0): level 0 is never stored
    await written_before_adr_28(
        engines, cassandra_keyspace, "TRUNCATE event_ids", "TRUNCATE node_chunks"
    )
    store = await cassandra_store(engines, cassandra_keyspace)
    try:
        # Old ids are still known (a retry is a duplicate), old nodes still prove.
        again = await store.append(entry("old3"))
        assert again.duplicate and again.leaf_index == 3
        new = await store.append(entry("new"))
        assert (new.leaf_index, new.duplicate) == (5, False)
        leaves = [entry(f"old{i}").leaf for i in range(5)] + [entry("new").leaf]
        assert await root_of(store, 6) == mth(leaves)
        assert await root_of(store, 4) == mth(leaves[:4])
    finally:
        await store.close()


async def test_roots_across_partition_boundaries_match_the_leaves(store: AuditStore) -> None:
    # 4,100 leaves cross Cassandra's first leaf bucket (4,096) and node chunks (1,024): the
    # roots of odd sizes need a level-0 node, which is the hash of a leaf read back.
    leaves = [f"leaf {i}".encode() for i in range(4100)]
    for start in range(0, len(leaves), 1000):
        await store.append_many(
            [entry(f"x{i}", body=leaves[i]) for i in range(start, min(start + 1000, len(leaves)))]
        )
    for size in (1, 1023, 1025, 4095, 4096, 4097, 4099, 4100):
        assert await root_of(store, size) == mth(leaves[:size]), size


async def test_cassandra_stores_no_level_0_node_and_proves_from_the_leaves(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    store = await cassandra_store(engines, cassandra_keyspace)
    try:
        await store.append_many([entry(f"n{i}") for i in range(7)])
        assert await root_of(store, 7) == mth([entry(f"n{i}").leaf for i in range(7)])
    finally:
        await store.close()
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    await database.open()
    try:
        rows = await database.execute("SELECT level, node_index FROM node_chunks", ())
    finally:
        await database.close()
    # Seven leaves complete (1, 0..2), (2, 0): a leaf's own hash is never written (ADR 42).
    assert sorted((row.level, row.node_index) for row in rows) == [(1, 0), (1, 1), (1, 2), (2, 0)]


# --- reading the log in order ----------------------------------------------------------------


async def test_get_leaves_reads_a_range_in_log_order(store: AuditStore) -> None:
    for i in range(6):
        await store.append(entry(f"r{i}"))
    leaves = await store.get_leaves(1, 5, limit=10)
    assert [(leaf.leaf_index, leaf.leaf) for leaf in leaves] == [
        (i, entry(f"r{i}").leaf) for i in range(1, 5)
    ]
    assert [leaf.leaf_index for leaf in await store.get_leaves(0, 6, limit=2)] == [0, 1]
    assert await store.get_leaves(6, 9, limit=10) == []


# --- group commit ---------------------------------------------------------------------------


async def test_append_many_places_a_batch_in_order_and_answers_repeats(store: AuditStore) -> None:
    first = await store.append_many([entry("m0"), entry("m1"), entry("m0"), entry("m2")])
    assert [o.leaf_index for o in first] == [0, 1, 0, 2]
    assert [o.duplicate for o in first] == [False, False, True, False]
    second = await store.append_many([entry("m1"), entry("m3", person=OTHER)])
    assert [(o.leaf_index, o.duplicate) for o in second] == [(1, True), (3, False)]
    assert await store.tree_size() == 4
    leaves = [entry(f"m{i}", person=OTHER if i == 3 else PERSON).leaf for i in range(4)]
    assert await root_of(store, 4) == mth(leaves)
    assert await root_of(store, 3) == mth(leaves[:3])


async def test_concurrent_appends_on_one_instance_are_committed_together_densely(
    store: AuditStore,
) -> None:
    entries = [entry(f"g{i:03}") for i in range(120)]
    outcomes = await asyncio.gather(
        *(store.append(added) for added in entries[:60]), store.append_many(entries[60:])
    )
    singles, batch = outcomes[:60], outcomes[60]
    assert isinstance(batch, list)
    indexes = [o.leaf_index for o in singles] + [o.leaf_index for o in batch]
    assert sorted(indexes) == list(range(120))
    by_index = sorted(zip(indexes, entries, strict=True))
    assert await root_of(store, 120) == mth([added.leaf for _, added in by_index])


async def reserve_and_die(engines: dict[str, str], keyspace: str, stuck: list[LeafEntry]) -> None:
    """What an appender that died right after reserving index 1 for ``stuck`` leaves: its
    batch written aside and the head pending at size 1 (its callers may have their answers)."""
    batch_id = uuid.uuid4()
    database = cassandra_database(engines, keyspace, MIGRATIONS)
    await database.open()
    try:
        await database.execute(
            "INSERT INTO pending_batches (batch_id, leaves) VALUES (?, ?)",
            (batch_id, [(e.event_id, e.leaf, e.person_token, to_micros(T0)) for e in stuck]),
        )
        applied = await database.execute(
            "UPDATE log_head SET pending_batch = ? WHERE id = 0"
            " IF size = 1 AND pending_event = null AND pending_batch = null",
            (batch_id,),
        )
        assert applied[0].applied
    finally:
        await database.close()


async def test_cassandra_a_batch_left_pending_is_finished_by_the_next_appender(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    store = await cassandra_store(engines, cassandra_keyspace)
    try:
        await store.append(entry("zero"))
        stuck = [entry("s1"), entry("s2", person=OTHER)]
        await reserve_and_die(engines, cassandra_keyspace, stuck)
        other = await cassandra_store(engines, cassandra_keyspace)
        try:
            nxt = await other.append(entry("next"))
        finally:
            await other.close()
        assert nxt.leaf_index == 3
        retried = await store.append_many(stuck)
        assert [(o.leaf_index, o.duplicate) for o in retried] == [(1, True), (2, True)]
        assert await store.tree_size() == 4
        expected = mth([entry("zero").leaf, stuck[0].leaf, stuck[1].leaf, entry("next").leaf])
        assert await root_of(store, 4) == expected
    finally:
        await store.close()


async def test_cassandra_a_reader_finishes_a_batch_left_pending(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    # A batch is answered once reserved, so a reader may not wait for the next append: the
    # size it reports, the person listings and the tree include the batch whole.
    store = await cassandra_store(engines, cassandra_keyspace)
    try:
        await store.append(entry("zero"))
        stuck = [entry("s1"), entry("s2", person=OTHER)]
        await reserve_and_die(engines, cassandra_keyspace, stuck)
        listed = await store.list_person_leaves(OTHER, after=None, limit=10)
        assert [leaf.leaf_index for leaf in listed] == [2]
        assert await store.tree_size() == 3
        assert await root_of(store, 3) == mth([entry("zero").leaf, *(e.leaf for e in stuck)])
    finally:
        await store.close()


class _HeadTimesOutOnce(CassandraDatabase):
    """A keyspace whose first lightweight transaction times out, as on a ring just created."""

    timed_out = False

    async def execute(
        self, cql: str, params: Sequence[Any] = (), *, consistency: str | None = None
    ) -> list[Any]:
        if " IF " in cql and not self.timed_out:
            self.timed_out = True
            raise StorageUnavailable("cassandra keyspace audit: WriteTimeout")
        return await super().execute(cql, params, consistency=consistency)


class _SlowLeaves(CassandraDatabase):
    """A keyspace whose unlogged batches (a batch's leaves) take a while to be written."""

    delay_s = 0.5

    async def execute_unlogged(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        *,
        max_statements: int = 50,
        concurrency: int = 8,
    ) -> None:
        await asyncio.sleep(self.delay_s)
        await super().execute_unlogged(
            statements, max_statements=max_statements, concurrency=concurrency
        )


class _SlowLeavesAndAdvance(_SlowLeaves):
    """As :class:`_SlowLeaves`, and a head advanced alone (step 4) lands a while late."""

    async def execute(
        self, cql: str, params: Sequence[Any] = (), *, consistency: str | None = None
    ) -> list[Any]:
        if cql.startswith("UPDATE log_head SET size = ?, pending_batch = null"):
            await asyncio.sleep(0.5)
        return await super().execute(cql, params, consistency=consistency)


def slow_leaves(
    engines: dict[str, str],
    keyspace: str,
    delay_s: float = 0.5,
    kind: type[_SlowLeaves] = _SlowLeaves,
) -> _SlowLeaves:
    """The migrated ``keyspace``, its leaves written ``delay_s`` late."""
    cassandra_database(engines, keyspace, MIGRATIONS)
    slow = kind(
        hosts=engines["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
        port=int(engines["HEALTHBANK_CASSANDRA_PORT"]),
        keyspace=keyspace,
        migrations=MIGRATIONS,
        consistency="ONE",
    )
    slow.delay_s = delay_s
    return slow


async def test_cassandra_an_answered_event_is_in_every_size_and_listing_read_after_it(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    # A batch is answered once reserved, before its leaves are written (ADR 37): a reader,
    # here another instance, finishes it rather than answer a size or listing without it.
    owner = await CassandraAuditStore(slow_leaves(engines, cassandra_keyspace)).open()
    reader = await cassandra_store(engines, cassandra_keyspace)
    try:
        await owner.append(entry("zero"))
        answered = await owner.append(entry("one", person=OTHER))
        assert answered.leaf_index == 1
        listed = await reader.list_person_leaves(OTHER, after=None, limit=10)
        assert [leaf.leaf_index for leaf in listed] == [1]
        assert await reader.tree_size() == 2
        assert await owner.tree_size() == 2
        assert await root_of(reader, 2) == mth(
            [entry("zero").leaf, entry("one", person=OTHER).leaf]
        )
    finally:
        await reader.close()
        await owner.close()


async def test_cassandra_a_head_that_times_out_on_open_is_created_by_the_health_check(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    cassandra_database(engines, cassandra_keyspace, MIGRATIONS)  # migrated, as by migrate
    database = _HeadTimesOutOnce(
        hosts=engines["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
        port=int(engines["HEALTHBANK_CASSANDRA_PORT"]),
        keyspace=cassandra_keyspace,
        migrations=MIGRATIONS,
        consistency="ONE",
    )
    # The service starts (NOT_SERVING until its health check passes) instead of crashing.
    store = await CassandraAuditStore(database).open()
    try:
        assert database.timed_out
        await store.check()
        assert (await store.append(entry("first"))).leaf_index == 0
    finally:
        await store.close()


async def test_cassandra_a_batch_following_another_reserves_with_its_advance(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    # ADR 40: each batch that arrives while the previous one's leaves are being written
    # advances the head past it and reserves itself in one LWT; only the last batch, with
    # no successor, is advanced alone. Two LWTs per batch (before ADR 40) fail here.
    store = await CassandraAuditStore(slow_leaves(engines, cassandra_keyspace, 0.05)).open()
    reader = await cassandra_store(engines, cassandra_keyspace)
    try:
        await store.append(entry("e0"))
        before = counts_now().get(cassandra_keyspace, StatementCounts()).snapshot()
        appends = 8
        for number in range(1, appends + 1):
            answered = await store.append(entry(f"e{number}"))
            assert answered.leaf_index == number
        # Another instance finishes what is still pending: the whole log, dense and whole.
        assert await reader.tree_size() == appends + 1
        await store.close()
        sent = STATEMENT_COUNTS[cassandra_keyspace].since(before)
        # e1..e8: one LWT each; the first one also advanced e0, and e8 is advanced by the
        # other instance's reader or by its own wait for a successor.
        assert sent.lwts <= appends + 2, sent
        leaves = [entry(f"e{number}").leaf for number in range(appends + 1)]
        assert await root_of(reader, appends + 1) == mth(leaves)
    finally:
        await store.close()
        await reader.close()


async def test_cassandra_a_retry_in_the_next_batch_gets_the_first_answer(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    # The next batch reads its ids while the previous batch's rows are still being written
    # (ADR 40): a retry of an event of that batch must still find it, from what this
    # process knows, and not be placed a second time.
    store = await CassandraAuditStore(slow_leaves(engines, cassandra_keyspace, 0.3)).open()
    try:
        # A process's first batch finishes before it answers (it has not seen the head).
        await store.append(entry("zero"))
        first = await store.append(entry("once"))
        retried = await store.append(entry("once"))
        after = await store.append(entry("next"))
        assert (first.leaf_index, first.duplicate) == (1, False)
        assert (retried.leaf_index, retried.duplicate) == (1, True)
        assert after.leaf_index == 2
        assert await store.tree_size() == 3
        leaves = [entry(event_id).leaf for event_id in ("zero", "once", "next")]
        assert await root_of(store, 3) == mth(leaves)
    finally:
        await store.close()


async def test_cassandra_a_reader_is_not_left_waiting_after_a_batch_of_retries(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    # A batch holding only retries of the batch before it places nothing; it still takes
    # over that batch's step 4 (ADR 40) and must release this process's readers waiting
    # for the head to move past it, or they wait forever.
    database = slow_leaves(engines, cassandra_keyspace, 0.2, _SlowLeavesAndAdvance)
    store = await CassandraAuditStore(database).open()
    try:
        await store.append(entry("zero"))
        first = await store.append(entry("once"))
        retry = asyncio.ensure_future(store.append(entry("once")))
        await asyncio.sleep(0.35)  # the leaves are written; the advance is on its way
        assert await asyncio.wait_for(store.tree_size(), timeout=10) == 2
        retried = await retry
        assert (retried.leaf_index, retried.duplicate) == (first.leaf_index, True)
    finally:
        await store.close()
