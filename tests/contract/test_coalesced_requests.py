"""Concurrent single-partition requests leave together (healthbank.storage.coalesced, ADR 53),
and each caller still gets exactly its own rows, or the error of the request it was in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from engine_support import cassandra_database

from healthbank.storage.cassandra import STATEMENT_COUNTS, CassandraDatabase, StatementCounts
from healthbank.storage.coalesced import CoalescedReads, CoalescedWrites
from healthbank.storage.errors import StorageRefused

MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS cells (shelf text, slot text, item int, body text,"
    " PRIMARY KEY ((shelf, slot), item))"
]
READ = "SELECT shelf, slot, item, body FROM cells WHERE shelf = ? AND slot IN ?"
WRITE = "INSERT INTO cells (shelf, slot, item, body) VALUES (?, ?, ?, ?)"


@pytest.fixture
async def database(
    engines: dict[str, str], keyspace_prefix: str
) -> AsyncIterator[CassandraDatabase]:
    db = cassandra_database(engines, f"{keyspace_prefix}_coalesced", MIGRATIONS)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def _requests(db: CassandraDatabase) -> int:
    return STATEMENT_COUNTS.get(db.keyspace, StatementCounts()).requests


def _reads(db: CassandraDatabase) -> CoalescedReads:
    return CoalescedReads(db, READ, lambda row: (row.shelf, row.slot), max_keys=10)


async def test_concurrent_writes_leave_in_one_batch(
    database: CassandraDatabase,
) -> None:
    writes = CoalescedWrites(database, max_writes=32)
    before = _requests(database)
    # Thirty callers at once, two rows each (two partitions): one batch. (Callers arriving
    # while a batch is in flight would wait for it and leave together in the next.)
    await asyncio.gather(
        *(
            writes.apply([(WRITE, ("a", f"s{n}", 1, f"a{n}")), (WRITE, ("b", f"s{n}", 2, f"b{n}"))])
            for n in range(30)
        )
    )
    assert _requests(database) - before == 1
    rows = await database.execute("SELECT shelf, slot, item, body FROM cells")
    assert sorted((r.shelf, r.slot, r.item, r.body) for r in rows) == sorted(
        [("a", f"s{n}", 1, f"a{n}") for n in range(30)]
        + [("b", f"s{n}", 2, f"b{n}") for n in range(30)]
    )


async def test_each_reader_gets_its_own_partitions_rows_and_nothing_else(
    database: CassandraDatabase,
) -> None:
    await database.execute_batch(
        [
            (WRITE, (shelf, f"s{n}", item, f"{shelf}{n}.{item}"))
            for shelf in "ab"
            for n in range(25)
            for item in range(n % 3)
        ]
    )
    reads = _reads(database)
    wanted = [(shelf, f"s{n}") for n in range(25) for shelf in "ab"] + [("a", "missing")]
    before = _requests(database)
    found = await asyncio.gather(*(reads.rows(*key) for key in wanted))
    for (shelf, slot), rows in zip(wanted, found, strict=True):
        items = range(0) if slot == "missing" else range(int(slot[1:]) % 3)
        assert [(r.shelf, r.slot, r.item, r.body) for r in rows] == [
            (shelf, slot, item, f"{shelf}{slot[1:]}.{item}") for item in items
        ]
    # 51 keys by shelf (two groups: 26 and 25 keys), ten a request.
    assert _requests(database) - before == 3 + 3
    # Several partitions of one caller, in its order, duplicates included.
    both = await reads.rows_of_each([("b", "s5"), ("a", "s4"), ("b", "s5")])
    assert [[r.body for r in rows] for rows in both] == [
        ["b5.0", "b5.1"],
        ["a4.0"],
        ["b5.0", "b5.1"],
    ]


async def test_a_refused_request_fails_every_caller_it_carried_and_no_other(
    database: CassandraDatabase,
) -> None:
    writes = CoalescedWrites(database)
    await writes.apply([(WRITE, ("a", "before", 1, "ok"))])
    # A column the table lacks: the node refuses the batch that carries it.
    refused = (
        "INSERT INTO cells (shelf, slot, item, colour) VALUES (?, ?, ?, ?)",
        ("a", "x", 1, "red"),
    )
    outcomes = await asyncio.gather(
        writes.apply([(WRITE, ("a", "beside", 1, "ok"))]),
        writes.apply([refused]),
        return_exceptions=True,
    )
    assert [type(outcome) for outcome in outcomes] == [StorageRefused, StorageRefused]
    await writes.apply([(WRITE, ("a", "after", 1, "ok"))])
    rows = await database.execute("SELECT slot FROM cells")
    assert sorted(row.slot for row in rows) == ["after", "before"]
