"""One contract for the archive's metadata store, run against SQLite and real Cassandra:
content-addressed blob metadata (first owner wins) and the cold record index."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from contract_support import StoreKind
from engine_support import cassandra_database

from healthbank.core.ids import new_ulid
from healthbank.records import to_micros
from services.archive.store import (
    ArchiveStore,
    BlobMeta,
    ColdIndexEntry,
    SegmentMeta,
    SqliteArchiveStore,
)
from services.archive.store_cassandra import MIGRATIONS, CassandraArchiveStore

T0 = datetime(2023, 6, 1, 12, 0, 0, 654321, tzinfo=UTC)
PERSON = "a" * 64
OTHER = "b" * 64

Opener = Callable[[], Awaitable[ArchiveStore]]


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(SqliteArchiveStore, "archive.db", CassandraArchiveStore, "archive", MIGRATIONS)


def blob(content: bytes, person: str = PERSON, content_type: str = "application/dicom") -> BlobMeta:
    return BlobMeta(
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
        content_type=content_type,
        person_token=person,
    )


def segment(count: int) -> SegmentMeta:
    segment_id = new_ulid()
    return SegmentMeta(
        segment_id=segment_id,
        object_key=f"segments/{segment_id}.seg",
        sha256="0" * 64,
        record_count=count,
        size_bytes=1000 * count,
        created_time=T0,
    )


def index_of(meta: SegmentMeta, records: list[tuple[str, str, datetime]]) -> list[ColdIndexEntry]:
    return [
        ColdIndexEntry(
            record_id=record_id,
            person_token=person,
            effective_time=when,
            segment_id=meta.segment_id,
            offset=16 + 100 * i,
        )
        for i, (record_id, person, when) in enumerate(records)
    ]


# --- blobs -------------------------------------------------------------------------------


async def test_blob_metadata_round_trips(store: ArchiveStore) -> None:
    stored = await store.put_blob(blob(b"scan"))
    assert stored == blob(b"scan")
    assert stored.name == f"blobs/{hashlib.sha256(b'scan').hexdigest()}"
    assert await store.get_blob(stored.sha256) == stored
    assert await store.get_blob(hashlib.sha256(b"never stored").hexdigest()) is None
    await store.check()


async def test_the_first_owner_of_some_content_wins(store: ArchiveStore) -> None:
    first = await store.put_blob(blob(b"shared bytes"))
    again = await store.put_blob(blob(b"shared bytes"))
    other = await store.put_blob(blob(b"shared bytes", person=OTHER, content_type="image/png"))
    assert first == again == other == blob(b"shared bytes")
    assert await store.get_blob(first.sha256) == first


async def test_concurrent_puts_of_the_same_content_agree_on_one_owner(
    open_store: Opener,
) -> None:
    one, two = await open_store(), await open_store()
    candidates = [blob(b"raced", person=f"{i:x}" * 64) for i in range(8)]
    outcomes = await asyncio.gather(
        *((one if i % 2 else two).put_blob(candidate) for i, candidate in enumerate(candidates))
    )
    assert len(set(outcomes)) == 1
    assert outcomes[0] in candidates
    assert await one.get_blob(outcomes[0].sha256) == outcomes[0]
    assert await two.get_blob(outcomes[0].sha256) == outcomes[0]


# --- the cold index -----------------------------------------------------------------------


async def test_add_segment_indexes_records_once_and_keeps_their_first_location(
    store: ArchiveStore,
) -> None:
    ids = [new_ulid() for _ in range(4)]
    first = segment(3)
    added = await store.add_segment(
        first, index_of(first, [(ids[i], PERSON, T0 + timedelta(hours=i)) for i in range(3)])
    )
    assert added == 3
    assert await store.archived_record_ids(ids) == set(ids[:3])
    assert await store.archived_record_ids([]) == set()

    # A retried run archives records 1..3 again into another segment: only 3 is new.
    second = segment(3)
    added = await store.add_segment(
        second, index_of(second, [(ids[i], PERSON, T0 + timedelta(hours=i)) for i in (1, 2, 3)])
    )
    assert added == 1
    assert await store.archived_record_ids(ids) == set(ids)
    cold = await store.list_cold(PERSON, None, None)
    assert [entry.record_id for entry in cold] == ids
    assert [entry.segment_id for entry in cold] == [first.segment_id] * 3 + [second.segment_id]
    assert cold[1].offset == 116
    assert cold[3].offset == 216


async def test_list_cold_is_oldest_first_within_exact_half_open_ranges(
    store: ArchiveStore,
) -> None:
    times = [
        T0,
        T0 + timedelta(microseconds=1),
        T0 - timedelta(days=400),
        T0 + timedelta(days=400),
        T0,
    ]
    ids = [new_ulid() for _ in times]
    meta = segment(len(times) + 1)
    other_id = new_ulid()
    await store.add_segment(
        meta,
        index_of(
            meta,
            [(ids[i], PERSON, when) for i, when in enumerate(times)] + [(other_id, OTHER, T0)],
        ),
    )
    everything = await store.list_cold(PERSON, None, None)
    expected = sorted(zip(times, ids, strict=True))
    assert [(e.effective_time, e.record_id) for e in everything] == expected
    assert all(e.person_token == PERSON and e.segment_id == meta.segment_id for e in everything)
    assert everything[0].effective_time.tzinfo is not None

    # [start, end) to the microsecond, across the year partitions.
    window = await store.list_cold(PERSON, T0, T0 + timedelta(microseconds=1))
    assert sorted(e.record_id for e in window) == sorted([ids[0], ids[4]])
    from_t0 = await store.list_cold(PERSON, T0 + timedelta(microseconds=1), None)
    assert [e.record_id for e in from_t0] == [ids[1], ids[3]]
    until_t0 = await store.list_cold(PERSON, None, T0)
    assert [e.record_id for e in until_t0] == [ids[2]]
    assert await store.list_cold(PERSON, T0 + timedelta(days=500), None) == []
    assert [e.record_id for e in await store.list_cold(OTHER, None, None)] == [other_id]
    assert await store.list_cold("c" * 64, None, None) == []


async def test_archived_record_ids_for_a_large_batch(store: ArchiveStore) -> None:
    ids = [new_ulid() for _ in range(700)]
    meta = segment(600)
    records = [(ids[i], PERSON, T0 + timedelta(seconds=i)) for i in range(600)]
    assert await store.add_segment(meta, index_of(meta, records)) == 600
    assert await store.archived_record_ids(ids) == set(ids[:600])
    assert len(await store.list_cold(PERSON, None, None)) == 600
    assert to_micros((await store.list_cold(PERSON, None, None))[-1].effective_time) == to_micros(
        T0 + timedelta(seconds=599)
    )


# --- Cassandra only: a tiering run that died while indexing ---------------------------------


async def test_cassandra_a_record_half_indexed_by_a_dead_run_is_indexed_once_on_retry(
    engines: dict[str, str], cassandra_keyspace: str
) -> None:
    store = await CassandraArchiveStore(
        cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
    ).open()
    try:
        record_id = new_ulid()
        dead = segment(1)
        # The dead run wrote the person row (the location) but not cold_records.
        database = cassandra_database(engines, cassandra_keyspace, MIGRATIONS)
        await database.open()
        try:
            await database.execute(
                "INSERT INTO cold_by_person (person_token, year, effective_us, record_id,"
                " segment_id, frame_offset) VALUES (?, ?, ?, ?, ?, ?)",
                (PERSON, T0.year, to_micros(T0), record_id, dead.segment_id, 16),
            )
            await database.execute(
                "INSERT INTO cold_person_years (person_token, year) VALUES (?, ?)",
                (PERSON, T0.year),
            )
        finally:
            await database.close()
        # Not archived: tiering must not delete the hot copy yet.
        assert await store.archived_record_ids([record_id]) == set()
        retry = segment(1)
        assert await store.add_segment(retry, index_of(retry, [(record_id, PERSON, T0)])) == 1
        cold = await store.list_cold(PERSON, None, None)
        assert [(e.record_id, e.segment_id) for e in cold] == [(record_id, retry.segment_id)]
        assert await store.archived_record_ids([record_id]) == {record_id}
    finally:
        await store.close()


# --- what scrub and orphan collection walk ---------------------------------------------------


async def test_every_segment_and_blob_is_listed_once(store: ArchiveStore) -> None:
    assert await store.list_segments() == []
    assert await store.list_blobs() == []
    # Millisecond times: Cassandra's timestamp keeps no finer precision.
    whole_ms = T0.replace(microsecond=T0.microsecond // 1000 * 1000)
    segments = [dataclasses.replace(segment(n), created_time=whole_ms) for n in (1, 2)]
    for meta in segments:
        await store.add_segment(meta, index_of(meta, [(new_ulid(), PERSON, T0)]))
    blobs = [await store.put_blob(blob(content)) for content in (b"one", b"two", b"three")]
    await store.put_blob(blob(b"one"))  # a retry adds nothing
    assert await store.list_segments() == sorted(segments, key=lambda s: s.segment_id)
    assert await store.list_blobs() == sorted(blobs, key=lambda b: b.sha256)
