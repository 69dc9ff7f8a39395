"""IdentityStore on Apache Cassandra (keyspace ``<prefix>_identity``).

Tables, one per query:

- ``persons``: one row per person token, written by a plain ``INSERT`` (ADR 39): the token
  is decided before the row is written (by a national-ID or match claim, or by the hospital
  record number it is made from), so concurrent resolves of one person (in any number of
  processes) write one row of the same person.
- ``national_ids``: a national ID's keyed hash → the person holding it, claimed only by
  ``INSERT ... IF NOT EXISTS``: the first claim wins and never moves, so two hospitals
  registering one ID at the same moment get one person.
- ``mrn_hash_links``: the (hospital, MRN hash) → person link, partitioned by (hospital, MRN
  hash) and created only by ``INSERT ... IF NOT EXISTS``: the first link wins, never moves.
- ``person_mrn_hashes``: the same links partitioned by person and clustered by (hospital,
  MRN hash), for GetPerson and merges. A copy is written *before* the link's lightweight
  transaction, which writes the link with ``listed = true``: a link never exists without its
  copy, and linking costs two requests, not three (ADR 51); a new person's copy goes in the
  batch of its row (ADR 64). A copy is the person's only while its link row names the
  person: a caller that loses the link deletes its copy, and one that dies before linking
  leaves a copy no link backs, which every reader of copies skips (:meth:`_linked_copies`).
  Links written before ADR 51 were copied after the transaction and marked ``listed`` after;
  whoever finds one unlisted (a crash between those writes) writes the copy again. Copies
  are idempotent upserts.
- ``pending_merges``: pairs of persons a message said are one, for the MPI's review.
- ``match_blocks``: a blocking key's keyed hash → the persons filed under it (ADR 25).
- ``match_claims``: the claim racing first registrations of one new person compete for,
  by ``INSERT ... IF NOT EXISTS``, carrying the winner's sealed demographics.
- ``match_reviews``: the review queue of probabilistic matching.
- ``person_aliases`` and ``merges``: a merged person's survivor, and each merge with what it
  moved; ``absorbed_persons``: the aliases by survivor (the persons whose records are the
  survivor's too); ``index_changes``: one row naming the latest merge or unmerge, which
  replicas poll to drop their caches of known patients (ADR 33). A merge or unmerge is one
  LOGGED batch (all of it eventually, or none); the link, ID and slot cells it rewrites are
  otherwise written only by lightweight transactions, so a Resolve racing a merge of the
  same person may see either side of it.

Only keyed hashes reach this store: person tokens, MRN hashes, national-ID hashes;
demographics arrive sealed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.coalesced import CoalescedReads, CoalescedWrites
from services.identity.domain import (
    HospitalLink,
    MergeRecord,
    NationalIdClaim,
    PendingMerge,
    ReviewItem,
    ReviewStatus,
    SealedProfile,
)

MIGRATIONS = [
    # Version 1 once also created the clear-MRN tables ``mrn_links`` and ``person_links``
    # and persons without ``national_id_hash``; a fresh keyspace gets the current persons
    # table here, and version 2 (idempotent) brings an old keyspace to the same place.
    """
    CREATE TABLE IF NOT EXISTS persons (
        person_token text PRIMARY KEY,
        sealed_demographics blob,
        create_time timestamp,
        national_id_hash text
    )
    """,
    # ADR 16: record numbers as keyed hashes (the clear ones are dropped: they cannot be
    # rehashed without the key), national-ID claims, pending merges.
    """
    ALTER TABLE persons ADD IF NOT EXISTS national_id_hash text;
    DROP TABLE IF EXISTS mrn_links;
    DROP TABLE IF EXISTS person_links;
    CREATE TABLE IF NOT EXISTS mrn_hash_links (
        hospital_id text, mrn_hash text, person_token text, link_time timestamp,
        listed boolean,
        PRIMARY KEY ((hospital_id, mrn_hash))
    );
    CREATE TABLE IF NOT EXISTS person_mrn_hashes (
        person_token text, hospital_id text, mrn_hash text, link_time timestamp,
        PRIMARY KEY ((person_token), hospital_id, mrn_hash)
    ) WITH CLUSTERING ORDER BY (hospital_id ASC, mrn_hash ASC);
    CREATE TABLE IF NOT EXISTS national_ids (
        national_id_hash text PRIMARY KEY, person_token text, claim_time timestamp
    );
    CREATE TABLE IF NOT EXISTS pending_merges (
        mrn_person_token text, national_id_person_token text, hospital_id text,
        detect_time timestamp,
        PRIMARY KEY ((mrn_person_token), national_id_person_token)
    )
    """,
    # ADR 25: probabilistic matching.
    """
    CREATE TABLE IF NOT EXISTS match_blocks (
        block_hash text, person_token text, PRIMARY KEY ((block_hash), person_token)
    );
    CREATE TABLE IF NOT EXISTS match_claims (
        claim_hash text PRIMARY KEY, person_token text, sealed_demographics blob,
        claim_time timestamp
    );
    CREATE TABLE IF NOT EXISTS match_reviews (
        review_id text PRIMARY KEY, person_token text, candidate_token text,
        probability double, levels text, create_time timestamp, status text, merge_id text
    );
    CREATE TABLE IF NOT EXISTS person_aliases (
        person_token text PRIMARY KEY, survivor_token text
    );
    CREATE TABLE IF NOT EXISTS merges (
        merge_id text PRIMARY KEY, survivor_token text, absorbed_token text,
        moved_links text, national_id_hash text, merge_time timestamp, undone boolean
    )
    """,
    # ADR 33: the latest merge or unmerge, which every replica polls.
    """
    CREATE TABLE IF NOT EXISTS index_changes (id int PRIMARY KEY, change text);
    CREATE TABLE IF NOT EXISTS absorbed_persons (
        survivor_token text, absorbed_token text, PRIMARY KEY ((survivor_token), absorbed_token)
    )
    """,
    # ADR 47: the registrations linked to a person by demographics are its profiles too, in
    # the person's row, so the one read of the candidates brings them.
    "ALTER TABLE persons ADD IF NOT EXISTS more_profiles map<text, blob>",
    # ADR 70: the Paxos state of the claims (a partition each) is kept 3 hours, not 10 days.
    # Nothing deletes or nulls a claim's cells, so a short grace resurrects nothing.
    """
    ALTER TABLE IF EXISTS national_ids WITH gc_grace_seconds = 10800;
    ALTER TABLE IF EXISTS mrn_hash_links WITH gc_grace_seconds = 10800;
    ALTER TABLE IF EXISTS match_claims WITH gc_grace_seconds = 10800
    """,
]


class CassandraIdentityStore:
    """IdentityStore on Cassandra; see the module docstring for the tables.

    The reads and upserts a resolve makes are coalesced (ADR 53): those of concurrent
    resolves (a ResolveBatch's registrations) leave as one request.
    """

    def __init__(self, database: CassandraDatabase) -> None:
        """Use an opened or unopened keyspace created with :data:`MIGRATIONS`."""
        self._db = database
        self._writes = CoalescedWrites(database)
        self._links = CoalescedReads(
            database,
            "SELECT hospital_id, mrn_hash, person_token, link_time, listed FROM mrn_hash_links"
            " WHERE hospital_id = ? AND mrn_hash IN ?",
            lambda row: (row.hospital_id, row.mrn_hash),
        )
        self._id_holders = CoalescedReads(
            database,
            "SELECT national_id_hash, person_token FROM national_ids WHERE national_id_hash IN ?",
            lambda row: (row.national_id_hash,),
        )
        self._persons = CoalescedReads(
            database,
            "SELECT person_token, sealed_demographics, national_id_hash, more_profiles"
            " FROM persons WHERE person_token IN ?",
            lambda row: (row.person_token,),
        )
        self._absorbed = CoalescedReads(
            database,
            "SELECT survivor_token, absorbed_token FROM absorbed_persons WHERE survivor_token IN ?",
            lambda row: (row.survivor_token,),
        )
        self._aliases = CoalescedReads(
            database,
            "SELECT person_token, survivor_token FROM person_aliases WHERE person_token IN ?",
            lambda row: (row.person_token,),
        )
        # By the limit of persons read a key (one, the match policy's, in practice).
        self._blocks: dict[int, CoalescedReads] = {}

    async def open(self) -> CassandraIdentityStore:
        """Connect (``healthbank migrate`` creates the schema); returns self."""
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
        """See IdentityStore.save_person (an upsert: the last row saved wins; with
        ``block_hashes``, one unlogged batch of idempotent upserts)."""
        await self._writes.apply(
            _person_rows(
                person_token, sealed_demographics, create_time, national_id_hash, block_hashes
            )
        )

    async def reserve_national_id(self, person_token: str, national_id_hash: str) -> str:
        """See IdentityStore.reserve_national_id."""
        rows = await self._db.execute(
            "UPDATE persons SET national_id_hash = ? WHERE person_token = ?"
            " IF national_id_hash = null",
            (national_id_hash, person_token),
        )
        reservation = rows[0]
        reserved: str = national_id_hash if reservation.applied else reservation.national_id_hash
        return reserved

    async def release_national_id(self, person_token: str, national_id_hash: str) -> None:
        """See IdentityStore.release_national_id."""
        await self._db.execute(
            "UPDATE persons SET national_id_hash = null WHERE person_token = ?"
            " IF national_id_hash = ?",
            (person_token, national_id_hash),
        )

    async def person_exists(self, person_token: str) -> bool:
        """See IdentityStore.person_exists."""
        rows = await self._db.execute(
            "SELECT person_token FROM persons WHERE person_token = ?", (person_token,)
        )
        return bool(rows)

    async def link_mrn_if_absent(
        self, hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
    ) -> str:
        """See IdentityStore.link_mrn_if_absent (the copy first, then the link: ADR 51)."""
        await self._copy_link(hospital_id, mrn_hash, person_token, link_time)
        return await self._claim_link(hospital_id, mrn_hash, person_token, link_time)

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
        """See IdentityStore.save_person_and_link: the person's row, its keys and the link's
        copy in one unlogged batch, then the link's lightweight transaction (ADR 64)."""
        await self._writes.apply(
            [
                *_person_rows(
                    person_token, sealed_demographics, create_time, national_id_hash, block_hashes
                ),
                _link_copy(hospital_id, mrn_hash, person_token, create_time),
            ]
        )
        return await self._claim_link(hospital_id, mrn_hash, person_token, create_time)

    async def _claim_link(
        self, hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
    ) -> str:
        """The link's lightweight transaction, its copy written before (ADR 51)."""
        rows = await self._db.execute(
            "INSERT INTO mrn_hash_links (hospital_id, mrn_hash, person_token, link_time, listed)"
            " VALUES (?, ?, ?, ?, true) IF NOT EXISTS",
            (hospital_id, mrn_hash, person_token, link_time),
        )
        claim = rows[0]
        if claim.applied:
            return person_token
        linked: str = claim.person_token
        if linked != person_token:
            # Lost: the copy would be a link this person does not have.
            await self._db.execute(
                "DELETE FROM person_mrn_hashes"
                " WHERE person_token = ? AND hospital_id = ? AND mrn_hash = ?",
                (person_token, hospital_id, mrn_hash),
            )
        elif not claim.listed:
            # Linked before ADR 51 by an attempt that died before listing it.
            await self._list(hospital_id, mrn_hash, linked, claim.link_time)
        return linked

    async def linked_person(self, hospital_id: str, mrn_hash: str) -> str | None:
        """See IdentityStore.linked_person."""
        rows = await self._links.rows(hospital_id, mrn_hash)
        if not rows:
            return None
        link = rows[0]
        if not link.listed:
            await self._list(hospital_id, mrn_hash, link.person_token, link.link_time)
        linked: str = link.person_token
        return linked

    async def links_of(self, person_token: str) -> list[HospitalLink]:
        """See IdentityStore.links_of (the clustering order is hospital, then MRN hash)."""
        rows = await self._linked_copies(person_token)
        return [HospitalLink(row.hospital_id, row.mrn_hash) for row in rows]

    async def _linked_copies(self, person_token: str) -> list[Any]:
        """The person's rows of person_mrn_hashes whose link names the person: not those
        of a caller that died between the copy and the link, nor one about to lose it.
        Never deleted here: the copy may be one whose link is being written now."""
        copies = await self._db.execute(
            "SELECT hospital_id, mrn_hash, link_time FROM person_mrn_hashes WHERE person_token = ?",
            (person_token,),
        )
        links = await asyncio.gather(
            *(
                self._db.execute(
                    "SELECT person_token FROM mrn_hash_links"
                    " WHERE hospital_id = ? AND mrn_hash = ?",
                    (copy.hospital_id, copy.mrn_hash),
                )
                for copy in copies
            )
        )
        return [
            copy
            for copy, link in zip(copies, links, strict=True)
            if link and link[0].person_token == person_token
        ]

    async def claim_national_id(
        self, national_id_hash: str, person_token: str, claim_time: datetime
    ) -> NationalIdClaim:
        """See IdentityStore.claim_national_id."""
        rows = await self._db.execute(
            "INSERT INTO national_ids (national_id_hash, person_token, claim_time)"
            " VALUES (?, ?, ?) IF NOT EXISTS",
            (national_id_hash, person_token, claim_time),
        )
        claim = rows[0]
        if claim.applied:
            return NationalIdClaim(person_token, won=True)
        return NationalIdClaim(claim.person_token, won=False)

    async def national_id_holder(self, national_id_hash: str) -> str | None:
        """See IdentityStore.national_id_holder."""
        rows = await self._id_holders.rows(national_id_hash)
        return str(rows[0].person_token) if rows else None

    async def record_pending_merge(self, merge: PendingMerge) -> None:
        """See IdentityStore.record_pending_merge (conditional: the first report is kept)."""
        await self._db.execute(
            "INSERT INTO pending_merges (mrn_person_token, national_id_person_token,"
            " hospital_id, detect_time) VALUES (?, ?, ?, ?) IF NOT EXISTS",
            (
                merge.mrn_person_token,
                merge.national_id_person_token,
                merge.hospital_id,
                merge.detect_time,
            ),
        )

    async def pending_merges(self) -> list[PendingMerge]:
        """See IdentityStore.pending_merges (a scan: the table is a small review queue)."""
        rows = await self._db.execute(
            "SELECT mrn_person_token, national_id_person_token, hospital_id, detect_time"
            " FROM pending_merges"
        )
        merges = [
            PendingMerge(
                row.mrn_person_token,
                row.national_id_person_token,
                row.hospital_id,
                _utc(row.detect_time),
            )
            for row in rows
        ]
        return sorted(
            merges, key=lambda merge: (merge.mrn_person_token, merge.national_id_person_token)
        )

    async def add_match_keys(self, person_token: str, block_hashes: Sequence[str]) -> None:
        """See IdentityStore.add_match_keys (idempotent upserts, one unlogged batch)."""
        await self._writes.apply(_match_keys(person_token, block_hashes))

    async def persons_matching(self, block_hashes: Sequence[str], limit: int) -> list[str]:
        """See IdentityStore.persons_matching: at most ``limit`` persons from each key's
        partition, all of a registration's keys in one request."""
        blocks = self._blocks.get(limit)
        if blocks is None:
            blocks = self._blocks[limit] = CoalescedReads(
                self._db,
                "SELECT block_hash, person_token FROM match_blocks WHERE block_hash IN ?"
                f" PER PARTITION LIMIT {int(limit)}",
                lambda row: (row.block_hash,),
            )
        found = await blocks.rows_of_each([(block_hash,) for block_hash in block_hashes])
        return list(dict.fromkeys(row.person_token for rows in found for row in rows))

    async def profiles(self, person_tokens: Sequence[str]) -> list[SealedProfile]:
        """See IdentityStore.profiles (the persons' rows in one request, or a few)."""
        found = await self._persons.rows_of_each([(token,) for token in person_tokens])
        return [
            SealedProfile(row.person_token, sealed, row.national_id_hash)
            for rows in found
            for row in rows
            for sealed in (row.sealed_demographics, *_in_key_order(row.more_profiles))
        ]

    async def add_profile(
        self, person_token: str, profile_key: str, sealed_demographics: bytes
    ) -> None:
        """See IdentityStore.add_profile (one map cell of the person's row)."""
        await self._writes.apply(
            [
                (
                    "UPDATE persons SET more_profiles[?] = ? WHERE person_token = ?",
                    (profile_key, sealed_demographics, person_token),
                )
            ]
        )

    async def claim_match(
        self,
        claim_hash: str,
        person_token: str,
        sealed_demographics: bytes | None,
        claim_time: datetime,
    ) -> SealedProfile:
        """See IdentityStore.claim_match (a lightweight transaction)."""
        values: dict[str, object] = {
            "claim_hash": claim_hash,
            "person_token": person_token,
            "claim_time": claim_time,
        }
        if sealed_demographics is not None:
            values["sealed_demographics"] = sealed_demographics
        rows = await self._db.execute(
            f"INSERT INTO match_claims ({', '.join(values)})"
            f" VALUES ({', '.join('?' for _ in values)}) IF NOT EXISTS",
            tuple(values.values()),
        )
        claim = rows[0]
        if claim.applied:
            return SealedProfile(person_token, sealed_demographics)
        return SealedProfile(claim.person_token, claim.sealed_demographics)

    async def record_review(self, item: ReviewItem) -> None:
        """See IdentityStore.record_review (conditional: a retry never reopens a decision)."""
        await self._db.execute(
            "INSERT INTO match_reviews (review_id, person_token, candidate_token, probability,"
            " levels, create_time, status) VALUES (?, ?, ?, ?, ?, ?, 'pending') IF NOT EXISTS",
            (
                item.review_id,
                item.person_token,
                item.candidate_token,
                item.probability,
                json.dumps(item.levels, sort_keys=True),
                item.create_time,
            ),
        )

    async def reviews(self) -> list[ReviewItem]:
        """See IdentityStore.reviews (a scan: the queue is small)."""
        rows = await self._db.execute(
            "SELECT review_id, person_token, candidate_token, probability, levels, create_time,"
            " status, merge_id FROM match_reviews"
        )
        items = [
            ReviewItem(
                row.review_id,
                row.person_token,
                row.candidate_token,
                row.probability,
                json.loads(row.levels),
                _utc(row.create_time),
                ReviewStatus(row.status or ReviewStatus.PENDING),
                row.merge_id or "",
            )
            for row in rows
        ]
        return sorted(items, key=lambda item: (item.create_time, item.review_id))

    async def decide_review(self, review_id: str, status: ReviewStatus, merge_id: str) -> bool:
        """See IdentityStore.decide_review (a lightweight transaction on the status)."""
        rows = await self._db.execute(
            "UPDATE match_reviews SET status = ?, merge_id = ? WHERE review_id = ?"
            " IF status = 'pending'",
            (status.value, merge_id, review_id),
        )
        return bool(rows[0].applied)

    async def merge_persons(
        self,
        merge_id: str,
        survivor_token: str,
        absorbed_token: str,
        national_id_hash: str | None,
        merge_time: datetime,
    ) -> MergeRecord:
        """See IdentityStore.merge_persons (one logged batch)."""
        rows = await self._linked_copies(absorbed_token)
        links = tuple((row.hospital_id, row.mrn_hash) for row in rows)
        merge = MergeRecord(
            merge_id, survivor_token, absorbed_token, links, national_id_hash, merge_time
        )
        statements = self._moves(rows, absorbed_token, survivor_token, national_id_hash)
        statements.append(
            (
                "INSERT INTO person_aliases (person_token, survivor_token) VALUES (?, ?)",
                (absorbed_token, survivor_token),
            )
        )
        statements.append(_index_change(f"{merge_id}:merged"))
        statements.append(
            (
                "INSERT INTO absorbed_persons (survivor_token, absorbed_token) VALUES (?, ?)",
                (survivor_token, absorbed_token),
            )
        )
        statements.append(
            (
                "INSERT INTO merges (merge_id, survivor_token, absorbed_token, moved_links,"
                " national_id_hash, merge_time, undone) VALUES (?, ?, ?, ?, ?, ?, false)",
                (
                    merge_id,
                    survivor_token,
                    absorbed_token,
                    json.dumps(links),
                    national_id_hash,
                    merge_time,
                ),
            )
        )
        await self._db.execute_logged_batch(statements)
        return merge

    async def unmerge_persons(self, merge: MergeRecord) -> None:
        """See IdentityStore.unmerge_persons (one logged batch)."""
        rows = await self._linked_copies(merge.survivor_token)
        moved = set(merge.moved_links)
        statements = self._moves(
            [row for row in rows if (row.hospital_id, row.mrn_hash) in moved],
            merge.survivor_token,
            merge.absorbed_token,
            merge.national_id_hash,
        )
        statements.append(
            ("DELETE FROM person_aliases WHERE person_token = ?", (merge.absorbed_token,))
        )
        statements.append(("UPDATE merges SET undone = true WHERE merge_id = ?", (merge.merge_id,)))
        statements.append(_index_change(f"{merge.merge_id}:unmerged"))
        statements.append(
            (
                "DELETE FROM absorbed_persons WHERE survivor_token = ? AND absorbed_token = ?",
                (merge.survivor_token, merge.absorbed_token),
            )
        )
        await self._db.execute_logged_batch(statements)

    @staticmethod
    def _moves(
        link_rows: Sequence[Any],
        from_token: str,
        to_token: str,
        national_id_hash: str | None,
    ) -> list[tuple[str, tuple[object, ...]]]:
        """Statements moving links (rows of person_mrn_hashes) and an ID between persons."""
        statements: list[tuple[str, tuple[object, ...]]] = []
        for row in link_rows:
            hospital_id, mrn_hash, link_time = row.hospital_id, row.mrn_hash, row.link_time
            statements += [
                (
                    "UPDATE mrn_hash_links SET person_token = ?"
                    " WHERE hospital_id = ? AND mrn_hash = ?",
                    (to_token, hospital_id, mrn_hash),
                ),
                (
                    "DELETE FROM person_mrn_hashes"
                    " WHERE person_token = ? AND hospital_id = ? AND mrn_hash = ?",
                    (from_token, hospital_id, mrn_hash),
                ),
                (
                    "INSERT INTO person_mrn_hashes (person_token, hospital_id, mrn_hash,"
                    " link_time) VALUES (?, ?, ?, ?)",
                    (to_token, hospital_id, mrn_hash, link_time),
                ),
            ]
        if national_id_hash is not None:
            statements += [
                (
                    "UPDATE national_ids SET person_token = ? WHERE national_id_hash = ?",
                    (to_token, national_id_hash),
                ),
                (
                    "UPDATE persons SET national_id_hash = null WHERE person_token = ?",
                    (from_token,),
                ),
                (
                    "UPDATE persons SET national_id_hash = ? WHERE person_token = ?",
                    (national_id_hash, to_token),
                ),
            ]
        return statements

    async def merge_record(self, merge_id: str) -> MergeRecord | None:
        """See IdentityStore.merge_record."""
        rows = await self._db.execute(
            "SELECT merge_id, survivor_token, absorbed_token, moved_links, national_id_hash,"
            " merge_time, undone FROM merges WHERE merge_id = ?",
            (merge_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return MergeRecord(
            row.merge_id,
            row.survivor_token,
            row.absorbed_token,
            tuple((hospital, mrn_hash) for hospital, mrn_hash in json.loads(row.moved_links)),
            row.national_id_hash,
            _utc(row.merge_time),
            bool(row.undone),
        )

    async def absorbed_by(self, survivor_token: str) -> list[str]:
        """See IdentityStore.absorbed_by."""
        rows = await self._absorbed.rows(survivor_token)
        return sorted(str(row.absorbed_token) for row in rows)

    async def last_index_change(self) -> str:
        """See IdentityStore.last_index_change."""
        rows = await self._db.execute("SELECT change FROM index_changes WHERE id = 0")
        return str(rows[0].change) if rows else ""

    async def survivor_of(self, person_token: str) -> str | None:
        """See IdentityStore.survivor_of."""
        # With concurrent registrations' candidates, in one request (a registration linked
        # by demographics asks for its candidate's).
        rows = await self._aliases.rows(person_token)
        return str(rows[0].survivor_token) if rows else None

    async def check(self) -> None:
        """See IdentityStore.check."""
        await self._db.check()

    async def close(self) -> None:
        """See IdentityStore.close."""
        await self._db.close()

    async def _copy_link(
        self, hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
    ) -> None:
        await self._writes.apply([_link_copy(hospital_id, mrn_hash, person_token, link_time)])

    async def _list(
        self, hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
    ) -> None:
        """Copy a won link into its person's partition, then mark the link listed (a link
        written before ADR 51 whose copy a crash lost)."""
        await self._copy_link(hospital_id, mrn_hash, person_token, link_time)
        # A plain write to a column no lightweight transaction reads or conditions on.
        await self._db.execute(
            "UPDATE mrn_hash_links SET listed = true WHERE hospital_id = ? AND mrn_hash = ?",
            (hospital_id, mrn_hash),
        )


def _person_rows(
    person_token: str,
    sealed_demographics: bytes | None,
    create_time: datetime,
    national_id_hash: str | None,
    block_hashes: Sequence[str],
) -> list[tuple[str, tuple[Any, ...]]]:
    """The person's row and its blocking keys' rows (idempotent upserts)."""
    # Only the columns that have values: a null cell would be a tombstone.
    values: dict[str, object] = {"person_token": person_token, "create_time": create_time}
    if sealed_demographics is not None:
        values["sealed_demographics"] = sealed_demographics
    if national_id_hash is not None:
        values["national_id_hash"] = national_id_hash
    row = (
        f"INSERT INTO persons ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
        tuple(values.values()),
    )
    return [row, *_match_keys(person_token, block_hashes)]


def _link_copy(
    hospital_id: str, mrn_hash: str, person_token: str, link_time: datetime
) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO person_mrn_hashes (person_token, hospital_id, mrn_hash, link_time)"
        " VALUES (?, ?, ?, ?)",
        (person_token, hospital_id, mrn_hash, link_time),
    )


def _match_keys(
    person_token: str, block_hashes: Sequence[str]
) -> list[tuple[str, tuple[Any, ...]]]:
    return [
        (
            "INSERT INTO match_blocks (block_hash, person_token) VALUES (?, ?)",
            (block_hash, person_token),
        )
        for block_hash in block_hashes
    ]


def _index_change(change: str) -> tuple[str, tuple[Any, ...]]:
    return ("INSERT INTO index_changes (id, change) VALUES (0, ?)", (change,))


def _utc(moment: datetime) -> datetime:
    """Cassandra returns naive UTC timestamps."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _in_key_order(profiles: Mapping[str, bytes] | None) -> list[bytes]:
    """A person's further profiles (the driver returns None for an empty map)."""
    return [profiles[key] for key in sorted(profiles)] if profiles else []
