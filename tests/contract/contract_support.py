"""What the contract suites share: opening store instances of one interface on one backend.

Each suite runs against SQLite and the real Cassandra; several store instances on the same
file or keyspace stand for several processes. A suite names its interface with a
``store_kind`` fixture (a ``StoreKind``); conftest.py then gives it ``stores`` (alias
``backend``), ``open_store``, ``store`` and ``cassandra_keyspace``, and closes what was
opened after the test; the keyspace goes with ``keyspace_prefix``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine_support import cassandra_database

from healthbank.storage.cassandra import CassandraDatabase


@dataclass(frozen=True)
class StoreKind:
    """How to open one store interface: its SQLite and Cassandra classes (``open()`` returns
    the opened store), the SQLite file and the Cassandra concern (keyspace suffix)."""

    sqlite: Callable[[Path], Any]
    sqlite_file: str
    cassandra: Callable[[CassandraDatabase], Any]
    concern: str
    migrations: Sequence[str]


class Stores:
    """Opens stores on the test's backend: ``<data dir>/<file>`` on SQLite, the keyspace
    ``<keyspace_prefix>_<concern>`` on Cassandra."""

    def __init__(
        self,
        kind: StoreKind,
        name: str,
        data_dir: Path,
        keyspace_prefix: str,
        engines: Mapping[str, str] | None,
    ) -> None:
        self.kind = kind
        self.name = name  # "sqlite" or "cassandra"
        self.data_dir = data_dir
        self.keyspace_prefix = keyspace_prefix
        self.engines = engines
        self.opened: list[Any] = []
        # The Cassandra keyspace of the first store, for reaching past the interface.
        self.database: CassandraDatabase | None = None

    async def open_store(self) -> Any:
        """One more store instance on the same data (same file / same keyspace)."""
        kind = self.kind
        if self.name == "sqlite":
            store = await kind.sqlite(self.data_dir / kind.sqlite_file).open()
        else:
            assert self.engines is not None
            keyspace = f"{self.keyspace_prefix}_{kind.concern}"
            database = cassandra_database(self.engines, keyspace, kind.migrations)
            store = await kind.cassandra(database).open()
            if self.database is None:
                self.database = database
        self.opened.append(store)
        return store

    async def count_rows(self, table: str) -> int:
        """Rows of a table, read past the interface (after a store was opened)."""
        if self.database is not None:
            rows = await self.database.execute(f"SELECT count(*) FROM {table}")
            return int(rows[0].count)
        with sqlite3.connect(self.data_dir / self.kind.sqlite_file) as connection:
            (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(count)

    async def close(self) -> None:
        """Close every store opened (the keyspace is dropped by ``keyspace_prefix``)."""
        for store in self.opened:
            await store.close()
