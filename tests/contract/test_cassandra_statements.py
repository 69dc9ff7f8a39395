"""Statements are prepared once per process however many callers need one at once: 32
requests in flight on a new process must not each send the same PREPARE. Each request
to the node is a span of the call's trace, naming the table, never a value."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from engine_support import cassandra_database
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from healthbank.core import telemetry
from healthbank.storage.cassandra import operation_and_table

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


async def test_each_request_is_a_span_of_the_recorded_call_naming_its_table_never_a_value(
    engines: dict[str, str], keyspace_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_TRACER", provider.get_tracer("test"))
    database = cassandra_database(engines, f"{keyspace_prefix}_spans", MIGRATIONS)
    await database.open()
    secret = "Zhang San 13800138000"
    try:
        insert = "INSERT INTO notes (id, body) VALUES (?, ?)"
        # Outside any recorded call: no span (a child would not be recorded either).
        await database.execute(insert, (1, secret))
        assert exporter.get_finished_spans() == ()
        unrecorded = TracerProvider(sampler=ALWAYS_OFF).get_tracer("off")
        with unrecorded.start_as_current_span("sampled out"):
            await database.execute("SELECT body FROM notes WHERE id = ?", (1,))
        assert exporter.get_finished_spans() == ()

        with provider.get_tracer("test").start_as_current_span("call") as call:
            rows = await database.execute("SELECT body FROM notes WHERE id = ?", (1,))
            await database.execute_batch([(insert, (2, secret)), (insert, (3, secret))])
            await database.execute(
                "INSERT INTO notes (id, body) VALUES (?, ?) IF NOT EXISTS", (1, secret)
            )
        assert [row.body for row in rows] == [secret]
        select, batch, lwt = exporter.get_finished_spans()[:3]
        assert [select.name, batch.name, lwt.name] == [
            "SELECT notes",
            "BATCH notes",
            "INSERT notes",
        ]
        for span in (select, batch, lwt):
            assert span.parent is not None
            assert span.parent.span_id == call.get_span_context().span_id
            assert span.attributes is not None
            assert span.attributes["db.system"] == "cassandra"
            assert span.attributes["db.namespace"] == database.keyspace
            assert span.attributes["db.collection.name"] == "notes"
            assert all(secret not in str(value) for value in span.attributes.values())
        assert select.attributes is not None and select.attributes["db.response.returned_rows"] == 1
        assert select.attributes["db.operation.name"] == "SELECT"
        assert select.attributes["healthbank.lwt"] is False
        assert batch.attributes is not None and batch.attributes["db.operation.batch.size"] == 2
        assert lwt.attributes is not None and lwt.attributes["healthbank.lwt"] is True
    finally:
        await database.close()


def test_a_statement_is_named_by_its_operation_and_table() -> None:
    assert operation_and_table("SELECT a, b FROM records WHERE x = ?") == ("SELECT", "records")
    assert operation_and_table("  insert into receipts (a) VALUES (?)") == ("INSERT", "receipts")
    assert operation_and_table("UPDATE log_head SET size = ? WHERE id = ? IF size = ?") == (
        "UPDATE",
        "log_head",
    )
    assert operation_and_table("DELETE source FROM records WHERE a = ?") == ("DELETE", "records")
    assert operation_and_table("SELECT release_version FROM system.local") == (
        "SELECT",
        "system.local",
    )
    assert operation_and_table("TRUNCATE notes") == ("TRUNCATE", "")
