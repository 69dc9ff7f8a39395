"""What the consent service persists: grants, break-glass sessions, proxy registrations,
request-id idempotency.

:class:`ConsentStore` is the backend-neutral interface; :class:`SqliteConsentStore` is the
embedded implementation (``consent.db`` in the data dir);
:class:`~services.consent.store_cassandra.CassandraConsentStore` gives each method's query its
own table (grants clustered newest first, request ids claimed by ``INSERT ... IF NOT
EXISTS``, revocation by ``IF revoke_time = null``). The contract suite in
tests/contract/test_consent_store_contract.py holds both to the same behaviour.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Protocol

from healthbank.records import from_micros, to_micros
from healthbank.storage.sqlite import SqliteDatabase
from services.consent.domain import BreakGlassSession, Grant, Proxy


class ConsentStore(Protocol):
    """Persistence of grants and break-glass sessions, keyed by person token."""

    async def create_grant(self, grant: Grant) -> Grant:
        """Store ``grant`` unless its person already has a grant with the same request id.

        Returns the stored grant: ``grant`` itself, or the one created first for that
        request id (so client retries never create a second grant).
        """
        ...

    async def get_grant(self, person_token: str, grant_id: str) -> Grant | None:
        """The grant, or None if the person has no grant with that id."""
        ...

    async def grant_for_request(self, person_token: str, request_id: str) -> Grant | None:
        """The grant the person's request id created, or None if it created none yet."""
        ...

    async def revoke_grant(
        self, person_token: str, grant_id: str, revoke_time: datetime
    ) -> Grant | None:
        """Mark the grant revoked at ``revoke_time`` unless it already is; return it.

        Returns None when there is no such grant. A second revoke keeps the first time.
        """
        ...

    async def list_grants(
        self, person_token: str, limit: int, before_grant_id: str | None = None
    ) -> list[Grant]:
        """Up to ``limit`` grants of the person, newest first, older than ``before_grant_id``."""
        ...

    async def grants_for_hospital(self, person_token: str, hospital_id: str) -> list[Grant]:
        """Every grant (in any state) of the person naming ``hospital_id`` as grantee."""
        ...

    async def add_break_glass(self, session: BreakGlassSession) -> None:
        """Store a new break-glass session."""
        ...

    async def break_glass_sessions(
        self, person_token: str, opened_by: str, expiring_after: datetime
    ) -> list[BreakGlassSession]:
        """Sessions for the person opened by ``opened_by`` that end after ``expiring_after``."""
        ...

    async def add_proxy(self, proxy: Proxy) -> Proxy:
        """Register ``proxy`` unless the person has that proxy already; the stored one."""
        ...

    async def get_proxy(self, person_token: str, proxy_id: str) -> Proxy | None:
        """The person's registration of ``proxy_id``, or None."""
        ...

    async def remove_proxy(self, person_token: str, proxy_id: str) -> None:
        """Remove the registration (nothing happens if there is none)."""
        ...

    async def list_proxies(self, person_token: str) -> list[Proxy]:
        """The person's proxies, oldest registration first."""
        ...

    async def check(self) -> None:
        """Return if the store is usable; raise if it is not."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


_SQLITE_MIGRATIONS = [
    """
    CREATE TABLE grants (
        person_token TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        grantee_hospital_id TEXT NOT NULL,
        grantee_clinician_id TEXT NOT NULL,
        categories TEXT NOT NULL,
        valid_from INTEGER NOT NULL,
        expire_time INTEGER NOT NULL,
        create_time INTEGER NOT NULL,
        revoke_time INTEGER,
        request_id TEXT NOT NULL,
        PRIMARY KEY (person_token, grant_id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX grants_by_request ON grants (person_token, request_id);
    CREATE INDEX grants_by_grantee ON grants (person_token, grantee_hospital_id);
    CREATE TABLE break_glass_sessions (
        person_token TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        session_id TEXT NOT NULL,
        hospital_id TEXT NOT NULL,
        open_time INTEGER NOT NULL,
        expire_time INTEGER NOT NULL,
        sealed_justification BLOB NOT NULL,
        PRIMARY KEY (person_token, opened_by, session_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE proxies (
        person_token TEXT NOT NULL,
        proxy_id TEXT NOT NULL,
        create_time INTEGER NOT NULL,
        PRIMARY KEY (person_token, proxy_id)
    ) WITHOUT ROWID
    """,
]

_GRANT_COLUMNS = (
    "person_token, grant_id, grantee_hospital_id, grantee_clinician_id, categories, "
    "valid_from, expire_time, create_time, revoke_time, request_id"
)


class SqliteConsentStore:
    """ConsentStore on an embedded SQLite file."""

    def __init__(self, path: Path) -> None:
        """Use the file at ``path``; call open() before use."""
        self._db = SqliteDatabase(path, _SQLITE_MIGRATIONS)

    async def open(self) -> SqliteConsentStore:
        """Open the file and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def create_grant(self, grant: Grant) -> Grant:
        """See ConsentStore.create_grant."""

        def work(connection: sqlite3.Connection) -> Grant:
            existing = connection.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND request_id = ?",
                (grant.person_token, grant.request_id),
            ).fetchone()
            if existing is not None:
                return _grant_from_row(existing)
            connection.execute(
                f"INSERT INTO grants ({_GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _grant_row(grant),
            )
            return grant

        return await self._db.write(work)

    async def get_grant(self, person_token: str, grant_id: str) -> Grant | None:
        """See ConsentStore.get_grant."""

        def work(connection: sqlite3.Connection) -> Grant | None:
            row = connection.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND grant_id = ?",
                (person_token, grant_id),
            ).fetchone()
            return None if row is None else _grant_from_row(row)

        return await self._db.read(work)

    async def grant_for_request(self, person_token: str, request_id: str) -> Grant | None:
        """See ConsentStore.grant_for_request."""

        def work(connection: sqlite3.Connection) -> Grant | None:
            row = connection.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND request_id = ?",
                (person_token, request_id),
            ).fetchone()
            return None if row is None else _grant_from_row(row)

        return await self._db.read(work)

    async def revoke_grant(
        self, person_token: str, grant_id: str, revoke_time: datetime
    ) -> Grant | None:
        """See ConsentStore.revoke_grant."""

        def work(connection: sqlite3.Connection) -> Grant | None:
            connection.execute(
                "UPDATE grants SET revoke_time = ? "
                "WHERE person_token = ? AND grant_id = ? AND revoke_time IS NULL",
                (to_micros(revoke_time), person_token, grant_id),
            )
            row = connection.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND grant_id = ?",
                (person_token, grant_id),
            ).fetchone()
            return None if row is None else _grant_from_row(row)

        return await self._db.write(work)

    async def list_grants(
        self, person_token: str, limit: int, before_grant_id: str | None = None
    ) -> list[Grant]:
        """See ConsentStore.list_grants."""

        def work(connection: sqlite3.Connection) -> list[Grant]:
            if before_grant_id is None:
                rows = connection.execute(
                    f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? "
                    "ORDER BY grant_id DESC LIMIT ?",
                    (person_token, limit),
                ).fetchall()
            else:
                rows = connection.execute(
                    f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND grant_id < ? "
                    "ORDER BY grant_id DESC LIMIT ?",
                    (person_token, before_grant_id, limit),
                ).fetchall()
            return [_grant_from_row(row) for row in rows]

        return await self._db.read(work)

    async def grants_for_hospital(self, person_token: str, hospital_id: str) -> list[Grant]:
        """See ConsentStore.grants_for_hospital."""

        def work(connection: sqlite3.Connection) -> list[Grant]:
            rows = connection.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants "
                "WHERE person_token = ? AND grantee_hospital_id = ?",
                (person_token, hospital_id),
            ).fetchall()
            return [_grant_from_row(row) for row in rows]

        return await self._db.read(work)

    async def add_break_glass(self, session: BreakGlassSession) -> None:
        """See ConsentStore.add_break_glass."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO break_glass_sessions (person_token, opened_by, session_id, "
                "hospital_id, open_time, expire_time, sealed_justification) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.person_token,
                    session.opened_by,
                    session.session_id,
                    session.hospital_id,
                    to_micros(session.open_time),
                    to_micros(session.expire_time),
                    session.sealed_justification,
                ),
            )

        await self._db.write(work)

    async def break_glass_sessions(
        self, person_token: str, opened_by: str, expiring_after: datetime
    ) -> list[BreakGlassSession]:
        """See ConsentStore.break_glass_sessions."""

        def work(connection: sqlite3.Connection) -> list[BreakGlassSession]:
            rows = connection.execute(
                "SELECT person_token, opened_by, session_id, hospital_id, open_time, "
                "expire_time, sealed_justification FROM break_glass_sessions "
                "WHERE person_token = ? AND opened_by = ? AND expire_time > ?",
                (person_token, opened_by, to_micros(expiring_after)),
            ).fetchall()
            return [
                BreakGlassSession(
                    session_id=row["session_id"],
                    person_token=row["person_token"],
                    opened_by=row["opened_by"],
                    hospital_id=row["hospital_id"],
                    open_time=from_micros(row["open_time"]),
                    expire_time=from_micros(row["expire_time"]),
                    sealed_justification=bytes(row["sealed_justification"]),
                )
                for row in rows
            ]

        return await self._db.read(work)

    async def add_proxy(self, proxy: Proxy) -> Proxy:
        """See ConsentStore.add_proxy."""

        def work(connection: sqlite3.Connection) -> Proxy:
            connection.execute(
                "INSERT OR IGNORE INTO proxies (person_token, proxy_id, create_time) "
                "VALUES (?, ?, ?)",
                (proxy.person_token, proxy.proxy_id, to_micros(proxy.create_time)),
            )
            row = connection.execute(
                f"SELECT {_PROXY_COLUMNS} FROM proxies WHERE person_token = ? AND proxy_id = ?",
                (proxy.person_token, proxy.proxy_id),
            ).fetchone()
            return _proxy_from_row(row)

        return await self._db.write(work)

    async def get_proxy(self, person_token: str, proxy_id: str) -> Proxy | None:
        """See ConsentStore.get_proxy."""

        def work(connection: sqlite3.Connection) -> Proxy | None:
            row = connection.execute(
                f"SELECT {_PROXY_COLUMNS} FROM proxies WHERE person_token = ? AND proxy_id = ?",
                (person_token, proxy_id),
            ).fetchone()
            return None if row is None else _proxy_from_row(row)

        return await self._db.read(work)

    async def remove_proxy(self, person_token: str, proxy_id: str) -> None:
        """See ConsentStore.remove_proxy."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "DELETE FROM proxies WHERE person_token = ? AND proxy_id = ?",
                (person_token, proxy_id),
            )

        await self._db.write(work)

    async def list_proxies(self, person_token: str) -> list[Proxy]:
        """See ConsentStore.list_proxies."""

        def work(connection: sqlite3.Connection) -> list[Proxy]:
            rows = connection.execute(
                f"SELECT {_PROXY_COLUMNS} FROM proxies WHERE person_token = ? "
                "ORDER BY create_time, proxy_id",
                (person_token,),
            ).fetchall()
            return [_proxy_from_row(row) for row in rows]

        return await self._db.read(work)

    async def check(self) -> None:
        """See ConsentStore.check."""
        await self._db.read(lambda connection: connection.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See ConsentStore.close."""
        await self._db.close()


_PROXY_COLUMNS = "person_token, proxy_id, create_time"


def _proxy_from_row(row: sqlite3.Row) -> Proxy:
    return Proxy(
        person_token=row["person_token"],
        proxy_id=row["proxy_id"],
        create_time=from_micros(row["create_time"]),
    )


def _grant_row(grant: Grant) -> tuple[object, ...]:
    return (
        grant.person_token,
        grant.grant_id,
        grant.grantee_hospital_id,
        grant.grantee_clinician_id,
        ",".join(str(category) for category in sorted(grant.categories)),
        to_micros(grant.valid_from),
        to_micros(grant.expire_time),
        to_micros(grant.create_time),
        None if grant.revoke_time is None else to_micros(grant.revoke_time),
        grant.request_id,
    )


def _grant_from_row(row: sqlite3.Row) -> Grant:
    categories = row["categories"]
    revoke_time = row["revoke_time"]
    return Grant(
        grant_id=row["grant_id"],
        person_token=row["person_token"],
        grantee_hospital_id=row["grantee_hospital_id"],
        grantee_clinician_id=row["grantee_clinician_id"],
        categories=frozenset(int(part) for part in categories.split(",") if part),
        valid_from=from_micros(row["valid_from"]),
        expire_time=from_micros(row["expire_time"]),
        create_time=from_micros(row["create_time"]),
        request_id=row["request_id"],
        revoke_time=None if revoke_time is None else from_micros(revoke_time),
    )
