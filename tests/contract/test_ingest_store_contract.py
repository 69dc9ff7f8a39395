"""One contract for ingest's pending audit notes (IngestStore), run against SQLite and real
Cassandra.

Both backends must return a noted event exactly as noted (occur times to the microsecond:
the flush appends a claim's event and the audit service compares), list notes of messages
not marked appended before a cutoff oldest first, however far apart in time they are, and
remember what was marked appended (also across store instances, i.e. processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from contract_support import StoreKind
from engine_support import cassandra_database

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, principal_to_json
from healthbank.core.ids import new_ulid
from healthbank.records import to_micros
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


async def test_directories_written_side_by_side_with_notes_and_reads_all_land(
    store: IngestStore,
) -> None:
    # Synthea sends its hospital and practitioner directories beside the patients' bundles;
    # embedded, a cursor freed on the wrong thread once broke one of these writes.
    def entries(hospital: str) -> list[DirectoryEntry]:
        return [
            DirectoryEntry("Practitioner", f"p{i}", {"resourceType": "Practitioner", "id": f"p{i}"})
            for i in range(60)
        ]

    hospitals = [f"hospital-{n}" for n in range(8)]
    for round_number in range(25):
        await asyncio.gather(
            *(store.put_directory(h, entries(h), T0) for h in hospitals),
            *(store.note_pending(audit(f"m{round_number}-{n}")) for n in range(4)),
            *(store.list_directory(h) for h in hospitals),
        )
    for hospital in hospitals:
        assert await store.list_directory(hospital) == sorted(
            entries(hospital), key=lambda e: e.resource_id
        )
    assert len(await pending_ids(store, T0 + timedelta(seconds=1))) == 25 * 4


# --- noting --------------------------------------------------------------------------------


async def test_a_note_round_trips_exactly(store: IngestStore) -> None:
    first = audit("m1")
    await store.note_pending(first)
    await store.note_pending(first)  # idempotent
    (listed,) = await store.list_unappended_audits(T0 + timedelta(seconds=1), 10)
    assert listed == first
    assert listed.occur_time == T0  # microseconds kept
    assert listed.actor.roles == ("integration",)
    assert listed.actor.purpose == Purpose.OPERATIONS
    await store.check()


async def test_other_content_or_hospital_is_another_note(store: IngestStore) -> None:
    for noted in (audit("m1"), audit("m1", content_hash="h2"), audit("m1", hospital="hospital-b")):
        await store.note_pending(noted)
    pending = await store.list_unappended_audits(T0 + timedelta(seconds=1), 10)
    assert sorted((a.hospital_id, a.content_hash) for a in pending) == [
        ("hospital-a", "h1"),
        ("hospital-a", "h2"),
        ("hospital-b", "h1"),
    ]


async def test_concurrent_notes_from_several_instances_end_with_one_mark(
    open_store: Opener,
) -> None:
    stores = [await open_store() for _ in range(3)]
    attempts = [
        audit("race", T0 + timedelta(milliseconds=i), actor=ENGINE if i % 2 else SOMEONE_ELSE)
        for i in range(12)
    ]
    await asyncio.gather(
        *(stores[i % 3].note_pending(attempt) for i, attempt in enumerate(attempts))
    )
    listed = await stores[1].list_unappended_audits(T0 + timedelta(days=1), 20)
    assert listed and all(one in attempts for one in listed)
    await stores[2].mark_audit_appended(attempts[5])
    assert await stores[0].list_unappended_audits(T0 + timedelta(days=1), 20) == []
    assert await stores[0].is_audit_appended(HOSPITAL, "race", "h1")


# --- listing ---------------------------------------------------------------------------------


async def test_pending_are_listed_oldest_first_before_the_cutoff(store: IngestStore) -> None:
    # 40 messages 17 s apart: spread over a dozen minutes (and every shard).
    noted = [audit(f"m{i:02d}", T0 + timedelta(seconds=17 * i)) for i in range(40)]
    for one in reversed(noted):
        await store.note_pending(one)
    cutoff = noted[20].occur_time  # exclusive
    assert await pending_ids(store, cutoff) == [a.message_id for a in noted[:20]]
    assert await store.list_unappended_audits(cutoff, 7) == noted[:7]
    assert await pending_ids(store, T0) == []
    assert await pending_ids(store, T0 + timedelta(days=1)) == [a.message_id for a in noted]
    assert await store.list_unappended_audits(T0 + timedelta(days=1), 0) == []


async def test_old_notes_are_found_however_old(store: IngestStore) -> None:
    await store.note_pending(audit("recent"))
    await store.note_pending(audit("last-month", T0 - timedelta(days=30)))
    await store.note_pending(audit("last-year", T0 - timedelta(days=400)))
    assert await pending_ids(store, T0 + timedelta(minutes=1)) == [
        "last-year",
        "last-month",
        "recent",
    ]


async def test_a_scan_does_not_hide_later_notes(store: IngestStore) -> None:
    # Scans with a late cutoff first (nothing pending), then notes in that past.
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    first = audit("m1")
    await store.note_pending(first)
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m1"]
    await store.mark_audit_appended(first)
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    await store.note_pending(audit("m2", T0 + timedelta(seconds=1)))
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m2"]


# --- appending and discarding ----------------------------------------------------------------


async def test_marking_appended(store: IngestStore) -> None:
    first = audit("m1")
    await store.note_pending(first)
    await store.note_pending(audit("m2", T0 + timedelta(seconds=1)))
    await store.mark_audit_appended(first)
    await store.mark_audit_appended(first)  # idempotent
    await store.mark_audit_appended(audit("unnoted"))  # appended without a note
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["m2"]
    # A retry of the message finds the event appended: nothing to send again.
    assert await store.is_audit_appended(HOSPITAL, "m1", "h1")
    assert await store.is_audit_appended(HOSPITAL, "unnoted", "h1")
    assert not await store.is_audit_appended(HOSPITAL, "m2", "h1")
    assert not await store.is_audit_appended(HOSPITAL, "m1", "h2")


async def test_discarding(store: IngestStore) -> None:
    failed = audit("failed")
    appended = audit("appended", T0 + timedelta(seconds=1))
    await store.note_pending(failed)
    await store.note_pending(appended)
    await store.mark_audit_appended(appended)

    await store.discard_audit(failed)
    await store.discard_audit(appended)  # an appended event stays appended
    await store.discard_audit(audit("unknown"))
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    assert await store.is_audit_appended(HOSPITAL, "appended", "h1")
    assert not await store.is_audit_appended(HOSPITAL, "failed", "h1")

    # A discarded note is gone: the next submission notes again.
    fresh = audit("failed", T0 + timedelta(hours=1))
    await store.note_pending(fresh)
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


async def test_stale_notes_are_skipped_and_removed(
    cassandra: tuple[CassandraIngestStore, CassandraDatabase],
) -> None:
    store, database = cassandra
    for message_id in ("appended", "kept"):
        await store.note_pending(audit(message_id))
    # A crash after the appended row and before the note was deleted (one logged batch
    # normally writes both; a batchlog replay may lag).
    await database.execute(
        "INSERT INTO appended_audits (hospital_id, message_id, content_hash, event_id)"
        " VALUES (?, ?, ?, ?)",
        (HOSPITAL, "appended", "h1", "event"),
    )
    assert len(await database.execute("SELECT * FROM pending_audits")) == 2
    assert await pending_ids(store, T0 + timedelta(days=1)) == ["kept"]
    left = await database.execute("SELECT message_id FROM pending_audits")
    assert [row.message_id for row in left] == ["kept"]
    # Scans drop the markers of minutes they found empty, and only those.
    (kept,) = await store.list_unappended_audits(T0 + timedelta(days=1), 10)
    await store.mark_audit_appended(kept)
    assert await pending_ids(store, T0 + timedelta(days=1)) == []
    assert await database.execute("SELECT * FROM pending_minutes") == []


async def test_reservations_of_the_earlier_protocol_still_count(
    cassandra: tuple[CassandraIngestStore, CassandraDatabase],
) -> None:
    store, database = cassandra
    occur_us = to_micros(T0)
    for message_id, appended in (("old-pending", False), ("old-appended", True)):
        await database.execute(
            "INSERT INTO write_audits (hospital_id, message_id, content_hash, event_id,"
            " occur_us, actor, appended) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                HOSPITAL,
                message_id,
                "h1",
                new_ulid(T0),
                occur_us,
                principal_to_json(ENGINE),
                appended,
            ),
        )
        await database.execute(
            "INSERT INTO pending_audits (minute, shard, occur_us, hospital_id, message_id,"
            " content_hash) VALUES (?, ?, ?, ?, ?, ?)",
            (occur_us // 60_000_000, 0, occur_us, HOSPITAL, message_id, "h1"),
        )
    await database.execute(
        "INSERT INTO pending_minutes (shard, minute) VALUES (0, ?)", (occur_us // 60_000_000,)
    )
    (pending,) = await store.list_unappended_audits(T0 + timedelta(days=1), 10)
    assert (pending.message_id, pending.occur_time, pending.actor) == ("old-pending", T0, ENGINE)
    assert await store.is_audit_appended(HOSPITAL, "old-appended", "h1")
    assert not await store.is_audit_appended(HOSPITAL, "old-pending", "h1")
