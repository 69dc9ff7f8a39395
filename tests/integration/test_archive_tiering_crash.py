"""Tiering survives a crash at every step, on the local directory and on a real S3 server.

The crash is injected where the issue names it: right after the segment is written (before
it is read back), after it is verified (before it is indexed) and half-way through deleting
the hot copies. The "process" then restarts (new stores and a new Archive over the same
files and bucket) and tiers again. Afterwards every record is in exactly one place of the
merged view (hot and cold), byte-identical to what was stored, and no orphan segment is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from object_store_support import S3ProxyProcess, object_store

from healthbank.common.v1 import common_pb2
from healthbank.core.ids import new_ulid
from healthbank.records import MessageReceipt, StoredRecord
from healthbank.records.sqlite import SqliteRecordStore
from services.archive.archive import Archive, cold_record
from services.archive.objects import ObjectStore
from services.archive.store import ColdIndexEntry, SegmentMeta, SqliteArchiveStore

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CUTOFF = datetime(2025, 1, 1, tzinfo=UTC)
PERSONS = ["a" * 64, "b" * 64]


class Crash(BaseException):
    """The process dies here (BaseException: nothing on the way may handle it)."""


class CrashingObjects:
    """The object store, dying on the first read of a segment (right after its write)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, key: str) -> bytes:
        if key.startswith("segments/"):
            raise Crash
        return await self._inner.get(key)


class CrashingIndex:
    """The archive store, dying when a verified segment is about to be indexed."""

    def __init__(self, inner: SqliteArchiveStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def add_segment(self, segment: SegmentMeta, index: Sequence[ColdIndexEntry]) -> int:
        raise Crash


class CrashingDeletes:
    """The hot store, dying after deleting half of a segment's hot copies."""

    def __init__(self, inner: SqliteRecordStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def delete_records(self, records: Sequence[StoredRecord]) -> None:
        await self._inner.delete_records(records[: len(records) // 2])
        raise Crash


@dataclass
class Stores:
    records: SqliteRecordStore
    index: SqliteArchiveStore
    objects: ObjectStore

    async def close(self) -> None:
        await self.records.close()
        await self.index.close()


@pytest.fixture(params=["local", "s3"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Opens the stores of one 'process' over the same data each time it is called."""
    s3proxy: S3ProxyProcess | None = (
        request.getfixturevalue("s3proxy") if request.param == "s3" else None
    )
    objects = object_store(request.param, tmp_path, s3proxy)
    opened: list[Stores] = []

    async def open_stores() -> Stores:
        stores = Stores(
            await SqliteRecordStore(tmp_path / "records.db").open(),
            await SqliteArchiveStore(tmp_path / "archive.db").open(),
            objects,
        )
        opened.append(stores)
        return stores

    yield open_stores
    for stores in opened:
        await stores.close()


def old_record(person: str, index: int) -> StoredRecord:
    effective = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=37 * index)
    return StoredRecord(
        record_id=new_ulid(effective),
        person_token=person,
        source_hospital="hospital-a",
        source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
        message_id=f"msg-{person[:2]}-{index}",
        source_version="1",
        content_hash=hashlib.sha256(f"{person}{index}".encode()).hexdigest(),
        category=common_pb2.RECORD_CATEGORY_OBSERVATION,
        code_system="http://loinc.org",
        code="2345-7",
        code_display="Glucose",
        effective_time=effective,
        status="final",
        sealed_payload=os.urandom(300 + index),
    )


async def seed(records: SqliteRecordStore) -> list[StoredRecord]:
    seeded = []
    for person in PERSONS:
        batch = [old_record(person, index) for index in range(12)]
        await records.put_message(
            MessageReceipt(
                hospital_id="hospital-a",
                message_id=new_ulid(),
                content_hash=hashlib.sha256(person.encode()).hexdigest(),
                person_token=person,
                record_ids=tuple(record.record_id for record in batch),
            ),
            batch,
            [],
        )
        seeded.extend(batch)
    return seeded


def archive_of(stores: Stores, now: datetime = NOW, **wrapped: Any) -> Archive:
    return Archive(
        wrapped.get("index", stores.index),
        wrapped.get("objects", stores.objects),
        wrapped.get("records", stores.records),
        lambda: now,
        segment_max_records=5,
    )


async def merged_view(stores: Stores) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every copy of every record findable hot or cold: record id -> [(metadata, payload)]."""
    archive = archive_of(stores)
    copies: dict[str, list[tuple[bytes, bytes]]] = {}
    for person in PERSONS:
        for record in await stores.records.list_records(person):
            metadata = cold_record(record).SerializeToString(deterministic=True)
            copies.setdefault(record.record_id, []).append((metadata, record.sealed_payload))
        for entry in await archive.fetch(person, None, None):
            metadata = entry.record.SerializeToString(deterministic=True)
            copies.setdefault(entry.record.record_id, []).append((metadata, entry.sealed_payload))
    return copies


def assert_each_record_once_and_identical(
    seeded: Sequence[StoredRecord], copies: dict[str, list[tuple[bytes, bytes]]]
) -> None:
    assert sorted(copies) == sorted(record.record_id for record in seeded)
    for record in seeded:
        expected = (
            cold_record(record).SerializeToString(deterministic=True),
            record.sealed_payload,
        )
        assert copies[record.record_id] == [expected], record.record_id


async def assert_no_orphans(stores: Stores) -> None:
    indexed = {segment.object_key for segment in await stores.index.list_segments()}
    assert set(await stores.objects.list_keys("segments/")) == indexed


@pytest.mark.parametrize("crash_at", ["after_write", "after_verify", "mid_delete"])
async def test_a_crash_at_any_step_leaves_every_record_once_after_restart(
    world: Any, crash_at: str
) -> None:
    first = await world()
    seeded = await seed(first.records)
    wrapped = {
        "after_write": {"objects": CrashingObjects(first.objects)},
        "after_verify": {"index": CrashingIndex(first.index)},
        "mid_delete": {"records": CrashingDeletes(first.records)},
    }[crash_at]
    with pytest.raises(Crash):
        await archive_of(first, **wrapped).tier(CUTOFF, 1000)
    # Between the crash and the restart, each record is findable (hot, cold or both).
    assert sorted(await merged_view(first)) == sorted(r.record_id for r in seeded)

    still_hot = sum([len(await first.records.list_records(person)) for person in PERSONS])
    # mid_delete: the first segment (5 records) was indexed and 2 of its hot copies deleted.
    assert still_hot == (len(seeded) - 2 if crash_at == "mid_delete" else len(seeded))

    # Restart, an hour and more later (so the crashed run's segment counts as an orphan).
    restarted = await world()
    result = await archive_of(restarted, NOW + timedelta(hours=2)).tier(CUTOFF, 1000)
    assert result.records_moved == still_hot
    assert result.orphans_collected == (1 if crash_at != "mid_delete" else 0)
    assert_each_record_once_and_identical(seeded, await merged_view(restarted))
    await assert_no_orphans(restarted)
    for person in PERSONS:
        assert await restarted.records.list_records(person) == []


async def test_overlapping_runs_index_each_record_once(world: Any) -> None:
    first, second = await world(), await world()
    seeded = await seed(first.records)
    # Two processes (two archive replicas) tier the same hot records at the same time.
    results = await asyncio.gather(
        archive_of(first).tier(CUTOFF, 1000), archive_of(second).tier(CUTOFF, 1000)
    )
    # Both read every hot record before either deleted one: the runs really overlapped.
    assert [result.records_moved for result in results] == [len(seeded), len(seeded)]
    assert_each_record_once_and_identical(seeded, await merged_view(first))


async def test_a_young_unindexed_segment_is_not_collected(world: Any) -> None:
    stores = await world()
    await seed(stores.records)
    with pytest.raises(Crash):
        await archive_of(stores, index=CrashingIndex(stores.index)).tier(CUTOFF, 1000)
    # Ten minutes later it may still be another run's segment on its way to the index.
    assert await archive_of(stores, NOW + timedelta(minutes=10)).collect_orphans() == 0
    assert len(await stores.objects.list_keys("segments/")) == 1
    assert await archive_of(stores, NOW + timedelta(hours=2)).collect_orphans() == 1
    assert await stores.objects.list_keys("segments/") == []
