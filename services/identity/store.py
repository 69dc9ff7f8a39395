"""What the identity service persists: persons, hospital record-number links, national-ID
claims and pending merges; never a record number or national ID in clear.

:class:`IdentityStore` is the backend-neutral interface; :class:`SqliteIdentityStore` is the
embedded implementation (``identity.db`` in the data dir). Uniqueness rests on
conditional inserts — :meth:`~IdentityStore.link_mrn_if_absent`,
:meth:`~IdentityStore.claim_national_id` and :meth:`~IdentityStore.claim_match` — which map
one-to-one onto Cassandra lightweight transactions (``INSERT ... IF NOT EXISTS``) in
:class:`~services.identity.store_cassandra.CassandraIdentityStore`. A person row is a plain
write (:meth:`~IdentityStore.save_person`, ADR 39): its token is decided before it is
written, by a claim or by the hospital record number it is made from, so racing writers
of one person write the same person. The contract suite in
tests/contract/test_identity_store_contract.py holds both backends to the same behaviour.
The store is given keyed hashes only: person tokens, record-number hashes, ID hashes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from healthbank.records import from_micros, to_micros
from healthbank.storage.sqlite import SqliteDatabase
from services.identity.domain import (
    HospitalLink,
    MergeRecord,
    NationalIdClaim,
    PendingMerge,
    ReviewItem,
    ReviewStatus,
    SealedProfile,
)


class IdentityStore(Protocol):
    """Persistence of the master patient index."""

    async def save_person(
        self,
        person_token: str,
        sealed_demographics: bytes | None,
        create_time: datetime,
        national_id_hash: str | None = None,
        *,
        block_hashes: Sequence[str] = (),
    ) -> None:
        """Write the person's row: not conditional, so repeating it or racing it is harmless
        only because the caller decided the token first (ADR 39). Afterwards the person
        exists, in one row holding one of the profiles saved for it.

        ``national_id_hash`` fills the person's one national-ID slot (see
        :meth:`reserve_national_id`) for a person created from a national ID.
        ``block_hashes`` files the person under them too (:meth:`add_match_keys`), in the
        same write.
        """
        ...

    async def reserve_national_id(self, person_token: str, national_id_hash: str) -> str:
        """Fill an existing person's national-ID slot unless it is filled already.

        Returns the hash in the slot after the call. The slot keeps a person from taking two
        national IDs; :meth:`claim_national_id` decides who holds an ID.
        """
        ...

    async def release_national_id(self, person_token: str, national_id_hash: str) -> None:
        """Empty the person's slot if it holds ``national_id_hash`` (a claim that was lost)."""
        ...

    async def person_exists(self, person_token: str) -> bool:
        """True if the person is in the index."""
        ...

    async def link_mrn_if_absent(
        self, hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
    ) -> str:
        """Link (hospital, MRN hash) to the person unless it is linked already.

        Returns the person token the link points to after the call: ``person_token``, or the
        token an earlier (possibly concurrent) call linked it to.
        """
        ...

    async def save_person_and_link(
        self,
        person_token: str,
        sealed_demographics: bytes | None,
        create_time: datetime,
        national_id_hash: str | None = None,
        *,
        block_hashes: Sequence[str] = (),
        hospital_id: str,
        mrn_hash: str,
    ) -> str:
        """:meth:`save_person`, then :meth:`link_mrn_if_absent` (linked at ``create_time``):
        the person exists before the link does. One call, so a store can send the person's
        row with what the link needs written first (ADR 64). Returns what
        :meth:`link_mrn_if_absent` returns."""
        ...

    async def linked_person(self, hospital_id: str, mrn_hash: str) -> str | None:
        """The person token (hospital, MRN hash) is linked to, or None."""
        ...

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """The person's hospital links, ordered by hospital then MRN hash."""
        ...

    async def claim_national_id(
        self, national_id_hash: str, person_token: str, claim_time: datetime
    ) -> NationalIdClaim:
        """Make ``person_token`` the holder of a national ID unless someone holds it already.

        Returns the holder after the call (``person_token`` or the earlier claimant) and
        whether this call made the claim.
        """
        ...

    async def national_id_holder(self, national_id_hash: str) -> str | None:
        """The person token holding a national ID, or None."""
        ...

    async def record_pending_merge(self, merge: PendingMerge) -> None:
        """Remember two persons a message says are one (the first report of a pair is kept)."""
        ...

    async def pending_merges(self) -> list[PendingMerge]:
        """Every pending merge, ordered by the two person tokens."""
        ...

    async def add_match_keys(self, person_token: str, block_hashes: Sequence[str]) -> None:
        """File the person under the keyed hashes of its blocking keys (ADR 25)."""
        ...

    async def persons_matching(self, block_hashes: Sequence[str], limit: int) -> list[str]:
        """The persons filed under any of ``block_hashes`` (at most ``limit`` per key),
        each once, in no particular order."""
        ...

    async def profiles(self, person_tokens: Sequence[str]) -> list[SealedProfile]:
        """The sealed demographics and national-ID hash of each existing person given: the
        person's own, then one more per registration filed under it (:meth:`add_profile`)."""
        ...

    async def add_profile(
        self, person_token: str, profile_key: str, sealed_demographics: bytes
    ) -> None:
        """File a registration linked to an existing person by its demographics as one more
        profile of that person, so later registrations are compared with it too; a second
        call with the same ``profile_key`` (the registration's MRN hash) writes the same."""
        ...

    async def claim_match(
        self,
        claim_hash: str,
        person_token: str,
        sealed_demographics: bytes | None,
        claim_time: datetime,
    ) -> SealedProfile:
        """Make ``person_token`` the holder of a match claim unless someone holds it.

        Returns the holder after the call with the sealed demographics it claimed with, so
        a registration that lost the race can score itself against the winner even before
        the winner's person row exists.
        """
        ...

    async def record_review(self, item: ReviewItem) -> None:
        """Queue a pair for the MPI's review (idempotent by ``review_id``)."""
        ...

    async def reviews(self) -> list[ReviewItem]:
        """Every queued review, oldest first."""
        ...

    async def decide_review(self, review_id: str, status: ReviewStatus, merge_id: str) -> bool:
        """Record a pending review's decision; False if it was not pending (or unknown)."""
        ...

    async def merge_persons(
        self,
        merge_id: str,
        survivor_token: str,
        absorbed_token: str,
        national_id_hash: str | None,
        merge_time: datetime,
    ) -> MergeRecord:
        """Move every link of the absorbed person (and ``national_id_hash``, its ID, when
        given) to the survivor, alias the absorbed token to it and keep the record."""
        ...

    async def unmerge_persons(self, merge: MergeRecord) -> None:
        """Undo ``merge`` exactly: its moved links and ID go back, the alias goes."""
        ...

    async def merge_record(self, merge_id: str) -> MergeRecord | None:
        """A merge by id, or None."""
        ...

    async def absorbed_by(self, survivor_token: str) -> list[str]:
        """The persons merged directly into ``survivor_token`` and not unmerged, sorted."""
        ...

    async def last_index_change(self) -> str:
        """Marks the latest merge or unmerge (``"{merge_id}:merged"`` or ``:unmerged``),
        "" before any: replicas compare it to drop their known-patient caches (ADR 33)."""
        ...

    async def survivor_of(self, person_token: str) -> str | None:
        """The person a merged person was merged into, or None if it was not."""
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
    # ADR 16: record numbers only as keyed hashes (the clear links are dropped), national
    # IDs claimed by a person, and pending merges. Every person created before was created
    # from a national ID, and its token is that ID's hash: that fills its slot and claim.
    """
    DROP TABLE mrn_links;
    CREATE TABLE mrn_hash_links (
        hospital_id TEXT NOT NULL,
        mrn_hash TEXT NOT NULL,
        person_token TEXT NOT NULL REFERENCES persons (person_token),
        link_time INTEGER NOT NULL,
        PRIMARY KEY (hospital_id, mrn_hash)
    ) WITHOUT ROWID;
    CREATE INDEX mrn_hash_links_by_person ON mrn_hash_links (person_token, hospital_id, mrn_hash);
    CREATE TABLE national_ids (
        national_id_hash TEXT PRIMARY KEY,
        person_token TEXT NOT NULL,
        claim_time INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE pending_merges (
        mrn_person_token TEXT NOT NULL,
        national_id_person_token TEXT NOT NULL,
        hospital_id TEXT NOT NULL,
        detect_time INTEGER NOT NULL,
        PRIMARY KEY (mrn_person_token, national_id_person_token)
    ) WITHOUT ROWID;
    ALTER TABLE persons ADD COLUMN national_id_hash TEXT;
    UPDATE persons SET national_id_hash = person_token;
    INSERT INTO national_ids (national_id_hash, person_token, claim_time)
        SELECT person_token, person_token, create_time FROM persons
    """,
    # ADR 25: blocking keys (keyed hashes) of persons, match claims, the review queue.
    """
    CREATE TABLE match_blocks (
        block_hash TEXT NOT NULL,
        person_token TEXT NOT NULL,
        PRIMARY KEY (block_hash, person_token)
    ) WITHOUT ROWID;
    CREATE TABLE match_claims (
        claim_hash TEXT PRIMARY KEY,
        person_token TEXT NOT NULL,
        sealed_demographics BLOB,
        claim_time INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE match_reviews (
        review_id TEXT PRIMARY KEY,
        person_token TEXT NOT NULL,
        candidate_token TEXT NOT NULL,
        probability REAL NOT NULL,
        levels TEXT NOT NULL,
        create_time INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        merge_id TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    CREATE TABLE person_aliases (
        person_token TEXT PRIMARY KEY,
        survivor_token TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE merges (
        merge_id TEXT PRIMARY KEY,
        survivor_token TEXT NOT NULL,
        absorbed_token TEXT NOT NULL,
        moved_links TEXT NOT NULL,
        national_id_hash TEXT,
        merge_time INTEGER NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    # ADR 33: the latest merge or unmerge, which every replica polls.
    """
    CREATE TABLE index_changes (id INTEGER PRIMARY KEY, change TEXT NOT NULL);
    CREATE INDEX person_aliases_by_survivor ON person_aliases (survivor_token);
    """,
    # ADR 47: the registrations linked to a person by demographics are its profiles too.
    """
    CREATE TABLE person_profiles (
        person_token TEXT NOT NULL,
        profile_key TEXT NOT NULL,
        sealed_demographics BLOB NOT NULL,
        PRIMARY KEY (person_token, profile_key)
    ) WITHOUT ROWID
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

    async def save_person(
        self,
        person_token: str,
        sealed_demographics: bytes | None,
        create_time: datetime,
        national_id_hash: str | None = None,
        *,
        block_hashes: Sequence[str] = (),
    ) -> None:
        """See IdentityStore.save_person (the first row saved is kept; one transaction)."""

        def work(connection: sqlite3.Connection) -> None:
            _save_person(
                connection,
                person_token,
                sealed_demographics,
                create_time,
                national_id_hash,
                block_hashes,
            )

        await self._db.write(work)

    async def reserve_national_id(self, person_token: str, national_id_hash: str) -> str:
        """See IdentityStore.reserve_national_id."""

        def work(connection: sqlite3.Connection) -> str:
            connection.execute(
                "UPDATE persons SET national_id_hash = ?"
                " WHERE person_token = ? AND national_id_hash IS NULL",
                (national_id_hash, person_token),
            )
            row = connection.execute(
                "SELECT national_id_hash FROM persons WHERE person_token = ?", (person_token,)
            ).fetchone()
            reserved: str = row["national_id_hash"]
            return reserved

        return await self._db.write(work)

    async def release_national_id(self, person_token: str, national_id_hash: str) -> None:
        """See IdentityStore.release_national_id."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE persons SET national_id_hash = NULL"
                " WHERE person_token = ? AND national_id_hash = ?",
                (person_token, national_id_hash),
            )

        await self._db.write(work)

    async def person_exists(self, person_token: str) -> bool:
        """See IdentityStore.person_exists."""

        def work(connection: sqlite3.Connection) -> bool:
            row = connection.execute(
                "SELECT 1 FROM persons WHERE person_token = ?", (person_token,)
            ).fetchone()
            return row is not None

        return await self._db.read(work)

    async def link_mrn_if_absent(
        self, hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
    ) -> str:
        """See IdentityStore.link_mrn_if_absent."""
        return await self._db.write(
            lambda connection: _link_if_absent(
                connection, hospital_id, mrn_hash, person_token, link_time
            )
        )

    async def save_person_and_link(
        self,
        person_token: str,
        sealed_demographics: bytes | None,
        create_time: datetime,
        national_id_hash: str | None = None,
        *,
        block_hashes: Sequence[str] = (),
        hospital_id: str,
        mrn_hash: str,
    ) -> str:
        """See IdentityStore.save_person_and_link (one transaction)."""

        def work(connection: sqlite3.Connection) -> str:
            _save_person(
                connection,
                person_token,
                sealed_demographics,
                create_time,
                national_id_hash,
                block_hashes,
            )
            return _link_if_absent(connection, hospital_id, mrn_hash, person_token, create_time)

        return await self._db.write(work)

    async def linked_person(self, hospital_id: str, mrn_hash: str) -> str | None:
        """See IdentityStore.linked_person."""

        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT person_token FROM mrn_hash_links WHERE hospital_id = ? AND mrn_hash = ?",
                (hospital_id, mrn_hash),
            ).fetchone()
            return None if row is None else str(row["person_token"])

        return await self._db.read(work)

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """See IdentityStore.links_of."""

        def work(connection: sqlite3.Connection) -> list[HospitalLink]:
            rows = connection.execute(
                "SELECT hospital_id, mrn_hash FROM mrn_hash_links WHERE person_token = ? "
                "ORDER BY hospital_id, mrn_hash",
                (person_token,),
            ).fetchall()
            return [HospitalLink(row["hospital_id"], row["mrn_hash"]) for row in rows]

        return await self._db.read(work)

    async def claim_national_id(
        self, national_id_hash: str, person_token: str, claim_time: datetime
    ) -> NationalIdClaim:
        """See IdentityStore.claim_national_id."""

        def work(connection: sqlite3.Connection) -> NationalIdClaim:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO national_ids (national_id_hash, person_token, claim_time)"
                " VALUES (?, ?, ?)",
                (national_id_hash, person_token, to_micros(claim_time)),
            )
            row = connection.execute(
                "SELECT person_token FROM national_ids WHERE national_id_hash = ?",
                (national_id_hash,),
            ).fetchone()
            return NationalIdClaim(row["person_token"], won=cursor.rowcount == 1)

        return await self._db.write(work)

    async def national_id_holder(self, national_id_hash: str) -> str | None:
        """See IdentityStore.national_id_holder."""

        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT person_token FROM national_ids WHERE national_id_hash = ?",
                (national_id_hash,),
            ).fetchone()
            return None if row is None else str(row["person_token"])

        return await self._db.read(work)

    async def record_pending_merge(self, merge: PendingMerge) -> None:
        """See IdentityStore.record_pending_merge."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR IGNORE INTO pending_merges (mrn_person_token,"
                " national_id_person_token, hospital_id, detect_time) VALUES (?, ?, ?, ?)",
                (
                    merge.mrn_person_token,
                    merge.national_id_person_token,
                    merge.hospital_id,
                    to_micros(merge.detect_time),
                ),
            )

        await self._db.write(work)

    async def pending_merges(self) -> list[PendingMerge]:
        """See IdentityStore.pending_merges."""

        def work(connection: sqlite3.Connection) -> list[PendingMerge]:
            rows = connection.execute(
                "SELECT * FROM pending_merges ORDER BY mrn_person_token, national_id_person_token"
            ).fetchall()
            return [
                PendingMerge(
                    row["mrn_person_token"],
                    row["national_id_person_token"],
                    row["hospital_id"],
                    from_micros(row["detect_time"]),
                )
                for row in rows
            ]

        return await self._db.read(work)

    async def add_match_keys(self, person_token: str, block_hashes: Sequence[str]) -> None:
        """See IdentityStore.add_match_keys."""

        def work(connection: sqlite3.Connection) -> None:
            _file_under(connection, person_token, block_hashes)

        await self._db.write(work)

    async def persons_matching(self, block_hashes: Sequence[str], limit: int) -> list[str]:
        """See IdentityStore.persons_matching."""

        def work(connection: sqlite3.Connection) -> list[str]:
            found: dict[str, None] = {}
            for block_hash in block_hashes:
                rows = connection.execute(
                    "SELECT person_token FROM match_blocks WHERE block_hash = ? LIMIT ?",
                    (block_hash, limit),
                ).fetchall()
                found.update((row["person_token"], None) for row in rows)
            return list(found)

        return await self._db.read(work)

    async def profiles(self, person_tokens: Sequence[str]) -> list[SealedProfile]:
        """See IdentityStore.profiles."""

        def work(connection: sqlite3.Connection) -> list[SealedProfile]:
            profiles = []
            for token in person_tokens:
                row = connection.execute(
                    "SELECT sealed_demographics, national_id_hash FROM persons"
                    " WHERE person_token = ?",
                    (token,),
                ).fetchone()
                if row is None:
                    continue
                national_id_hash = row["national_id_hash"]
                profiles.append(SealedProfile(token, row["sealed_demographics"], national_id_hash))
                profiles.extend(
                    SealedProfile(token, more["sealed_demographics"], national_id_hash)
                    for more in connection.execute(
                        "SELECT sealed_demographics FROM person_profiles WHERE person_token = ?"
                        " ORDER BY profile_key",
                        (token,),
                    )
                )
            return profiles

        return await self._db.read(work)

    async def add_profile(
        self, person_token: str, profile_key: str, sealed_demographics: bytes
    ) -> None:
        """See IdentityStore.add_profile."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR REPLACE INTO person_profiles"
                " (person_token, profile_key, sealed_demographics) VALUES (?, ?, ?)",
                (person_token, profile_key, sealed_demographics),
            )

        await self._db.write(work)

    async def claim_match(
        self,
        claim_hash: str,
        person_token: str,
        sealed_demographics: bytes | None,
        claim_time: datetime,
    ) -> SealedProfile:
        """See IdentityStore.claim_match."""

        def work(connection: sqlite3.Connection) -> SealedProfile:
            connection.execute(
                "INSERT OR IGNORE INTO match_claims"
                " (claim_hash, person_token, sealed_demographics, claim_time) VALUES (?, ?, ?, ?)",
                (claim_hash, person_token, sealed_demographics, to_micros(claim_time)),
            )
            row = connection.execute(
                "SELECT person_token, sealed_demographics FROM match_claims WHERE claim_hash = ?",
                (claim_hash,),
            ).fetchone()
            return SealedProfile(row["person_token"], row["sealed_demographics"])

        return await self._db.write(work)

    async def record_review(self, item: ReviewItem) -> None:
        """See IdentityStore.record_review."""

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR IGNORE INTO match_reviews (review_id, person_token, candidate_token,"
                " probability, levels, create_time) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    item.review_id,
                    item.person_token,
                    item.candidate_token,
                    item.probability,
                    json.dumps(item.levels, sort_keys=True),
                    to_micros(item.create_time),
                ),
            )

        await self._db.write(work)

    async def reviews(self) -> list[ReviewItem]:
        """See IdentityStore.reviews."""

        def work(connection: sqlite3.Connection) -> list[ReviewItem]:
            rows = connection.execute(
                "SELECT * FROM match_reviews ORDER BY create_time, review_id"
            ).fetchall()
            return [
                ReviewItem(
                    row["review_id"],
                    row["person_token"],
                    row["candidate_token"],
                    row["probability"],
                    json.loads(row["levels"]),
                    from_micros(row["create_time"]),
                    ReviewStatus(row["status"]),
                    row["merge_id"],
                )
                for row in rows
            ]

        return await self._db.read(work)

    async def decide_review(self, review_id: str, status: ReviewStatus, merge_id: str) -> bool:
        """See IdentityStore.decide_review."""

        def work(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE match_reviews SET status = ?, merge_id = ?"
                " WHERE review_id = ? AND status = 'pending'",
                (status.value, merge_id, review_id),
            )
            return cursor.rowcount == 1

        return await self._db.write(work)

    async def merge_persons(
        self,
        merge_id: str,
        survivor_token: str,
        absorbed_token: str,
        national_id_hash: str | None,
        merge_time: datetime,
    ) -> MergeRecord:
        """See IdentityStore.merge_persons (one transaction)."""

        def work(connection: sqlite3.Connection) -> MergeRecord:
            links = tuple(
                (row["hospital_id"], row["mrn_hash"])
                for row in connection.execute(
                    "SELECT hospital_id, mrn_hash FROM mrn_hash_links WHERE person_token = ?"
                    " ORDER BY hospital_id, mrn_hash",
                    (absorbed_token,),
                )
            )
            _move_links(connection, links, survivor_token)
            if national_id_hash is not None:
                _move_national_id(connection, national_id_hash, absorbed_token, survivor_token)
            connection.execute(
                "INSERT INTO person_aliases (person_token, survivor_token) VALUES (?, ?)",
                (absorbed_token, survivor_token),
            )
            _note_index_change(connection, f"{merge_id}:merged")
            merge = MergeRecord(
                merge_id, survivor_token, absorbed_token, links, national_id_hash, merge_time
            )
            connection.execute(
                "INSERT INTO merges (merge_id, survivor_token, absorbed_token, moved_links,"
                " national_id_hash, merge_time) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    merge_id,
                    survivor_token,
                    absorbed_token,
                    json.dumps(links),
                    national_id_hash,
                    to_micros(merge_time),
                ),
            )
            return merge

        return await self._db.write(work)

    async def unmerge_persons(self, merge: MergeRecord) -> None:
        """See IdentityStore.unmerge_persons (one transaction)."""

        def work(connection: sqlite3.Connection) -> None:
            _move_links(connection, merge.moved_links, merge.absorbed_token)
            if merge.national_id_hash is not None:
                _move_national_id(
                    connection, merge.national_id_hash, merge.survivor_token, merge.absorbed_token
                )
            connection.execute(
                "DELETE FROM person_aliases WHERE person_token = ?", (merge.absorbed_token,)
            )
            connection.execute("UPDATE merges SET undone = 1 WHERE merge_id = ?", (merge.merge_id,))
            _note_index_change(connection, f"{merge.merge_id}:unmerged")

        await self._db.write(work)

    async def merge_record(self, merge_id: str) -> MergeRecord | None:
        """See IdentityStore.merge_record."""

        def work(connection: sqlite3.Connection) -> MergeRecord | None:
            row = connection.execute(
                "SELECT * FROM merges WHERE merge_id = ?", (merge_id,)
            ).fetchone()
            if row is None:
                return None
            return MergeRecord(
                row["merge_id"],
                row["survivor_token"],
                row["absorbed_token"],
                tuple(
                    (hospital, mrn_hash) for hospital, mrn_hash in json.loads(row["moved_links"])
                ),
                row["national_id_hash"],
                from_micros(row["merge_time"]),
                bool(row["undone"]),
            )

        return await self._db.read(work)

    async def survivor_of(self, person_token: str) -> str | None:
        """See IdentityStore.survivor_of."""

        def work(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT survivor_token FROM person_aliases WHERE person_token = ?",
                (person_token,),
            ).fetchone()
            return None if row is None else str(row["survivor_token"])

        return await self._db.read(work)

    async def absorbed_by(self, survivor_token: str) -> list[str]:
        """See IdentityStore.absorbed_by."""

        def work(connection: sqlite3.Connection) -> list[str]:
            rows = connection.execute(
                "SELECT person_token FROM person_aliases WHERE survivor_token = ?"
                " ORDER BY person_token",
                (survivor_token,),
            )
            return [str(row["person_token"]) for row in rows]

        return await self._db.read(work)

    async def last_index_change(self) -> str:
        """See IdentityStore.last_index_change."""

        def work(connection: sqlite3.Connection) -> str:
            row = connection.execute("SELECT change FROM index_changes WHERE id = 0").fetchone()
            return "" if row is None else str(row["change"])

        return await self._db.read(work)

    async def check(self) -> None:
        """See IdentityStore.check."""
        await self._db.read(lambda connection: connection.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        """See IdentityStore.close."""
        await self._db.close()


def _note_index_change(connection: sqlite3.Connection, change: str) -> None:
    connection.execute(
        "INSERT INTO index_changes (id, change) VALUES (0, ?)"
        " ON CONFLICT (id) DO UPDATE SET change = excluded.change",
        (change,),
    )


def _move_links(
    connection: sqlite3.Connection, links: Sequence[tuple[str, str]], person_token: str
) -> None:
    connection.executemany(
        "UPDATE mrn_hash_links SET person_token = ? WHERE hospital_id = ? AND mrn_hash = ?",
        [(person_token, hospital_id, mrn_hash) for hospital_id, mrn_hash in links],
    )


def _move_national_id(
    connection: sqlite3.Connection, national_id_hash: str, from_token: str, to_token: str
) -> None:
    connection.execute(
        "UPDATE national_ids SET person_token = ? WHERE national_id_hash = ?",
        (to_token, national_id_hash),
    )
    connection.execute(
        "UPDATE persons SET national_id_hash = NULL WHERE person_token = ?", (from_token,)
    )
    connection.execute(
        "UPDATE persons SET national_id_hash = ? WHERE person_token = ?",
        (national_id_hash, to_token),
    )


def _save_person(
    connection: sqlite3.Connection,
    person_token: str,
    sealed_demographics: bytes | None,
    create_time: datetime,
    national_id_hash: str | None,
    block_hashes: Sequence[str],
) -> None:
    """The person's row unless it exists (the first row saved is kept), filed under
    ``block_hashes``."""
    connection.execute(
        "INSERT OR IGNORE INTO persons"
        " (person_token, sealed_demographics, create_time, national_id_hash)"
        " VALUES (?, ?, ?, ?)",
        (person_token, sealed_demographics, to_micros(create_time), national_id_hash),
    )
    _file_under(connection, person_token, block_hashes)


def _link_if_absent(
    connection: sqlite3.Connection,
    hospital_id: str,
    mrn_hash: str,
    person_token: str,
    link_time: datetime,
) -> str:
    """Link (hospital, MRN hash) to the person unless linked; the person it is linked to."""
    connection.execute(
        "INSERT OR IGNORE INTO mrn_hash_links"
        " (hospital_id, mrn_hash, person_token, link_time) VALUES (?, ?, ?, ?)",
        (hospital_id, mrn_hash, person_token, to_micros(link_time)),
    )
    row = connection.execute(
        "SELECT person_token FROM mrn_hash_links WHERE hospital_id = ? AND mrn_hash = ?",
        (hospital_id, mrn_hash),
    ).fetchone()
    linked: str = row["person_token"]
    return linked


def _file_under(
    connection: sqlite3.Connection, person_token: str, block_hashes: Sequence[str]
) -> None:
    connection.executemany(
        "INSERT OR IGNORE INTO match_blocks (block_hash, person_token) VALUES (?, ?)",
        [(block_hash, person_token) for block_hash in block_hashes],
    )
