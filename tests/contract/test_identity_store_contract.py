"""One contract for the identity store, run against SQLite and real Cassandra.

Both backends must create a person once and link a (hospital, MRN) once however many
resolves race, also when they run in separate store instances (processes) on the same
data: the master patient index never hands out two tokens for one national ID.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from contract_support import StoreKind, Stores

from healthbank.contracts.natid import make_national_id
from healthbank.crypto import LocalKeyring, Sealer
from services.identity.domain import (
    Demographics,
    HospitalLink,
    MatchMethod,
    MrnLinkedToOtherPerson,
    Resolution,
)
from services.identity.index import MasterPatientIndex
from services.identity.store import IdentityStore, SqliteIdentityStore
from services.identity.store_cassandra import MIGRATIONS, CassandraIdentityStore

T0 = datetime(2024, 5, 1, 8, 0, 0, 123000, tzinfo=UTC)
PERSON = "a" * 64
OTHER = "b" * 64
NATIONAL_ID = make_national_id("110101", date(1980, 5, 17), 123)
OTHER_NATIONAL_ID = make_national_id("440305", date(1992, 11, 2), 456)


Backend = Stores  # conftest.py's ``backend``: open_store(), database, count_rows(table)


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(
        SqliteIdentityStore, "identity.db", CassandraIdentityStore, "identity", MIGRATIONS
    )


def index_on(store: IdentityStore, keyring: LocalKeyring) -> MasterPatientIndex:
    return MasterPatientIndex(store, keyring, Sealer(keyring, 60, 1000), lambda: T0)


# --- persons -------------------------------------------------------------------------------


async def test_person_is_created_once(store: IdentityStore) -> None:
    assert not await store.person_exists(PERSON)
    assert await store.create_person_if_absent(PERSON, b"\x01sealed", T0)
    assert await store.person_exists(PERSON)
    assert not await store.create_person_if_absent(PERSON, b"\x02other", T0)
    # A person without demographics is a person too.
    assert await store.create_person_if_absent(OTHER, None, T0)
    assert await store.person_exists(OTHER)
    await store.check()


async def test_racing_creates_across_instances_create_one_person(backend: Backend) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    created = await asyncio.gather(
        *(
            stores[attempt % 2].create_person_if_absent(PERSON, f"v{attempt}".encode(), T0)
            for attempt in range(20)
        )
    )
    assert created.count(True) == 1
    assert await backend.count_rows("persons") == 1


# --- MRN links -----------------------------------------------------------------------------


async def test_first_link_wins_and_never_moves(store: IdentityStore) -> None:
    await store.create_person_if_absent(PERSON, None, T0)
    await store.create_person_if_absent(OTHER, None, T0)
    assert await store.linked_person("h1", "MRN-1") is None
    assert await store.link_mrn_if_absent("h1", "MRN-1", PERSON, T0) == PERSON
    assert await store.link_mrn_if_absent("h1", "MRN-1", PERSON, T0) == PERSON
    assert await store.link_mrn_if_absent("h1", "MRN-1", OTHER, T0) == PERSON
    assert await store.linked_person("h1", "MRN-1") == PERSON
    # The same MRN at another hospital is another patient record.
    assert await store.link_mrn_if_absent("h2", "MRN-1", OTHER, T0) == OTHER
    assert await store.links_of(PERSON) == [HospitalLink("h1", "MRN-1")]
    assert await store.links_of(OTHER) == [HospitalLink("h2", "MRN-1")]


async def test_links_are_ordered_by_hospital_then_mrn(store: IdentityStore) -> None:
    await store.create_person_if_absent(PERSON, None, T0)
    for hospital_id, mrn in [("h2", "b"), ("h1", "z"), ("h2", "a"), ("h1", "a")]:
        await store.link_mrn_if_absent(hospital_id, mrn, PERSON, T0)
    assert await store.links_of(PERSON) == [
        HospitalLink("h1", "a"),
        HospitalLink("h1", "z"),
        HospitalLink("h2", "a"),
        HospitalLink("h2", "b"),
    ]
    assert await store.links_of(OTHER) == []


async def test_racing_links_across_instances_agree_on_one_person(backend: Backend) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    people = [f"{index:064x}" for index in range(10)]
    for person in people:
        await stores[0].create_person_if_absent(person, None, T0)
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
    assert len(await indexes[0].links_of(token)) == 21
    assert await indexes[1].links_of(token) == await indexes[0].links_of(token)


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
    assert await indexes[0].links_of(winner) == [HospitalLink("h1", "shared")]


# --- Cassandra: the per-person copy of a link -------------------------------------------


@pytest.mark.parametrize("stores", ["cassandra"], indirect=True)
async def test_a_link_whose_copy_was_lost_is_listed_again(
    backend: Backend, store: IdentityStore
) -> None:
    """A crash between the link transaction and its per-person copy heals on the next read."""
    assert backend.database is not None
    await store.create_person_if_absent(PERSON, None, T0)
    # What a process that died right after winning the link leaves behind.
    await backend.database.execute(
        "INSERT INTO mrn_links (hospital_id, mrn, person_token, link_time) VALUES (?, ?, ?, ?)"
        " IF NOT EXISTS",
        ("h1", "MRN-1", PERSON, T0),
    )
    await backend.database.execute(
        "INSERT INTO mrn_links (hospital_id, mrn, person_token, link_time) VALUES (?, ?, ?, ?)"
        " IF NOT EXISTS",
        ("h1", "MRN-2", PERSON, T0),
    )
    assert await store.links_of(PERSON) == []

    # A resolve's fast path (an existing link) lists it ...
    assert await store.linked_person("h1", "MRN-1") == PERSON
    # ... and so does a retried link.
    assert await store.link_mrn_if_absent("h1", "MRN-2", PERSON, T0) == PERSON
    assert await store.links_of(PERSON) == [
        HospitalLink("h1", "MRN-1"),
        HospitalLink("h1", "MRN-2"),
    ]
    rows = await backend.database.execute("SELECT listed FROM mrn_links")
    assert [row.listed for row in rows] == [True, True]
