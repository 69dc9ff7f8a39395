"""One contract for ingest's audit ledger (IngestStore), run against SQLite and real Cassandra.

Both backends must let the first reservation of a message content win (also across store
instances, i.e. processes), return the stored event exactly as reserved (occur times to the
microsecond: a retry re-appends it and the audit service compares), and list unappended
reservations before a cutoff oldest first, however far apart in time they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from contract_support import StoreKind
from engine_support import cassandra_database

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.ids import new_ulid
from healthbank.storage.cassandra import CassandraDatabase
from services.ingest.model import DirectoryEntry
from services.ingest.store import IngestStore, SqliteIngestStore, WriteAudit
from services.ingest.store_cassandra import MIGRATIONS, CassandraIngestStore

T0 = datetime(2026, 11, 28, 12, 0, 0, 123457, tzinfo=UTC)
HOSPITAL = "hospital-a"
ENGINE = Principal(
    PrincipalKind.HOSPITAL_ENGINE,
    "hospital-a-engine",
    HOSPITAL,
    ("integration",),
    Purpose.OPERATIONS,
)
SOMEONE_ELSE = Principal(PrincipalKind.HOSPITAL_ENGINE, "someone-else", HOSPITAL)

Opener = Callable[[], Awaitable[IngestStore]]


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(SqliteIngestStore, "ingest.db", CassandraIngestStore, "ingest", MIGRATIONS)


def audit(
    message_id: str,
    when: datetime = T0,
    content_hash: str = "h1",
    actor: Principal = ENGINE,
    hospital: str = HOSPITAL,
) -> WriteAudit:
    return WriteAudit(hospital, message_id, content_hash, new_ulid(when), when, actor)


async def pending_ids(store: IngestStore, before: datetime, limit: int = 1000) -> list[str]:
    return [a.message_id for a in await store.list_unappended_audits(before, limit)]


# --- the hospital directory ----------------------------------------------------------------


async def test_directory_entries_are_kept_per_hospital_and_the_latest_version_wins(
    store: IngestStore,
) -> None:
    ward = {"resourceType": "Location", "id": "l1", "name": "Ward 3 病房"}
    clinic = {"resourceType": "Organization", "id": "o1", "name": "Clinic"}
    renamed = {**ward, "name": "Ward 3 east"}
    await store.put_directory(HOSPITAL, [DirectoryEntry("Location", "l1", ward)], T0)
    await store.put_directory(
        HOSPITAL,
        [
            DirectoryEntry("Organization", "o1", clinic),
            DirectoryEntry("Location", "l1", renamed),
        ],
        T0 + timedelta(minutes=1),
    )
    await store.put_directory("hospital-b", [DirectoryEntry("Location", "l1", ward)], T0)
    assert await store.list_directory(HOSPITAL) == [
        DirectoryEntry("Location", "l1", renamed),
        DirectoryEntry("Organization", "o1", clinic),
    ]
    assert await store.list_directory("hospital-b") == [DirectoryEntry("Location", "l1", ward)]
    assert await store.list_directory("hospital-c") == []


# --- reserving -------------------------------------------------------------------------------


async def test_first_reservation_wins_and_round_trips_exactly(store: IngestStore) -> None:
    first = audit("m1")
    later = audit("m1", T0 + timedelta(hours=1), actor=SOMEONE_ELSE)
    assert await store.reserve_audit(first) == first
    assert await store.reserve_audit(later) == first
    (listed,) = await store.list_unappended_audits(T0 + timedelta(seconds=1), 10)
    assert listed == first
    assert listed.occur_time == T0  # microseconds kept
    assert listed.actor.roles == ("integration",)
    assert listed.actor.purpose == Purpose.OPERATIONS
    await store.check()


async def test_other_content_or_hospital_is_another_reservation(store: IngestStore) -> None:
    first = audit("m1")
    other_content = audit("m1", content_hash="h2")
    other_hospital = audit("m1", hospital="hospital-b")
    for reserved in (first, other_content, other_hospital):
        assert await store.reserve_audit(reserved) == reserved
    pending = await store.list_unappended_audits(T0 + timedelta(seconds=1), 10)
    assert sorted((a.hospital_id, a.content_hash) for a in pending) == [
        ("hospital-a", "h1"),
        ("hospital-a", "h2"),
        ("hospital-b", "h1"),
    ]


async def test_concurrent_reservations_from_several_instances_agree(open_store: Opener) -> None:
    stores = [await open_store() for _ in range(3)]
    attempts = [
        audit("race", T0 + timedelta(milliseconds=i), actor=ENGINE if i % 2 else SOMEONE_ELSE)
        for i in range(12)
    ]
    outcomes = await asyncio.gather(
        *(stores[i % 3].reserve_audit(attempt) for i, attempt in enumerate(attempts))
    )
    assert len({outcome.event_id for outcome in outcomes}) == 1
    assert outcomes[0] in attempts
    assert await stores[1].list_unappended_audits(T0 + timedelta(days=1), 10) == [outcomes[0]]


# --- listing ---------------------------------------------------------------------------------


async def test_pending_are_listed_oldest_first_before_the_cutoff(store: IngestStore) -> None:
    # 40 messages 17 s apart: spread over a dozen minutes (and every shard).
    reserved = [audit(f"m{i:02d}", T0 + timedelta(seconds=17 * i)) for i in range(40)]
    for one in reversed(reserved):
        await store.reserve_audit(one)
    cutoff = reserved[20].occur_time  # exclusive
    assert await pending_ids(store, cutoff) == [a.message_id for a in reserved[:20]]
    assert await store.list_unappended_audits(cutoff, 7) == reserved[:7]
    assert await pending_ids(store, T0) == []
    assert await pending_ids(store, T0 + timedelta(days=1)) == [a.message_id for a in reserved]
    assert await store.list_unappended_audits(T0 + timedelta(days=1), 0) == []


async def test_old_reservations_are_found_however_old(store: IngestStore) -> None:
    await store.reserve_audit(audit("recent"))
    await store.reserve_audit(audit("last-month", T0 - timedelta(days=30)))
    await store.reserve_audit(audit("last-year", T0 - timedelta(days=400)))
    assert await pending_ids(store, T0 + timedelta(minutes=1)) == [
        "last-year",
        "last-month",
        "recent",
    ]


async def test_a_scan_does_not_hide_later_reservations(store: IngestStore) -> None:
    # Scans with a late cutoff first (nothing pending), then reservations in that past.
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    await store.reserve_audit(audit("m1"))
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m1"]
    await store.mark_audit_appended(HOSPITAL, "m1", "h1")
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    await store.reserve_audit(audit("m2", T0 + timedelta(seconds=1)))
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m2"]


# --- appending and discarding ----------------------------------------------------------------


async def test_marking_appended(store: IngestStore) -> None:
    first = audit("m1")
    await store.reserve_audit(first)
    await store.reserve_audit(audit("m2", T0 + timedelta(seconds=1)))
    await store.mark_audit_appended(HOSPITAL, "m1", "h1")
    await store.mark_audit_appended(HOSPITAL, "m1", "h1")  # idempotent
    await store.mark_audit_appended(HOSPITAL, "unknown", "h1")  # nothing to mark
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m2"]
    # A retry of the message finds the appended event: nothing to send again.
    again = await store.reserve_audit(audit("m1", T0 + timedelta(hours=1)))
    assert again == first.appended_copy()
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m2"]


async def test_discarding(store: IngestStore) -> None:
    failed = audit("failed")
    appended = audit("appended", T0 + timedelta(seconds=1))
    await store.reserve_audit(failed)
    await store.reserve_audit(appended)
    await store.mark_audit_appended(HOSPITAL, "appended", "h1")

    await store.discard_audit(HOSPITAL, "failed", "h1")
    await store.discard_audit(HOSPITAL, "appended", "h1")  # an appended event stays
    await store.discard_audit(HOSPITAL, "unknown", "h1")
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    assert (await store.reserve_audit(audit("appended", T0 + timedelta(hours=2)))).appended

    # A discarded reservation is gone: the next submission reserves a new event.
    fresh = audit("failed", T0 + timedelta(hours=1))
    assert await store.reserve_audit(fresh) == fresh
    assert await store.list_unappended_audits(T0 + timedelta(days=1), 10) == [fresh]


# --- Cassandra only: the index of pending reservations after a crash between writes ---------


@pytest.fixture
async def cassandra(
    engines: dict[str, str], cassandra_keyspace: str
) -> AsyncIterator[tuple[CassandraIngestStore, CassandraDatabase]]:
    """A Cassandra store and its keyspace, to write what a crash between two steps leaves."""
    database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    store = await CassandraIngestStore(database).open()
    yield store, database
    await store.close()


async def test_stale_index_rows_are_skipped_and_removed(
    cassandra: tuple[CassandraIngestStore, CassandraDatabase],
) -> None:
    store, database = cassandra
    for message_id in ("appended", "discarded", "kept"):
        await store.reserve_audit(audit(message_id))
    # Crashes after the reservation's LWT and before its index row was deleted.
    await database.execute(
        "UPDATE write_audits SET appended = true WHERE hospital_id = ? AND message_id = ?"
        " AND content_hash = ? IF EXISTS",
        (HOSPITAL, "appended", "h1"),
    )
    await database.execute(
        "DELETE FROM write_audits WHERE hospital_id = ? AND message_id = ? AND content_hash = ?"
        " IF EXISTS",
        (HOSPITAL, "discarded", "h1"),
    )
    assert len(await database.execute("SELECT * FROM pending_audits")) == 3
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["kept"]
    left = await database.execute("SELECT message_id FROM pending_audits")
    assert [row.message_id for row in left] == ["kept"]


async def test_a_retry_restores_a_missing_index_row(
    cassandra: tuple[CassandraIngestStore, CassandraDatabase],
) -> None:
    store, database = cassandra
    first = audit("m1")
    await store.reserve_audit(first)
    # A crash after the reservation's LWT and before its index row was written.
    await database.execute("TRUNCATE pending_audits")
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    assert await store.reserve_audit(audit("m1", T0 + timedelta(minutes=3))) == first
    assert await store.list_unappended_audits(T0 + timedelta(days=1), 10) == [first]
    # Scans drop the markers of minutes they found empty, and only those.
    await store.mark_audit_appended(HOSPITAL, "m1", "h1")
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    assert await database.execute("SELECT * FROM pending_minutes") == []
