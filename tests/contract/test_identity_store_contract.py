"""One contract for the identity store, run against SQLite and real Cassandra.

Both backends must create a person once, link a (hospital, MRN hash) once and give a
national ID one holder however many resolves race, also when they run in separate store
instances (processes) on the same data: the master patient index never hands out two tokens
for one national ID, also for patients first known by a record number only. Neither backend
ever holds a record number or national ID in clear.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
from contract_support import StoreKind, Stores

from healthbank.contracts.natid import make_national_id
from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.crypto import LocalKeyring, Sealer
from services.identity.domain import (
    Demographics,
    HospitalLink,
    IdentityRead,
    MatchMethod,
    MrnLinkedToOtherPerson,
    NationalIdClaim,
    PendingMerge,
    PersonNotFound,
    Resolution,
    ReviewItem,
    SealedProfile,
)
from services.identity.index import MasterPatientIndex
from services.identity.store import IdentityStore, SqliteIdentityStore
from services.identity.store_cassandra import MIGRATIONS, CassandraIdentityStore

T0 = datetime(2024, 5, 1, 8, 0, 0, 123000, tzinfo=UTC)
PERSON = "a" * 64
OTHER = "b" * 64
# Stored forms of record numbers (keyed hashes; the store never sees an MRN).
MRN_HASH = "d" * 64
MRN_HASH_2 = "e" * 64
NATIONAL_ID = make_national_id("110101", date(1980, 5, 17), 123)
OTHER_NATIONAL_ID = make_national_id("440305", date(1992, 11, 2), 456)


Backend = Stores  # conftest.py's ``backend``: open_store(), database, count_rows(table)


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(
        SqliteIdentityStore, "identity.db", CassandraIdentityStore, "identity", MIGRATIONS
    )


RECORD_LOOKUP = Principal(PrincipalKind.SERVICE, "record-lookup")


@dataclass
class RecordedReads:
    """The reads an index reported (the audit service's part is tested in tests/services)."""

    reads: list[tuple[Principal, str, IdentityRead]] = field(default_factory=list)

    async def record_read(self, actor: Principal, person_token: str, read: IdentityRead) -> None:
        self.reads.append((actor, person_token, read))


def index_on(store: IdentityStore, keyring: LocalKeyring) -> MasterPatientIndex:
    return MasterPatientIndex(
        store, keyring, Sealer(keyring, 60, 1000), lambda: T0, RecordedReads()
    )


# --- persons -------------------------------------------------------------------------------


async def test_a_person_saved_twice_is_one_person(store: IdentityStore) -> None:
    assert not await store.person_exists(PERSON)
    await store.save_person(PERSON, b"\x01sealed", T0)
    assert await store.person_exists(PERSON)
    await store.save_person(PERSON, b"\x02other", T0)
    (profile,) = await store.profiles([PERSON])
    assert profile.sealed_demographics in (b"\x01sealed", b"\x02other")
    # A person without demographics is a person too.
    await store.save_person(OTHER, None, T0)
    assert await store.person_exists(OTHER)
    await store.check()


async def test_racing_saves_across_instances_leave_one_row(backend: Backend) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    saved = [f"v{attempt}".encode() for attempt in range(20)]
    await asyncio.gather(
        *(stores[attempt % 2].save_person(PERSON, saved[attempt], T0) for attempt in range(20))
    )
    assert await backend.count_rows("persons") == 1
    for store in stores:
        (profile,) = await store.profiles([PERSON])
        assert profile.sealed_demographics in saved


# --- MRN links -----------------------------------------------------------------------------


async def test_first_link_wins_and_never_moves(store: IdentityStore) -> None:
    await store.save_person(PERSON, None, T0)
    await store.save_person(OTHER, None, T0)
    assert await store.linked_person("h1", MRN_HASH) is None
    assert await store.link_mrn_if_absent("h1", MRN_HASH, PERSON, T0) == PERSON
    assert await store.link_mrn_if_absent("h1", MRN_HASH, PERSON, T0) == PERSON
    assert await store.link_mrn_if_absent("h1", MRN_HASH, OTHER, T0) == PERSON
    assert await store.linked_person("h1", MRN_HASH) == PERSON
    # The same MRN at another hospital is another patient record.
    assert await store.link_mrn_if_absent("h2", MRN_HASH, OTHER, T0) == OTHER
    assert await store.links_of(PERSON) == [HospitalLink("h1", MRN_HASH)]
    assert await store.links_of(OTHER) == [HospitalLink("h2", MRN_HASH)]


async def test_links_are_ordered_by_hospital_then_mrn_hash(store: IdentityStore) -> None:
    await store.save_person(PERSON, None, T0)
    for hospital_id, mrn_hash in [("h2", "b"), ("h1", "z"), ("h2", "a"), ("h1", "a")]:
        await store.link_mrn_if_absent(hospital_id, mrn_hash * 64, PERSON, T0)
    assert await store.links_of(PERSON) == [
        HospitalLink("h1", "a" * 64),
        HospitalLink("h1", "z" * 64),
        HospitalLink("h2", "a" * 64),
        HospitalLink("h2", "b" * 64),
    ]
    assert await store.links_of(OTHER) == []


async def test_a_person_saved_with_its_link_exists_filed_and_linked(
    store: IdentityStore,
) -> None:
    linked = await store.save_person_and_link(
        PERSON,
        b"\x01sealed",
        T0,
        "1" * 64,
        block_hashes=["k1"],
        hospital_id="h1",
        mrn_hash=MRN_HASH,
    )
    assert linked == PERSON
    assert await store.person_exists(PERSON)
    (profile,) = await store.profiles([PERSON])
    assert profile == SealedProfile(PERSON, b"\x01sealed", "1" * 64)
    assert await store.persons_matching(["k1"], limit=10) == [PERSON]
    assert await store.linked_person("h1", MRN_HASH) == PERSON
    assert await store.links_of(PERSON) == [HospitalLink("h1", MRN_HASH)]


async def test_a_person_saved_with_a_link_taken_already_gets_the_person_but_not_the_link(
    store: IdentityStore,
) -> None:
    await store.save_person(OTHER, None, T0)
    assert await store.link_mrn_if_absent("h1", MRN_HASH, OTHER, T0) == OTHER
    linked = await store.save_person_and_link(PERSON, None, T0, hospital_id="h1", mrn_hash=MRN_HASH)
    assert linked == OTHER
    assert await store.person_exists(PERSON)
    assert await store.linked_person("h1", MRN_HASH) == OTHER
    assert await store.links_of(PERSON) == []
    assert await store.links_of(OTHER) == [HospitalLink("h1", MRN_HASH)]


async def test_racing_saves_with_one_link_across_instances_agree_on_one_person(
    backend: Backend,
) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    people = [f"{index:064x}" for index in range(10)]
    linked = await asyncio.gather(
        *(
            stores[attempt % 2].save_person_and_link(
                people[attempt % 10], None, T0, hospital_id="h1", mrn_hash="shared"
            )
            for attempt in range(20)
        )
    )
    (winner,) = set(linked)
    assert winner in people
    for store in stores:
        assert await store.linked_person("h1", "shared") == winner
        for person in people:
            assert await store.person_exists(person)
            expected = [HospitalLink("h1", "shared")] if person == winner else []
            assert await store.links_of(person) == expected


# --- national IDs and pending merges ------------------------------------------------------


async def test_a_national_id_has_one_holder(store: IdentityStore) -> None:
    assert await store.national_id_holder("1" * 64) is None
    assert await store.claim_national_id("1" * 64, PERSON, T0) == NationalIdClaim(PERSON, True)
    assert await store.claim_national_id("1" * 64, OTHER, T0) == NationalIdClaim(PERSON, False)
    assert await store.claim_national_id("1" * 64, PERSON, T0) == NationalIdClaim(PERSON, False)
    assert await store.national_id_holder("1" * 64) == PERSON


async def test_a_person_takes_one_national_id(store: IdentityStore) -> None:
    await store.save_person(PERSON, None, T0)
    assert await store.reserve_national_id(PERSON, "1" * 64) == "1" * 64
    assert await store.reserve_national_id(PERSON, "2" * 64) == "1" * 64
    # Releasing another ID than the one held changes nothing; releasing the held one frees it.
    await store.release_national_id(PERSON, "2" * 64)
    assert await store.reserve_national_id(PERSON, "2" * 64) == "1" * 64
    await store.release_national_id(PERSON, "1" * 64)
    assert await store.reserve_national_id(PERSON, "2" * 64) == "2" * 64
    # A person created from a national ID holds it from the start.
    await store.save_person(OTHER, None, T0, "3" * 64)
    assert await store.reserve_national_id(OTHER, "4" * 64) == "3" * 64


async def test_pending_merges_keep_the_first_report(store: IdentityStore) -> None:
    assert await store.pending_merges() == []
    first = PendingMerge(PERSON, OTHER, "h1", T0)
    await store.record_pending_merge(first)
    await store.record_pending_merge(PendingMerge(PERSON, OTHER, "h2", datetime.now(UTC)))
    assert await store.pending_merges() == [first]


async def test_racing_claims_across_instances_agree_on_one_holder(backend: Backend) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    people = [f"{index:064x}" for index in range(10)]
    claims = await asyncio.gather(
        *(
            stores[attempt % 2].claim_national_id("1" * 64, people[attempt % 10], T0)
            for attempt in range(20)
        )
    )
    (holder,) = {claim.holder for claim in claims}
    assert holder in people
    assert [claim.won for claim in claims].count(True) == 1
    for store in stores:
        assert await store.national_id_holder("1" * 64) == holder


async def test_racing_links_across_instances_agree_on_one_person(backend: Backend) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    people = [f"{index:064x}" for index in range(10)]
    for person in people:
        await stores[0].save_person(person, None, T0)
    linked = await asyncio.gather(
        *(
            stores[attempt % 2].link_mrn_if_absent("h1", "shared", people[attempt % 10], T0)
            for attempt in range(20)
        )
    )
    (winner,) = set(linked)
    assert winner in people
    for store in stores:
        assert await store.linked_person("h1", "shared") == winner
        for person in people:
            expected = [HospitalLink("h1", "shared")] if person == winner else []
            assert await store.links_of(person) == expected


# --- the index over racing store instances ------------------------------------------------


async def test_twenty_racing_resolves_make_one_person(
    backend: Backend, keyring: LocalKeyring
) -> None:
    indexes = [index_on(await backend.open_store(), keyring) for _ in range(2)]
    profile = Demographics(family_name="Zhang", birth_date="1980-05-17")

    same_mrn = await asyncio.gather(
        *(
            indexes[attempt % 2].resolve("h1", "MRN-1", NATIONAL_ID, profile)
            for attempt in range(20)
        )
    )
    tokens = {resolution.person_token for resolution in same_mrn}
    assert len(tokens) == 1
    assert [r.match_method for r in same_mrn].count(MatchMethod.CREATED) == 1

    many_mrns = await asyncio.gather(
        *(
            indexes[attempt % 2].resolve("h2", f"M{attempt:02d}", NATIONAL_ID, None)
            for attempt in range(20)
        )
    )
    assert {resolution.person_token for resolution in many_mrns} == tokens
    assert MatchMethod.CREATED not in [r.match_method for r in many_mrns]

    (token,) = tokens
    assert await backend.count_rows("persons") == 1
    links = await indexes[0].links_of(RECORD_LOOKUP, token)
    assert len(links) == 21
    assert await indexes[1].links_of(RECORD_LOOKUP, token) == links


async def test_racing_resolves_of_two_people_for_one_mrn_link_only_one(
    backend: Backend, keyring: LocalKeyring
) -> None:
    indexes = [index_on(await backend.open_store(), keyring) for _ in range(2)]
    results = await asyncio.gather(
        *(
            indexes[attempt % 2].resolve("h1", "shared", national_id, None)
            for attempt, national_id in enumerate([NATIONAL_ID, OTHER_NATIONAL_ID] * 10)
        ),
        return_exceptions=True,
    )
    winners = {result.person_token for result in results if isinstance(result, Resolution)}
    assert len(winners) == 1
    refused = [result for result in results if not isinstance(result, Resolution)]
    assert all(isinstance(result, MrnLinkedToOtherPerson) for result in refused)
    # The loser's national ID resolves to a different person: every one of its calls refused.
    assert len(refused) == 10
    (winner,) = winners
    assert [link.hospital_id for link in await indexes[0].links_of(RECORD_LOOKUP, winner)] == ["h1"]


async def test_a_patient_without_a_national_id_is_a_person(
    backend: Backend, keyring: LocalKeyring
) -> None:
    index = index_on(await backend.open_store(), keyring)
    created = await index.resolve("h1", "MRN-1", None, Demographics(family_name="Zhang"))
    assert created.match_method == MatchMethod.CREATED
    assert len(created.person_token) == 64
    again = await index.resolve("h1", "MRN-1", None, None)
    assert again == Resolution(created.person_token, MatchMethod.HOSPITAL_MRN)
    # Another hospital's record number with the same value is another patient.
    other = await index.resolve("h2", "MRN-1", None, None)
    assert other.person_token != created.person_token
    # Another index (process) agrees on both.
    second = index_on(await backend.open_store(), keyring)
    assert (await second.resolve("h1", "MRN-1", None, None)).person_token == created.person_token
    with pytest.raises(PersonNotFound):
        await index.lookup(RECORD_LOOKUP, NATIONAL_ID)


async def test_a_national_id_arriving_later_is_attached_to_the_person(
    backend: Backend, keyring: LocalKeyring
) -> None:
    index = index_on(await backend.open_store(), keyring)
    first = await index.resolve("h1", "MRN-1", None, None)
    attached = await index.resolve("h1", "MRN-1", NATIONAL_ID, None)
    assert attached == Resolution(first.person_token, MatchMethod.HOSPITAL_MRN)
    assert (await index.lookup(RECORD_LOOKUP, NATIONAL_ID)).person_token == first.person_token
    # The ID now finds the same person from another hospital.
    elsewhere = await index.resolve("h2", "X-9", NATIONAL_ID, None)
    assert elsewhere == Resolution(first.person_token, MatchMethod.NATIONAL_ID)
    assert [
        link.hospital_id for link in await index.links_of(RECORD_LOOKUP, first.person_token)
    ] == [
        "h1",
        "h2",
    ]
    # A second national ID for the same person is refused, and nothing moves.
    with pytest.raises(MrnLinkedToOtherPerson):
        await index.resolve("h1", "MRN-1", OTHER_NATIONAL_ID, None)
    with pytest.raises(PersonNotFound):
        await index.lookup(RECORD_LOOKUP, OTHER_NATIONAL_ID)
    assert await index.pending_merges() == []


async def test_a_national_id_held_by_another_person_is_a_pending_merge(
    backend: Backend, keyring: LocalKeyring
) -> None:
    index = index_on(await backend.open_store(), keyring)
    by_id = await index.resolve("h2", "B-1", NATIONAL_ID, None)
    by_mrn = await index.resolve("h1", "A-1", None, None)
    assert by_id.person_token != by_mrn.person_token
    with pytest.raises(MrnLinkedToOtherPerson):
        await index.resolve("h1", "A-1", NATIONAL_ID, None)
    # Not merged: each keeps what it had, and the pair waits for the MPI's review.
    assert (await index.lookup(RECORD_LOOKUP, NATIONAL_ID)).person_token == by_id.person_token
    assert (await index.resolve("h1", "A-1", None, None)).person_token == by_mrn.person_token
    assert await index.pending_merges() == [
        PendingMerge(by_mrn.person_token, by_id.person_token, "h1", T0)
    ]


async def test_racing_attaches_of_one_national_id_give_it_one_holder(
    backend: Backend, keyring: LocalKeyring
) -> None:
    """Two hospitals that each know the patient by record number only send the ID at once."""
    indexes = [index_on(await backend.open_store(), keyring) for _ in range(2)]
    persons = [
        (await indexes[0].resolve(hospital_id, "M", None, None)).person_token
        for hospital_id in ("h1", "h2")
    ]
    results = await asyncio.gather(
        *(
            indexes[attempt % 2].resolve(("h1", "h2")[attempt % 2], "M", NATIONAL_ID, None)
            for attempt in range(10)
        ),
        return_exceptions=True,
    )
    holder = (await indexes[0].lookup(RECORD_LOOKUP, NATIONAL_ID)).person_token
    assert holder in persons
    (loser,) = set(persons) - {holder}
    for result in results:
        if isinstance(result, Resolution):
            assert result.person_token == holder
        else:
            assert isinstance(result, MrnLinkedToOtherPerson)
    assert [
        (m.mrn_person_token, m.national_id_person_token) for m in await indexes[1].pending_merges()
    ] == [(loser, holder)]


async def test_hospitals_registering_one_new_national_id_at_once_get_one_person(
    backend: Backend, keyring: LocalKeyring
) -> None:
    indexes = [index_on(await backend.open_store(), keyring) for _ in range(2)]
    hospitals = [f"h{number}" for number in range(6)]
    results = await asyncio.gather(
        *(
            indexes[attempt % 2].resolve(hospital_id, f"M-{attempt}", NATIONAL_ID, None)
            for attempt, hospital_id in enumerate(hospitals * 2)
        )
    )
    (token,) = {result.person_token for result in results}
    assert [result.match_method for result in results].count(MatchMethod.CREATED) == 1
    assert (await indexes[0].lookup(RECORD_LOOKUP, NATIONAL_ID)).person_token == token
    links = await indexes[1].links_of(RECORD_LOOKUP, token)
    assert sorted(link.hospital_id for link in links) == sorted(hospitals * 2)
    assert await backend.count_rows("persons") == 1


async def test_nothing_identifying_is_stored_in_clear(
    backend: Backend, keyring: LocalKeyring
) -> None:
    index = index_on(await backend.open_store(), keyring)
    mrn = "MRN-5551234"
    await index.resolve("h1", mrn, None, Demographics(family_name="Zhangsanfeng"))
    await index.resolve("h1", mrn, NATIONAL_ID, None)
    await index.resolve("h2", "MRN-7770001", NATIONAL_ID, None)
    if backend.database is None:
        stored = b"".join(path.read_bytes() for path in backend.data_dir.glob("identity.db*"))
    else:
        stored = b""
        for table in ("persons", "national_ids", "mrn_hash_links", "person_mrn_hashes"):
            for row in await backend.database.execute(f"SELECT * FROM {table}"):
                stored += b"".join(
                    value if isinstance(value, bytes) else str(value).encode() for value in row
                )
    assert b"h1" in stored  # the search does see the rows
    for secret in (mrn, "MRN-7770001", "5551234", NATIONAL_ID, "Zhangsanfeng"):
        assert secret.encode() not in stored


async def test_index_reads_are_reported_to_the_audit(
    backend: Backend, keyring: LocalKeyring
) -> None:
    reads = RecordedReads()
    index = MasterPatientIndex(
        await backend.open_store(), keyring, Sealer(keyring, 60, 1000), lambda: T0, reads
    )
    token = (await index.resolve("h1", "1", NATIONAL_ID, None)).person_token
    assert reads.reads == []  # resolving is a write, audited by ingest
    await index.lookup(RECORD_LOOKUP, NATIONAL_ID)
    await index.links_of(RECORD_LOOKUP, token)
    with pytest.raises(PersonNotFound):
        await index.lookup(RECORD_LOOKUP, OTHER_NATIONAL_ID)
    assert reads.reads == [
        (RECORD_LOOKUP, token, IdentityRead.NATIONAL_ID_LOOKUP),
        (RECORD_LOOKUP, token, IdentityRead.PERSON),
    ]


@dataclass
class CountingKeys:
    """The real keyring, counting the pseudonym calls that reach it (Vault round trips)."""

    keyring: LocalKeyring
    pseudonym_calls: int = 0

    async def pseudonym(self, domain: str, value: str) -> str:
        self.pseudonym_calls += 1
        return await self.keyring.pseudonym(domain, value)

    def __getattr__(self, name: str) -> object:
        return getattr(self.keyring, name)


async def test_a_known_patient_resolves_without_the_key_provider(
    store: IdentityStore, keyring: LocalKeyring
) -> None:
    keys = CountingKeys(keyring)
    index = MasterPatientIndex(
        store,
        keys,
        Sealer(keyring, 60, 1000),
        lambda: T0,
        RecordedReads(),
    )
    token = (await index.resolve("h1", "MRN-1", NATIONAL_ID, None)).person_token
    warmed = keys.pseudonym_calls
    for _ in range(3):
        assert (await index.resolve("h1", "MRN-1", NATIONAL_ID, None)).person_token == token
        assert (await index.resolve("h1", "MRN-1", None, None)).person_token == token
    assert keys.pseudonym_calls == warmed

    # A restarted process derives its MRN key once, then resolves known MRNs locally.
    restarted_keys = CountingKeys(keyring)
    restarted = MasterPatientIndex(
        store,
        restarted_keys,
        Sealer(keyring, 60, 1000),
        lambda: T0,
        RecordedReads(),
    )
    for _ in range(3):
        assert (await restarted.resolve("h1", "MRN-1", None, None)).person_token == token
    assert restarted_keys.pseudonym_calls == 1


# --- Cassandra: the per-person copy of a link -------------------------------------------


@pytest.mark.parametrize("stores", ["cassandra"], indirect=True)
async def test_a_link_whose_copy_was_lost_is_listed_again(
    backend: Backend, store: IdentityStore
) -> None:
    """A crash between the link transaction and its per-person copy heals on the next read."""
    assert backend.database is not None
    await store.save_person(PERSON, None, T0)
    # What a process that died right after winning the link leaves behind.
    await backend.database.execute(
        "INSERT INTO mrn_hash_links (hospital_id, mrn_hash, person_token, link_time)"
        " VALUES (?, ?, ?, ?) IF NOT EXISTS",
        ("h1", MRN_HASH, PERSON, T0),
    )
    await backend.database.execute(
        "INSERT INTO mrn_hash_links (hospital_id, mrn_hash, person_token, link_time)"
        " VALUES (?, ?, ?, ?) IF NOT EXISTS",
        ("h1", MRN_HASH_2, PERSON, T0),
    )
    assert await store.links_of(PERSON) == []

    # A resolve's fast path (an existing link) lists it ...
    assert await store.linked_person("h1", MRN_HASH) == PERSON
    # ... and so does a retried link.
    assert await store.link_mrn_if_absent("h1", MRN_HASH_2, PERSON, T0) == PERSON
    assert await store.links_of(PERSON) == [
        HospitalLink("h1", MRN_HASH),
        HospitalLink("h1", MRN_HASH_2),
    ]
    rows = await backend.database.execute("SELECT listed FROM mrn_hash_links")
    assert [row.listed for row in rows] == [True, True]


@pytest.mark.parametrize("stores", ["cassandra"], indirect=True)
async def test_a_copy_no_link_names_is_neither_listed_nor_moved_by_a_merge(
    backend: Backend, store: IdentityStore
) -> None:
    """ADR 51: the copy is written before the link, so a caller that died in between, or
    lost the link, leaves a copy that is not the person's link."""
    assert backend.database is not None
    await store.save_person(PERSON, None, T0)
    await store.save_person(OTHER, None, T0)
    # What a process that died between the copy and the link leaves behind.
    await backend.database.execute(
        "INSERT INTO person_mrn_hashes (person_token, hospital_id, mrn_hash, link_time)"
        " VALUES (?, ?, ?, ?)",
        (OTHER, "h1", MRN_HASH, T0),
    )
    assert await store.links_of(OTHER) == []
    # The link goes to whoever wins it, with its copy; the loser's copy is deleted.
    assert await store.link_mrn_if_absent("h1", MRN_HASH, PERSON, T0) == PERSON
    assert await store.link_mrn_if_absent("h1", MRN_HASH_2, OTHER, T0) == OTHER
    assert await store.link_mrn_if_absent("h1", MRN_HASH_2, PERSON, T0) == OTHER
    assert await store.links_of(PERSON) == [HospitalLink("h1", MRN_HASH)]
    assert await store.links_of(OTHER) == [HospitalLink("h1", MRN_HASH_2)]
    copies = await backend.database.execute(
        "SELECT hospital_id, mrn_hash FROM person_mrn_hashes WHERE person_token = ?", (PERSON,)
    )
    assert [(row.hospital_id, row.mrn_hash) for row in copies] == [("h1", MRN_HASH)]
    rows = await backend.database.execute("SELECT listed FROM mrn_hash_links")
    assert [row.listed for row in rows] == [True, True]

    # A merge of OTHER into a third person moves OTHER's link only, not the stale copy of
    # PERSON's: PERSON keeps its link.
    third = "c" * 64
    await store.save_person(third, None, T0)
    merge = await store.merge_persons("m-1", third, OTHER, None, T0)
    assert merge.moved_links == (("h1", MRN_HASH_2),)
    assert await store.linked_person("h1", MRN_HASH) == PERSON
    assert await store.linked_person("h1", MRN_HASH_2) == third
    await store.unmerge_persons(merge)
    assert await store.linked_person("h1", MRN_HASH_2) == OTHER
    assert await store.links_of(OTHER) == [HospitalLink("h1", MRN_HASH_2)]


# --- probabilistic matching (ADR 25) -------------------------------------------------------


async def test_a_match_claim_has_one_holder_who_keeps_its_sealed_demographics(
    store: IdentityStore,
) -> None:
    won = await store.claim_match("c" * 64, PERSON, b"\x01sealed", T0)
    lost = await store.claim_match("c" * 64, OTHER, b"\x02other", T0)
    assert won == lost == SealedProfile(PERSON, b"\x01sealed")


async def test_persons_are_found_by_any_of_their_block_hashes_once_each(
    store: IdentityStore,
) -> None:
    await store.save_person(PERSON, b"\x01sealed", T0)
    await store.save_person(OTHER, None, T0, "f" * 64)
    await store.add_match_keys(PERSON, ["k1", "k2"])
    await store.add_match_keys(PERSON, ["k1", "k2"])  # a retry files nothing twice
    await store.add_match_keys(OTHER, ["k2", "k3"])
    assert sorted(await store.persons_matching(["k1", "k2"], limit=10)) == [PERSON, OTHER]
    assert await store.persons_matching(["k1"], limit=10) == [PERSON]
    assert await store.persons_matching(["nobody"], limit=10) == []
    assert sorted(
        await store.profiles([PERSON, OTHER, "0" * 64]), key=lambda p: p.person_token
    ) == [SealedProfile(PERSON, b"\x01sealed", None), SealedProfile(OTHER, None, "f" * 64)]


async def test_each_block_gives_at_most_the_limit_and_every_profile_is_read(
    store: IdentityStore,
) -> None:
    crowd = [f"{index:064x}" for index in range(45)]
    for token in crowd:
        await store.save_person(token, token.encode(), T0)
    for token in crowd[:25]:
        await store.add_match_keys(token, ["common"])
    await store.add_match_keys(crowd[25], ["rare"])
    found = await store.persons_matching(["common", "rare", "common"], limit=10)
    assert len(found) == len(set(found)) == 11
    assert crowd[25] in found and set(found) <= set(crowd[:26])
    # More persons than one request reads, and one that does not exist.
    profiles = await store.profiles([*crowd, "0" * 63 + "z"])
    assert sorted(profile.person_token for profile in profiles) == crowd
    assert all(profile.sealed_demographics == profile.person_token.encode() for profile in profiles)


async def test_registrations_filed_under_a_person_are_its_profiles_too(
    store: IdentityStore,
) -> None:
    await store.save_person(PERSON, b"\x01first", T0)
    await store.save_person(OTHER, b"\x02other", T0)
    await store.add_profile(PERSON, "mrn-b", b"\x03b")
    await store.add_profile(PERSON, "mrn-a", b"\x04a")
    await store.add_profile(PERSON, "mrn-a", b"\x04a")  # a retry writes the same
    profiles = await store.profiles([PERSON, OTHER])
    # The person's own profile first, then the filed ones in key order; others untouched.
    assert [profile for profile in profiles if profile.person_token == PERSON] == [
        SealedProfile(PERSON, b"\x01first", None),
        SealedProfile(PERSON, b"\x04a", None),
        SealedProfile(PERSON, b"\x03b", None),
    ]
    assert [profile for profile in profiles if profile.person_token == OTHER] == [
        SealedProfile(OTHER, b"\x02other", None)
    ]


async def test_reviews_are_queued_once_oldest_first(store: IdentityStore) -> None:
    later = ReviewItem("r2", OTHER, PERSON, 0.9, {"name": "exact"}, T0.replace(hour=9))
    first = ReviewItem("r1", PERSON, OTHER, 0.6, {"name": "fuzzy", "sex": "missing"}, T0)
    for item in (later, first, first):
        await store.record_review(item)
    assert await store.reviews() == [first, later]


async def test_hospitals_registering_one_person_without_an_id_at_once_get_one_person(
    backend: Backend, keyring: LocalKeyring
) -> None:
    indexes = [index_on(await backend.open_store(), keyring) for _ in range(2)]
    in_characters = Demographics("孙", "鑫涛", "1950-02-21", "male", "15744413534")
    in_pinyin = Demographics("Sūn", "Xīntāo", "1950-02-21", "male")
    results = await asyncio.gather(
        *(
            indexes[attempt % 2].resolve(
                f"h{attempt}", f"M-{attempt}", None, (in_characters, in_pinyin)[attempt % 2]
            )
            for attempt in range(6)
        )
    )
    (token,) = {result.person_token for result in results}
    assert [result.match_method for result in results].count(MatchMethod.CREATED) == 1
    links = await indexes[1].links_of(RECORD_LOOKUP, token)
    assert sorted(link.hospital_id for link in links) == [f"h{attempt}" for attempt in range(6)]
    assert await backend.count_rows("persons") == 1
