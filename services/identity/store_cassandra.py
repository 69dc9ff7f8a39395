"""IdentityStore on Apache Cassandra (keyspace ``<prefix>_identity``).

Tables, one per query:

- ``persons``: one row per person token, created only by ``INSERT ... IF NOT EXISTS``, so
  concurrent resolves of one national ID (in any number of processes) create it once.
- ``mrn_links``: the (hospital, MRN) → person link, partitioned by (hospital, MRN) and
  created only by ``INSERT ... IF NOT EXISTS``: the first link wins and never moves.
- ``person_links``: the same links partitioned by person and clustered by (hospital, MRN),
  for GetPerson. It is a copy written after the link's lightweight transaction; the link row
  carries ``listed = true`` once its copy exists, and whoever next finds the link unlisted
  (a crash between the two writes) writes the copy again. Copies are idempotent upserts.

Only person tokens reach this store, never national ID numbers; demographics arrive sealed.
"""

from __future__ import annotations

from datetime import datetime

from healthbank.storage.cassandra import CassandraDatabase
from services.identity.domain import HospitalLink

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS persons (
        person_token text PRIMARY KEY,
        sealed_demographics blob,
        create_time timestamp
    );
    CREATE TABLE IF NOT EXISTS mrn_links (
        hospital_id text, mrn text, person_token text, link_time timestamp, listed boolean,
        PRIMARY KEY ((hospital_id, mrn))
    );
    CREATE TABLE IF NOT EXISTS person_links (
        person_token text, hospital_id text, mrn text, link_time timestamp,
        PRIMARY KEY ((person_token), hospital_id, mrn)
    ) WITH CLUSTERING ORDER BY (hospital_id ASC, mrn ASC)
    """,
]

# Two forms so a person without demographics gets no null cell (a tombstone) at all.
_CREATE_PERSON = (
    "INSERT INTO persons (person_token, sealed_demographics, create_time) VALUES (?, ?, ?)"
    " IF NOT EXISTS"
)
_CREATE_BARE_PERSON = "INSERT INTO persons (person_token, create_time) VALUES (?, ?) IF NOT EXISTS"


class CassandraIdentityStore:
    """IdentityStore on Cassandra; see the module docstring for the tables."""

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database

    async def open(self) -> CassandraIdentityStore:
        """Connect and migrate; returns self for chaining."""
        await self._db.open()
        return self

    async def create_person_if_absent(
        self, person_token: str, sealed_demographics: bytes | None, create_time: datetime
    ) -> bool:
        """See IdentityStore.create_person_if_absent."""
        if sealed_demographics is None:
            rows = await self._db.execute(_CREATE_BARE_PERSON, (person_token, create_time))
        else:
            rows = await self._db.execute(
                _CREATE_PERSON, (person_token, sealed_demographics, create_time)
            )
        return bool(rows[0].applied)

    async def person_exists(self, person_token: str) -> bool:
        """See IdentityStore.person_exists."""
        rows = await self._db.execute(
            "SELECT person_token FROM persons WHERE person_token = ?", (person_token,)
        )
        return bool(rows)

    async def link_mrn_if_absent(
        self, hospital_id: str, mrn: str, person_token: str, link_time: datetime
    ) -> str:
        """See IdentityStore.link_mrn_if_absent."""
        rows = await self._db.execute(
            "INSERT INTO mrn_links (hospital_id, mrn, person_token, link_time) VALUES (?, ?, ?, ?)"
            " IF NOT EXISTS",
            (hospital_id, mrn, person_token, link_time),
        )
        claim = rows[0]
        if claim.applied:
            await self._list(hospital_id, mrn, person_token, link_time)
            return person_token
        # Linked before (maybe by a concurrent call that has not listed it yet, or by an
        # attempt that died before listing it): listing again is harmless.
        linked: str = claim.person_token
        if linked == person_token and not claim.listed:
            await self._list(hospital_id, mrn, linked, claim.link_time)
        return linked

    async def linked_person(self, hospital_id: str, mrn: str) -> str | None:
        """See IdentityStore.linked_person."""
        rows = await self._db.execute(
            "SELECT person_token, link_time, listed FROM mrn_links"
            " WHERE hospital_id = ? AND mrn = ?",
            (hospital_id, mrn),
        )
        if not rows:
            return None
        link = rows[0]
        if not link.listed:
            await self._list(hospital_id, mrn, link.person_token, link.link_time)
        linked: str = link.person_token
        return linked

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """See IdentityStore.links_of (the clustering order is hospital, then MRN)."""
        rows = await self._db.execute(
            "SELECT hospital_id, mrn FROM person_links WHERE person_token = ?", (person_token,)
        )
        return [HospitalLink(row.hospital_id, row.mrn) for row in rows]

    async def check(self) -> None:
        """See IdentityStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See IdentityStore.close."""
        await self._db.close()

    async def _list(
        self, hospital_id: str, mrn: str, person_token: str, link_time: datetime
    ) -> None:
        """Copy a won link into its person's partition, then mark the link listed."""
        await self._db.execute(
            "INSERT INTO person_links (person_token, hospital_id, mrn, link_time)"
            " VALUES (?, ?, ?, ?)",
            (person_token, hospital_id, mrn, link_time),
        )
        # A plain write to a column no lightweight transaction reads or conditions on.
        await self._db.execute(
            "UPDATE mrn_links SET listed = true WHERE hospital_id = ? AND mrn = ?",
            (hospital_id, mrn),
        )
