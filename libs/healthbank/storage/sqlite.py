"""Embedded storage: one SQLite file per concern under the data directory.

Several service processes share these files (ingest writes records that
record-lookup reads), so every file runs in WAL mode with a busy timeout. All
statements of one database run on one worker thread, so the asyncio loop never
blocks on disk and sqlite3 connections are never shared across threads. Nor are
their cursors: a cursor freed on the loop thread resets its statement, which the
database thread may be running again for another caller at that moment (SQLite
then answers "bad parameter or other API misuse"). So work hands back plain
values only, and a cursor handed back is refused.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from healthbank.storage.errors import StorageRefused, StorageUnavailable

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 30_000


class SqliteDatabase:
    """An SQLite file with ordered, idempotent schema migrations."""

    def __init__(self, path: Path, migrations: Sequence[str]) -> None:
        """Open (creating if needed) the file at ``path``; migrations run in open()."""
        self.path = path
        self._migrations = list(migrations)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Connect and apply pending migrations (each in its own transaction)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        enable_wal(connection)
        # FULL: an acknowledged write survives power loss, not only a crash.
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.row_factory = sqlite3.Row
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
        )
        for version, statement in enumerate(self._migrations, start=1):
            connection.execute("BEGIN IMMEDIATE")
            try:
                done = connection.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone()
                if not done:
                    for part in _split_statements(statement):
                        connection.execute(part)
                    connection.execute(
                        "INSERT INTO schema_migrations (version) VALUES (?)", (version,)
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        self._connection = connection

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (queries only) on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, work, False
        )

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one IMMEDIATE transaction: all of it commits, or none of it."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, work, True
        )

    async def execute(self, sql: str, parameters: Sequence[object] = ()) -> int:
        """Run one writing statement in its own transaction; returns the rows it changed."""
        return await self.write(lambda c: c.execute(sql, parameters).rowcount)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one writing statement once per row, all rows in one transaction."""
        await self.write(lambda c: c.executemany(sql, rows).close())

    def _call(self, work: Callable[[sqlite3.Connection], T], transactional: bool) -> T:
        connection = self._connection
        if connection is None:
            raise RuntimeError(f"database {self.path.name} is not open")
        try:
            if not transactional:
                return _plain(work(connection))
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = _plain(work(connection))
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result
        except sqlite3.OperationalError as error:
            engine_error = _engine_error(self.path.name, error)
            if engine_error is None:
                raise
            raise engine_error from error

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=True)


# SQLite's answers that may pass on retry: another process holds the file past the busy
# timeout, the disk is full or failing. A read-only or unopenable file is the deployment's to
# fix. Other errors (constraints, a bad statement) are the caller's and go through as raised.
_TRANSIENT = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR"})
_REFUSED = frozenset({"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"})


def _engine_error(database: str, error: sqlite3.OperationalError) -> Exception | None:
    """An SQLite failure of the engine itself as a storage error, named by its code (the
    primary code of an extended one: SQLITE_IOERR_WRITE is an SQLITE_IOERR); None if the
    failure is not the engine's."""
    code = getattr(error, "sqlite_errorname", "") or ""
    primary = "_".join(code.split("_")[:2])
    if primary in _TRANSIENT:
        return StorageUnavailable(f"sqlite database {database}: {code}")
    if primary in _REFUSED:
        return StorageRefused(f"sqlite database {database}: {code}", cause="CONFIGURATION")
    return None


def _plain(result: T) -> T:
    """``result``, unless it is a cursor: see the module's docstring for why."""
    if isinstance(result, sqlite3.Cursor):
        result.close()  # here, on the database thread
        raise TypeError("database work returned a cursor; return the rows or values instead")
    return result


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements (migrations hold no literal semicolons)."""
    return [part.strip() for part in script.split(";") if part.strip()]


def enable_wal(connection: sqlite3.Connection, *, wait_s: float = _BUSY_TIMEOUT_MS / 1000) -> None:
    """Switch ``connection``'s file to WAL mode. Services sharing an embedded file open it at
    once; the switch can then answer "database is locked" at once, without waiting on the
    busy timeout (seen when a stack started under load): retried for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
