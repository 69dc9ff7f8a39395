"""ConsentStore on Apache Cassandra (keyspace ``<prefix>_consent``).

Tables, one per query:

- ``grants``: a person's grants, partitioned by person and clustered by grant id
  *descending*. Grant ids are ULIDs, so "newest first" is the clustering order and a page
  after grant id X is the slice ``grant_id < X`` (the page token carries X).
- ``grant_requests``: the idempotency key (person, request id), written only by
  ``INSERT ... IF NOT EXISTS`` with the whole grant in it. The attempt whose claim applies
  writes the grant; any later attempt with the same request id returns the claimed grant,
  writing it first if the claiming attempt died before it could. Grant writes never carry
  ``revoke_time``, so re-writing a grant can never undo a revocation.
- ``grants_by_grantee``: grant ids per (person, grantee hospital), written in one LOGGED
  batch with the grant. Check reads the ids here, then the grants themselves from
  ``grants``: revocation lives in one row only, so a revoked grant is never seen active.
- ``break_glass_sessions``: partitioned by (person, opener) and clustered by expiry, so
  "sessions still open" is a clustering slice.
- ``proxies``: a person's registered proxies, one partition per person; registration is
  ``INSERT ... IF NOT EXISTS`` so the first registration time stays, removal
  ``DELETE ... IF EXISTS``.

Revocation is ``UPDATE ... IF revoke_time = null AND create_time != null``: the first revoke
time stays, and a revoke can never create a grant row that does not exist. Cassandra keeps
timestamps to the millisecond; grants come back from this store truncated to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.coalesced import CoalescedWrites
from healthbank.storage.errors import StorageUnavailable
from services.consent.domain import BreakGlassSession, Grant, Proxy

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS grants (
        person_token text, grant_id text, grantee_hospital_id text, grantee_clinician_id text,
        categories frozen<set<int>>, valid_from timestamp, expire_time timestamp,
        create_time timestamp, revoke_time timestamp, request_id text,
        PRIMARY KEY ((person_token), grant_id)
    ) WITH CLUSTERING ORDER BY (grant_id DESC);
    CREATE TABLE IF NOT EXISTS grant_requests (
        person_token text, request_id text, grant_id text, grantee_hospital_id text,
        grantee_clinician_id text, categories frozen<set<int>>, valid_from timestamp,
        expire_time timestamp, create_time timestamp,
        PRIMARY KEY ((person_token, request_id))
    );
    CREATE TABLE IF NOT EXISTS grants_by_grantee (
        person_token text, grantee_hospital_id text, grant_id text,
        PRIMARY KEY ((person_token, grantee_hospital_id), grant_id)
    );
    CREATE TABLE IF NOT EXISTS break_glass_sessions (
        person_token text, opened_by text, expire_time timestamp, session_id text,
        hospital_id text, open_time timestamp, sealed_justification blob,
        PRIMARY KEY ((person_token, opened_by), expire_time, session_id)
    ) WITH CLUSTERING ORDER BY (expire_time DESC, session_id DESC)
    """,
    """
    CREATE TABLE IF NOT EXISTS proxies (
        person_token text, proxy_id text, create_time timestamp,
        PRIMARY KEY ((person_token), proxy_id)
    )
    """,
]

# Every column but revoke_time, which only the revoke transaction writes.
_GRANT_FIELDS = (
    "person_token, grant_id, grantee_hospital_id, grantee_clinician_id, categories,"
    " valid_from, expire_time, create_time, request_id"
)
_GRANT_COLUMNS = f"{_GRANT_FIELDS}, revoke_time"
_INSERT_GRANT = f"INSERT INTO grants ({_GRANT_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_GRANTEE = (
    "INSERT INTO grants_by_grantee (person_token, grantee_hospital_id, grant_id) VALUES (?, ?, ?)"
)
_CLAIM_REQUEST = (
    "INSERT INTO grant_requests (person_token, request_id, grant_id, grantee_hospital_id,"
    " grantee_clinician_id, categories, valid_from, expire_time, create_time)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
)
_SESSION_COLUMNS = (
    "person_token, opened_by, session_id, hospital_id, open_time, expire_time, sealed_justification"
)

# Ids per IN query when loading a hospital's grants: a patient has few per hospital, but a
# bound keeps one request small whatever happens.
_IN_CHUNK = 100


class CassandraConsentStore:
    """ConsentStore on Cassandra; see the module docstring for the tables."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database
        # Concurrent break-glass sessions are written together (ADR 53).
        self._writes = CoalescedWrites(database)

    async def open(self) -> CassandraConsentStore:
        """Connect (``healthbank migrate`` creates the schema); returns self."""
        await self._db.open()
        return self

    async def create_grant(self, grant: Grant) -> Grant:
        """See ConsentStore.create_grant."""
        grant = _to_millis(grant)
        rows = await self._db.execute(
            _CLAIM_REQUEST,
            (
                grant.person_token,
                grant.request_id,
                grant.grant_id,
                grant.grantee_hospital_id,
                grant.grantee_clinician_id,
                grant.categories,
                grant.valid_from,
                grant.expire_time,
                grant.create_time,
            ),
        )
        claim = rows[0]
        if claim.applied:
            await self._write_grant(grant)
            return grant
        stored = await self.get_grant(grant.person_token, claim.grant_id)
        if stored is not None:
            return stored
        # The claiming attempt died (or is still running) before writing its grant: write
        # the claimed grant; identical values, so racing writers agree.
        claimed = _grant_from_row(claim)
        await self._write_grant(claimed)
        return claimed

    async def _write_grant(self, grant: Grant) -> None:
        await self._db.execute_logged_batch(
            [
                (_INSERT_GRANT, _grant_values(grant)),
                (_INSERT_GRANTEE, (grant.person_token, grant.grantee_hospital_id, grant.grant_id)),
            ]
        )

    async def get_grant(self, person_token: str, grant_id: str) -> Grant | None:
        """See ConsentStore.get_grant."""
        rows = await self._db.execute(
            f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND grant_id = ?",
            (person_token, grant_id),
        )
        return _grant_from_row(rows[0]) if rows else None

    async def grant_for_request(self, person_token: str, request_id: str) -> Grant | None:
        """See ConsentStore.grant_for_request (the claim names the grant; the grant row
        holds its revocation)."""
        claims = await self._db.execute(
            "SELECT grant_id FROM grant_requests WHERE person_token = ? AND request_id = ?",
            (person_token, request_id),
        )
        if not claims:
            return None
        return await self.get_grant(person_token, claims[0].grant_id)

    async def revoke_grant(
        self, person_token: str, grant_id: str, revoke_time: datetime
    ) -> Grant | None:
        """See ConsentStore.revoke_grant."""
        grant = await self.get_grant(person_token, grant_id)
        if grant is None:
            return None
        revoke_time = _millis(revoke_time)
        rows = await self._db.execute(
            "UPDATE grants SET revoke_time = ? WHERE person_token = ? AND grant_id = ?"
            " IF revoke_time = null AND create_time != null",
            (revoke_time, person_token, grant_id),
        )
        outcome = rows[0]
        if outcome.applied:
            return replace(grant, revoke_time=revoke_time)
        if outcome.revoke_time is None:
            # The serial read did not see the row we just read: it has not reached a quorum
            # of replicas yet (written below the configured consistency). Retrying helps.
            raise StorageUnavailable(f"cassandra keyspace {self._db.keyspace}: grant not settled")
        return replace(grant, revoke_time=_utc(outcome.revoke_time))

    async def list_grants(
        self, person_token: str, limit: int, before_grant_id: str | None = None
    ) -> list[Grant]:
        """See ConsentStore.list_grants (a clustering slice, newest first)."""
        if before_grant_id is None:
            rows = await self._db.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? LIMIT ?",
                (person_token, limit),
            )
        else:
            rows = await self._db.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND grant_id < ?"
                " LIMIT ?",
                (person_token, before_grant_id, limit),
            )
        return [_grant_from_row(row) for row in rows]

    async def grants_for_hospital(self, person_token: str, hospital_id: str) -> list[Grant]:
        """See ConsentStore.grants_for_hospital."""
        pointers = await self._db.execute(
            "SELECT grant_id FROM grants_by_grantee"
            " WHERE person_token = ? AND grantee_hospital_id = ?",
            (person_token, hospital_id),
        )
        grant_ids = [row.grant_id for row in pointers]
        grants: list[Grant] = []
        for start in range(0, len(grant_ids), _IN_CHUNK):
            rows = await self._db.execute(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE person_token = ? AND grant_id IN ?",
                (person_token, grant_ids[start : start + _IN_CHUNK]),
            )
            grants.extend(_grant_from_row(row) for row in rows)
        return grants

    async def add_break_glass(self, session: BreakGlassSession) -> None:
        """See ConsentStore.add_break_glass."""
        await self._writes.apply(
            [
                (
                    f"INSERT INTO break_glass_sessions ({_SESSION_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        session.person_token,
                        session.opened_by,
                        session.session_id,
                        session.hospital_id,
                        session.open_time,
                        session.expire_time,
                        session.sealed_justification,
                    ),
                )
            ]
        )

    async def break_glass_sessions(
        self, person_token: str, opened_by: str, expiring_after: datetime
    ) -> list[BreakGlassSession]:
        """See ConsentStore.break_glass_sessions (a clustering slice on expiry)."""
        rows = await self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM break_glass_sessions"
            " WHERE person_token = ? AND opened_by = ? AND expire_time > ?",
            (person_token, opened_by, expiring_after),
        )
        return [
            BreakGlassSession(
                session_id=row.session_id,
                person_token=row.person_token,
                opened_by=row.opened_by,
                hospital_id=row.hospital_id,
                open_time=_utc(row.open_time),
                expire_time=_utc(row.expire_time),
                sealed_justification=row.sealed_justification,
            )
            for row in rows
        ]

    async def add_proxy(self, proxy: Proxy) -> Proxy:
        """See ConsentStore.add_proxy."""
        create_time = _millis(proxy.create_time)
        rows = await self._db.execute(
            "INSERT INTO proxies (person_token, proxy_id, create_time) VALUES (?, ?, ?)"
            " IF NOT EXISTS",
            (proxy.person_token, proxy.proxy_id, create_time),
        )
        outcome = rows[0]
        if outcome.applied:
            return replace(proxy, create_time=create_time)
        return _proxy_from_row(outcome)

    async def get_proxy(self, person_token: str, proxy_id: str) -> Proxy | None:
        """See ConsentStore.get_proxy."""
        rows = await self._db.execute(
            f"SELECT {_PROXY_COLUMNS} FROM proxies WHERE person_token = ? AND proxy_id = ?",
            (person_token, proxy_id),
        )
        return _proxy_from_row(rows[0]) if rows else None

    async def remove_proxy(self, person_token: str, proxy_id: str) -> None:
        """See ConsentStore.remove_proxy (a lightweight transaction like the registration:
        mixing Paxos and plain writes on one row can order them wrongly)."""
        await self._db.execute(
            "DELETE FROM proxies WHERE person_token = ? AND proxy_id = ? IF EXISTS",
            (person_token, proxy_id),
        )

    async def list_proxies(self, person_token: str) -> list[Proxy]:
        """See ConsentStore.list_proxies (one partition, ordered here by registration)."""
        rows = await self._db.execute(
            f"SELECT {_PROXY_COLUMNS} FROM proxies WHERE person_token = ?", (person_token,)
        )
        proxies = [_proxy_from_row(row) for row in rows]
        return sorted(proxies, key=lambda proxy: (proxy.create_time, proxy.proxy_id))

    async def check(self) -> None:
        """See ConsentStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See ConsentStore.close."""
        await self._db.close()


_PROXY_COLUMNS = "person_token, proxy_id, create_time"


def _proxy_from_row(row: Any) -> Proxy:
    return Proxy(
        person_token=row.person_token, proxy_id=row.proxy_id, create_time=_utc(row.create_time)
    )


def _grant_values(grant: Grant) -> Sequence[Any]:
    return (
        grant.person_token,
        grant.grant_id,
        grant.grantee_hospital_id,
        grant.grantee_clinician_id,
        grant.categories,
        grant.valid_from,
        grant.expire_time,
        grant.create_time,
        grant.request_id,
    )


def _grant_from_row(row: Any) -> Grant:
    """A Grant from a ``grants`` row, or from a ``grant_requests`` row (never revoked)."""
    revoke_time = getattr(row, "revoke_time", None)
    return Grant(
        grant_id=row.grant_id,
        person_token=row.person_token,
        grantee_hospital_id=row.grantee_hospital_id,
        grantee_clinician_id=row.grantee_clinician_id,
        categories=frozenset(row.categories or ()),
        valid_from=_utc(row.valid_from),
        expire_time=_utc(row.expire_time),
        create_time=_utc(row.create_time),
        request_id=row.request_id,
        revoke_time=None if revoke_time is None else _utc(revoke_time),
    )


def _to_millis(grant: Grant) -> Grant:
    """The grant as this store keeps it: every time truncated to the millisecond."""
    return replace(
        grant,
        valid_from=_millis(grant.valid_from),
        expire_time=_millis(grant.expire_time),
        create_time=_millis(grant.create_time),
        revoke_time=None if grant.revoke_time is None else _millis(grant.revoke_time),
    )


def _millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _utc(moment: datetime) -> datetime:
    """The driver returns naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
