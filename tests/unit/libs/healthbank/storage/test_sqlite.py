"""SqliteDatabase: results leave the database thread as plain values, never as cursors."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from healthbank.storage.errors import StorageUnavailable
from healthbank.storage.sqlite import SqliteDatabase, enable_wal


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "t.db", ["CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)"])
    await db.open()
    yield db
    await db.close()


async def count(db: SqliteDatabase) -> int:
    return int(await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]))


async def test_work_that_hands_back_a_cursor_is_refused_and_its_write_rolled_back(
    database: SqliteDatabase,
) -> None:
    with pytest.raises(TypeError, match="cursor"):
        await database.write(lambda c: c.execute("INSERT INTO t VALUES ('a', 'x')"))
    with pytest.raises(TypeError, match="cursor"):
        await database.read(lambda c: c.execute("SELECT * FROM t"))
    assert await count(database) == 0


async def test_execute_returns_the_rows_changed(database: SqliteDatabase) -> None:
    assert await database.execute("INSERT INTO t VALUES (?, ?)", ("a", "x")) == 1
    assert await database.execute("UPDATE t SET v = ? WHERE k = ?", ("y", "missing")) == 0


async def test_one_statement_run_side_by_side_by_many_callers_never_misuses_sqlite(
    database: SqliteDatabase,
) -> None:
    # The same statement from several callers at once: a cursor freed on the loop thread
    # would reset the statement while the database thread runs it for the next caller.
    async def write(batch: int) -> None:
        rows = [(f"{batch}-{n}", "x" * 50) for n in range(60)]
        await database.execute_many("INSERT OR REPLACE INTO t VALUES (?, ?)", rows)

    for round_number in range(60):
        await asyncio.gather(
            *(write(round_number * 5 + n) for n in range(5)),
            *(count(database) for _ in range(10)),
        )
    assert await count(database) == 60 * 5 * 60


async def test_a_full_database_is_unavailable_and_keeps_nothing_of_the_write(
    database: SqliteDatabase,
) -> None:
    await database.execute("INSERT INTO t VALUES (?, ?)", ("kept", "x"))
    pages = await database.read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    # A real SQLITE_FULL: the file may not grow past the pages it has.
    await database.read(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").close())
    rows = [(f"k{i}", "v" * 2000) for i in range(50)]
    with pytest.raises(StorageUnavailable, match="SQLITE_FULL"):
        await database.execute_many("INSERT INTO t VALUES (?, ?)", rows)
    assert await count(database) == 1
    # Room again (an operator freed space): the same write goes through.
    await database.read(lambda c: c.execute("PRAGMA max_page_count = 1000000").close())
    await database.execute_many("INSERT INTO t VALUES (?, ?)", rows)
    assert await count(database) == 51


async def test_a_database_another_process_holds_is_unavailable(
    database: SqliteDatabase,
) -> None:
    await database.read(lambda c: c.execute("PRAGMA busy_timeout = 50").close())
    holder = sqlite3.connect(database.path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageUnavailable, match="SQLITE_BUSY"):
            await database.execute("INSERT INTO t VALUES (?, ?)", ("a", "x"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await database.execute("INSERT INTO t VALUES (?, ?)", ("a", "x")) == 1


async def test_the_callers_own_errors_go_through_as_raised(database: SqliteDatabase) -> None:
    await database.execute("INSERT INTO t VALUES (?, ?)", ("a", "x"))
    with pytest.raises(sqlite3.IntegrityError):
        await database.execute("INSERT INTO t VALUES (?, ?)", ("a", "y"))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await database.read(lambda c: c.execute("SELECT * FROM missing").fetchall())


class _LockedFor:
    """A connection whose first ``times`` statements find the file locked (as switching a
    new file to WAL can, at once, while another process opens it)."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.left = times
        self.message = message
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if self.left:
            self.left -= 1
            raise sqlite3.OperationalError(self.message)


def test_switching_to_wal_is_retried_while_the_file_is_locked() -> None:
    connection = _LockedFor(3)
    enable_wal(connection, wait_s=5)  # type: ignore[arg-type]
    assert connection.statements == ["PRAGMA journal_mode = WAL"] * 4


def test_a_lock_that_outlasts_the_wait_and_other_errors_are_raised() -> None:
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(_LockedFor(10_000), wait_s=0.05)  # type: ignore[arg-type]
    other = _LockedFor(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        enable_wal(other, wait_s=5)  # type: ignore[arg-type]
    assert len(other.statements) == 1
