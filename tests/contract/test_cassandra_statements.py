"""Statements are prepared once per process however many callers need one at once: 32
requests in flight on a new process must not each send the same PREPARE."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from engine_support import cassandra_database

MIGRATIONS = ["CREATE TABLE IF NOT EXISTS notes (id int PRIMARY KEY, body text)"]


async def test_concurrent_first_uses_of_a_statement_prepare_it_once(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    database = cassandra_database(engines, f"{keyspace_prefix}_prep", MIGRATIONS)
    await database.open()
    prepared: list[str] = []
    release = threading.Event()
    real_prepare = database.session.prepare

    def counted_prepare(cql: str, *args: Any, **kwargs: Any) -> Any:
        prepared.append(cql)
        release.wait(5)  # held, so every caller arrives while the first prepares
        return real_prepare(cql, *args, **kwargs)

    database.session.prepare = counted_prepare  # type: ignore[method-assign]
    try:
        insert = "INSERT INTO notes (id, body) VALUES (?, ?)"
        writes = [asyncio.ensure_future(database.execute(insert, (i, f"n{i}"))) for i in range(32)]
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.gather(*writes)
        rows = await database.execute("SELECT id FROM notes")
        assert sorted(row.id for row in rows) == list(range(32))
        assert prepared.count(insert) == 1
    finally:
        await database.close()


async def test_a_failed_preparation_is_tried_again_by_the_next_caller(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    database = cassandra_database(engines, f"{keyspace_prefix}_prepfail", MIGRATIONS)
    await database.open()
    real_prepare = database.session.prepare
    failures = [RuntimeError("node restarting")]

    def flaky_prepare(cql: str, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_prepare(cql, *args, **kwargs)

    database.session.prepare = flaky_prepare  # type: ignore[method-assign]
    try:
        insert = "INSERT INTO notes (id, body) VALUES (?, ?)"
        with pytest.raises(RuntimeError, match="node restarting"):
            await database.execute(insert, (1, "first"))
        await database.execute(insert, (1, "second"))
        rows = await database.execute("SELECT body FROM notes WHERE id = 1")
        assert [row.body for row in rows] == ["second"]
    finally:
        await database.close()
