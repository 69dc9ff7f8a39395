"""What the identity service persists: persons (by token) and hospital record-number links.

:class:`IdentityStore` is the backend-neutral interface; :class:`SqliteIdentityStore` is the
embedded implementation (``identity.db`` in the data dir). Uniqueness rests on two
conditional inserts, :meth:`~IdentityStore.create_person_if_absent` and
:meth:`~IdentityStore.link_mrn_if_absent`, which map one-to-one onto Cassandra lightweight
transactions (``INSERT ... IF NOT EXISTS``) on the person row and on the (hospital, MRN) row
in :class:`~services.identity.store_cassandra.CassandraIdentityStore`. The contract suite in
tests/contract/test_identity_store_contract.py holds both backends to the same behaviour.
No national ID number is ever given to the store: only person tokens.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Protocol

from healthbank.records import to_micros
from healthbank.storage.sqlite import SqliteDatabase
from services.identity.domain import HospitalLink


class IdentityStore(Protocol):
    """Persistence of the master patient index."""

    async def create_person_if_absent(
        self, person_token: str, sealed_demographics: bytes | None, create_time: datetime
    ) -> bool:
        """Create the person unless it exists; True if this call created it."""
        ...

    async def person_exists(self, person_token: str) -> bool:
        """True if the person is in the index."""
        ...

    async def link_mrn_if_absent(
        self, hospital_id: str, mrn: str, person_token: str, link_time: datetime
    ) -> str:
        """Link (hospital, MRN) to the person unless it is linked already.

        Returns the person token the link points to after the call: ``person_token``, or the
        token an earlier (possibly concurrent) call linked it to.
        """
        ...

    async def linked_person(self, hospital_id: str, mrn: str) -> str | None:
        """The person token (hospital, MRN) is linked to, or None."""
        ...

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """The person's hospital record numbers, ordered by hospital then MRN."""
        ...

    async def check(self) -> None:
        """Return if the store is usable; raise if it is not."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE persons (
        person_token TEXT PRIMARY KEY,
        sealed_demographics BLOB,
        create_time INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE mrn_links (
        hospital_id TEXT NOT NULL,
        mrn TEXT NOT NULL,
        person_token TEXT NOT NULL REFERENCES persons (person_token),
        link_time INTEGER NOT NULL,
        PRIMARY KEY (hospital_id, mrn)
    ) WITHOUT ROWID;
    CREATE INDEX mrn_links_by_person ON mrn_links (person_token, hospital_id, mrn)
    """,
]


class SqliteIdentityStore:
    """IdentityStore on an embedded SQLite file."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteIdentityStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def create_person_if_absent(
        self, person_token: str, sealed_demographics: bytes | None, create_time: datetime
    ) -> bool:
        """See IdentityStore.create_person_if_absent."""

        def work(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO persons (person_token, sealed_demographics, create_time) "
                "VALUES (?, ?, ?)",
                (person_token, sealed_demographics, to_micros(create_time)),
            )
            return cursor.rowcount == 1

        return await self._db.write(work)

    async def person_exists(self, person_token: str) -> bool:
        """See IdentityStore.person_exists."""

        def work(connection: sqlite3.Connection) -> bool:
            row = connection.execute(
                "SELECT 1 FROM persons WHERE person_token = ?", (person_token,)
            ).fetchone()
            return row is not None

        return await self._db.read(work)

    async def link_mrn_if_absent(
        self, hospital_id: str, mrn: str, person_token: str, link_time: datetime
    ) -> str:
        """See IdentityStore.link_mrn_if_absent."""

        def work(connection: sqlite3.Connection) -> str:
            connection.execute(
                "INSERT OR IGNORE INTO mrn_links (hospital_id, mrn, person_token, link_time) "
                "VALUES (?, ?, ?, ?)",
                (hospital_id, mrn, person_token, to_micros(link_time)),
            )
            row = connection.execute(
                "SELECT person_token FROM mrn_links WHERE hospital_id = ? AND mrn = ?",
                (hospital_id, mrn),
            ).fetchone()
            linked: str = row["person_token"]
            return linked

        return await self._db.write(work)

    async def linked_person(self, hospital_id: str, mrn: str) -> str | None:
        """See IdentityStore.linked_person."""

        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT person_token FROM mrn_links WHERE hospital_id = ? AND mrn = ?",
                (hospital_id, mrn),
            ).fetchone()
            return None if row is None else str(row["person_token"])

        return await self._db.read(work)

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """See IdentityStore.links_of."""

        def work(connection: sqlite3.Connection) -> list[HospitalLink]:
            rows = connection.execute(
                "SELECT hospital_id, mrn FROM mrn_links WHERE person_token = ? "
                "ORDER BY hospital_id, mrn",
                (person_token,),
            ).fetchall()
            return [HospitalLink(row["hospital_id"], row["mrn"]) for row in rows]

        return await self._db.read(work)

    async def check(self) -> None:
        """See IdentityStore.check."""
        await self._db.read(lambda connection: connection.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See IdentityStore.close."""
        await self._db.close()
