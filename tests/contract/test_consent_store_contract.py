"""One contract for the consent store, run against SQLite and real Cassandra.

Both backends must keep one grant per (person, request id) however many retries race in
however many store instances, keep the first revoke time, list a person's grants newest
first in exact pages, find grants by grantee hospital and by request id, break-glass
sessions by opener and expiry, and keep a person's proxies (first registration time kept).
Times are whole milliseconds (Cassandra's precision).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from contract_support import StoreKind, Stores

from healthbank.core.ids import MonotonicUlidGenerator
from services.consent.domain import BreakGlassSession, Grant, Proxy
from services.consent.store import ConsentStore, SqliteConsentStore
from services.consent.store_cassandra import MIGRATIONS, CassandraConsentStore

T0 = datetime(2030, 6, 1, 8, 0, 0, 250000, tzinfo=UTC)
PERSON = "a" * 64
OTHER = "b" * 64
HOSPITAL = "city-general"
OTHER_HOSPITAL = "east-er"
ALLERGY, IMAGING = 1, 5


Backend = Stores  # conftest.py's ``backend``: open_store(), database


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(SqliteConsentStore, "consent.db", CassandraConsentStore, "consent", MIGRATIONS)


@pytest.fixture
def new_id() -> MonotonicUlidGenerator:
    return MonotonicUlidGenerator()


def make_grant(
    grant_id: str,
    *,
    person: str = PERSON,
    hospital: str = HOSPITAL,
    request_id: str = "req-1",
    categories: frozenset[int] = frozenset(),
    clinician: str = "",
    create_time: datetime = T0,
) -> Grant:
    return Grant(
        grant_id=grant_id,
        person_token=person,
        grantee_hospital_id=hospital,
        grantee_clinician_id=clinician,
        categories=categories,
        valid_from=create_time + timedelta(hours=1),
        expire_time=create_time + timedelta(days=30),
        create_time=create_time,
        request_id=request_id,
    )


def session(
    session_id: str, *, person: str = PERSON, opened_by: str = "er-doc-1", open_time: datetime = T0
) -> BreakGlassSession:
    return BreakGlassSession(
        session_id=session_id,
        person_token=person,
        opened_by=opened_by,
        hospital_id=OTHER_HOSPITAL,
        open_time=open_time,
        expire_time=open_time + timedelta(hours=4),
        sealed_justification=b"\x01sealed " + session_id.encode(),
    )


# --- creating grants -------------------------------------------------------------------------


async def test_a_grant_round_trips(store: ConsentStore, new_id: MonotonicUlidGenerator) -> None:
    partial = make_grant(new_id(T0), categories=frozenset({ALLERGY, IMAGING}), clinician="doc-7")
    everything = make_grant(new_id(T0), request_id="req-2")
    assert await store.create_grant(partial) == partial
    assert await store.create_grant(everything) == everything
    assert await store.get_grant(PERSON, partial.grant_id) == partial
    assert await store.get_grant(PERSON, everything.grant_id) == everything
    assert await store.get_grant(OTHER, partial.grant_id) is None
    assert await store.get_grant(PERSON, new_id(T0)) is None
    await store.check()


async def test_a_request_id_creates_one_grant_per_person(
    store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    first = make_grant(new_id(T0), request_id="retry-me")
    assert await store.create_grant(first) == first
    retry = make_grant(new_id(T0), request_id="retry-me", hospital=OTHER_HOSPITAL)
    assert await store.create_grant(retry) == first
    assert await store.get_grant(PERSON, retry.grant_id) is None
    # The same request id from another person is another request.
    theirs = make_grant(new_id(T0), person=OTHER, request_id="retry-me")
    assert await store.create_grant(theirs) == theirs
    assert [g.grant_id for g in await store.list_grants(PERSON, 10)] == [first.grant_id]
    assert await store.grants_for_hospital(PERSON, OTHER_HOSPITAL) == []


async def test_racing_retries_across_instances_create_one_grant(
    backend: Backend, new_id: MonotonicUlidGenerator
) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    attempts = [make_grant(new_id(T0), request_id="burst") for _ in range(20)]
    created = await asyncio.gather(
        *(stores[index % 2].create_grant(grant) for index, grant in enumerate(attempts))
    )
    (grant,) = set(created)
    assert grant in attempts
    for store in stores:
        assert await store.list_grants(PERSON, 100) == [grant]
        assert await store.grants_for_hospital(PERSON, HOSPITAL) == [grant]


async def test_a_grant_is_found_by_its_request_id(
    store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    assert await store.grant_for_request(PERSON, "req-1") is None
    grant = await store.create_grant(make_grant(new_id(T0)))
    assert await store.grant_for_request(PERSON, "req-1") == grant
    assert await store.grant_for_request(OTHER, "req-1") is None
    revoked = await store.revoke_grant(PERSON, grant.grant_id, T0 + timedelta(hours=2))
    # The grant as it is now, revocation included.
    assert await store.grant_for_request(PERSON, "req-1") == revoked


# --- revoking ------------------------------------------------------------------------------


async def test_revoke_keeps_the_first_time(
    store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    grant = await store.create_grant(make_grant(new_id(T0)))
    first = T0 + timedelta(hours=2)
    revoked = await store.revoke_grant(PERSON, grant.grant_id, first)
    assert revoked == replace(grant, revoke_time=first)
    again = await store.revoke_grant(PERSON, grant.grant_id, first + timedelta(hours=1))
    assert again == revoked
    assert await store.get_grant(PERSON, grant.grant_id) == revoked
    assert await store.list_grants(PERSON, 10) == [revoked]
    assert await store.grants_for_hospital(PERSON, HOSPITAL) == [revoked]


async def test_revoking_an_unknown_grant_creates_nothing(
    store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    grant = await store.create_grant(make_grant(new_id(T0)))
    assert await store.revoke_grant(PERSON, new_id(T0), T0) is None
    # Another person's grant id is unknown under this person.
    assert await store.revoke_grant(OTHER, grant.grant_id, T0) is None
    assert await store.get_grant(OTHER, grant.grant_id) is None
    assert await store.list_grants(OTHER, 10) == []
    assert await store.list_grants(PERSON, 10) == [grant]


async def test_racing_revokes_across_instances_agree_on_one_time(
    backend: Backend, new_id: MonotonicUlidGenerator
) -> None:
    stores = [await backend.open_store(), await backend.open_store()]
    grant = await stores[0].create_grant(make_grant(new_id(T0)))
    revoked = await asyncio.gather(
        *(
            stores[index % 2].revoke_grant(
                PERSON, grant.grant_id, T0 + timedelta(minutes=1, milliseconds=index)
            )
            for index in range(10)
        )
    )
    times = {r.revoke_time for r in revoked if r is not None}
    assert all(r is not None for r in revoked) and len(times) == 1
    (revoke_time,) = times
    assert await stores[1].get_grant(PERSON, grant.grant_id) == replace(
        grant, revoke_time=revoke_time
    )


# --- listing ---------------------------------------------------------------------------------


async def test_grants_are_listed_newest_first_in_exact_pages(
    store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    created = []
    for index in range(7):
        # Several in one millisecond: the monotonic ids still order them.
        when = T0 + timedelta(milliseconds=index // 3)
        created.append(await store.create_grant(make_grant(new_id(when), request_id=f"r{index}")))
    await store.create_grant(make_grant(new_id(T0), person=OTHER))
    newest_first = list(reversed(created))

    assert await store.list_grants(PERSON, 100) == newest_first
    pages: list[list[Grant]] = []
    before: str | None = None
    while True:
        page = await store.list_grants(PERSON, 3, before)
        if not page:
            break
        pages.append(page)
        before = page[-1].grant_id
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [grant for page in pages for grant in page] == newest_first
    assert await store.list_grants(PERSON, 2, created[1].grant_id) == [created[0]]
    assert await store.list_grants(PERSON, 2, created[0].grant_id) == []
    assert await store.list_grants("c" * 64, 10) == []


async def test_grants_for_a_hospital(store: ConsentStore, new_id: MonotonicUlidGenerator) -> None:
    ours = [
        await store.create_grant(make_grant(new_id(T0), request_id=f"r{index}"))
        for index in range(3)
    ]
    await store.create_grant(make_grant(new_id(T0), hospital=OTHER_HOSPITAL, request_id="o"))
    await store.create_grant(make_grant(new_id(T0), person=OTHER, request_id="p"))
    revoked = await store.revoke_grant(PERSON, ours[1].grant_id, T0 + timedelta(hours=1))
    assert revoked is not None
    found = await store.grants_for_hospital(PERSON, HOSPITAL)
    expected = [ours[0], revoked, ours[2]]
    assert sorted(found, key=lambda g: g.grant_id) == expected
    assert await store.grants_for_hospital(PERSON, "nowhere") == []
    assert [g.grantee_hospital_id for g in await store.grants_for_hospital(OTHER, HOSPITAL)] == [
        HOSPITAL
    ]


# --- break-glass sessions -------------------------------------------------------------------


async def test_break_glass_sessions_by_opener_and_expiry(
    store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    early = session(new_id(T0))
    late = session(new_id(T0 + timedelta(hours=2)), open_time=T0 + timedelta(hours=2))
    colleague = session(new_id(T0), opened_by="er-doc-2")
    other_person = session(new_id(T0), person=OTHER)
    for each in (early, late, colleague, other_person):
        await store.add_break_glass(each)

    def ids(sessions: list[BreakGlassSession]) -> set[str]:
        return {each.session_id for each in sessions}

    found = await store.break_glass_sessions(PERSON, "er-doc-1", T0)
    assert ids(found) == {early.session_id, late.session_id}
    assert {each.session_id: each for each in found}[early.session_id] == early
    # A session ending exactly at the bound is over.
    assert ids(await store.break_glass_sessions(PERSON, "er-doc-1", early.expire_time)) == {
        late.session_id
    }
    assert await store.break_glass_sessions(PERSON, "er-doc-1", late.expire_time) == []
    assert ids(await store.break_glass_sessions(PERSON, "er-doc-2", T0)) == {colleague.session_id}
    assert ids(await store.break_glass_sessions(OTHER, "er-doc-1", T0)) == {other_person.session_id}


# --- Cassandra: a claimed request whose grant was never written -----------------------------


@pytest.mark.parametrize("stores", ["cassandra"], indirect=True)
async def test_a_retry_writes_the_grant_a_dead_attempt_claimed(
    backend: Backend, store: ConsentStore, new_id: MonotonicUlidGenerator
) -> None:
    """A crash between the request-id claim and the grant write heals on the retry."""
    assert backend.database is not None
    claimed = make_grant(new_id(T0), request_id="orphan", categories=frozenset({IMAGING}))
    # What a process that died right after winning the claim leaves behind.
    await backend.database.execute(
        "INSERT INTO grant_requests (person_token, request_id, grant_id, grantee_hospital_id,"
        " grantee_clinician_id, categories, valid_from, expire_time, create_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
        (
            PERSON,
            "orphan",
            claimed.grant_id,
            HOSPITAL,
            "",
            claimed.categories,
            claimed.valid_from,
            claimed.expire_time,
            claimed.create_time,
        ),
    )
    assert await store.list_grants(PERSON, 10) == []

    retry = make_grant(new_id(T0 + timedelta(seconds=5)), request_id="orphan")
    assert await store.create_grant(retry) == claimed
    assert await store.get_grant(PERSON, claimed.grant_id) == claimed
    assert await store.list_grants(PERSON, 10) == [claimed]
    assert await store.grants_for_hospital(PERSON, HOSPITAL) == [claimed]


@pytest.mark.parametrize("stores", ["cassandra"], indirect=True)
async def test_cassandra_keeps_milliseconds(store: ConsentStore) -> None:
    """What the store returns on create is what it returns later: times to the millisecond."""
    precise = T0 + timedelta(microseconds=456789)
    grant = make_grant("01J00000000000000000000000", create_time=precise)
    created = await store.create_grant(grant)
    assert created.create_time == T0 + timedelta(milliseconds=456)
    assert await store.get_grant(PERSON, grant.grant_id) == created
    revoked = await store.revoke_grant(PERSON, grant.grant_id, precise)
    assert revoked is not None and revoked.revoke_time == created.create_time
    assert await store.get_grant(PERSON, grant.grant_id) == revoked


# --- proxies ---------------------------------------------------------------------------------


async def test_proxies_are_registered_once_listed_oldest_first_and_removed(
    store: ConsentStore,
) -> None:
    guardian = Proxy(PERSON, "guardian-17", T0)
    parent = Proxy(PERSON, "parent-3", T0 + timedelta(minutes=1))
    assert await store.get_proxy(PERSON, "guardian-17") is None
    assert await store.add_proxy(parent) == parent
    assert await store.add_proxy(guardian) == guardian
    # A second registration keeps the first time.
    assert await store.add_proxy(replace(guardian, create_time=T0 + timedelta(days=1))) == guardian
    assert await store.add_proxy(Proxy(OTHER, "guardian-17", T0)) == Proxy(OTHER, "guardian-17", T0)
    assert await store.list_proxies(PERSON) == [guardian, parent]
    assert await store.get_proxy(PERSON, "guardian-17") == guardian

    await store.remove_proxy(PERSON, "guardian-17")
    await store.remove_proxy(PERSON, "never-registered")
    assert await store.get_proxy(PERSON, "guardian-17") is None
    assert await store.list_proxies(PERSON) == [parent]
    # Another person's registration of the same proxy is untouched.
    assert await store.get_proxy(OTHER, "guardian-17") == Proxy(OTHER, "guardian-17", T0)
    # Registered again after removal: a new registration with its own time.
    again = Proxy(PERSON, "guardian-17", T0 + timedelta(days=2))
    assert await store.add_proxy(again) == again
    assert await store.list_proxies(PERSON) == [parent, again]
