"""One contract for the archive's object store, run against the local directory and a real
S3-compatible server (S3Proxy from Maven Central, started by the ``s3proxy`` fixture)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from object_store_support import S3ProxyProcess, object_store

from services.archive.objects import ObjectMissing, ObjectStore, S3ObjectStore


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    s3proxy = request.getfixturevalue("s3proxy") if request.param == "s3" else None
    return object_store(request.param, tmp_path, s3proxy)


async def test_put_then_get_returns_the_same_bytes(objects: ObjectStore) -> None:
    data = os.urandom(70_000)
    await objects.put("segments/a.seg", data)
    assert await objects.get("segments/a.seg") == data
    assert await objects.exists("segments/a.seg")


async def test_an_empty_object_is_an_object(objects: ObjectStore) -> None:
    await objects.put("blobs/00/empty", b"")
    assert await objects.get("blobs/00/empty") == b""
    assert await objects.exists("blobs/00/empty")


async def test_put_replaces_whole(objects: ObjectStore) -> None:
    await objects.put("k", b"first version, longer")
    await objects.put("k", b"second")
    assert await objects.get("k") == b"second"


async def test_a_missing_object_is_object_missing_everywhere(objects: ObjectStore) -> None:
    assert not await objects.exists("segments/none.seg")
    with pytest.raises(ObjectMissing):
        await objects.get("segments/none.seg")
    with pytest.raises(ObjectMissing):
        async for _ in objects.chunks("segments/none.seg", 1024):
            pass


async def test_chunks_are_bounded_and_add_up_to_the_object(objects: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    await objects.put("blobs/ab/large", data)
    chunks = [chunk async for chunk in objects.chunks("blobs/ab/large", 1024 * 1024)]
    assert all(0 < len(chunk) <= 1024 * 1024 for chunk in chunks)
    assert len(chunks) == 4
    assert b"".join(chunks) == data


async def test_delete_removes_and_is_idempotent(objects: ObjectStore) -> None:
    await objects.put("segments/gone.seg", b"x")
    await objects.delete("segments/gone.seg")
    await objects.delete("segments/gone.seg")
    assert not await objects.exists("segments/gone.seg")
    assert await objects.list_keys("segments/") == []


async def test_list_keys_names_every_object_under_a_prefix_sorted(objects: ObjectStore) -> None:
    for key in ["segments/2.seg", "segments/1.seg", "blobs/aa/x", "blobs/ab/y"]:
        await objects.put(key, key.encode())
    assert await objects.list_keys("segments/") == ["segments/1.seg", "segments/2.seg"]
    assert await objects.list_keys("blobs/") == ["blobs/aa/x", "blobs/ab/y"]
    assert await objects.list_keys("none/") == []
    assert await objects.list_keys("blobs/a") == ["blobs/aa/x", "blobs/ab/y"]
    assert await objects.list_keys("blobs/aa/") == ["blobs/aa/x"]
    assert await objects.list_keys("") == sorted(
        ["segments/1.seg", "segments/2.seg", "blobs/aa/x", "blobs/ab/y"]
    )


@pytest.mark.parametrize("key", ["../escape", "/absolute", "a/../b", "a//b", "spa ce", ""])
async def test_unsafe_keys_are_refused(objects: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        await objects.put(key, b"x")
    with pytest.raises(ValueError):
        await objects.get(key)


async def test_check_passes_on_a_usable_store(objects: ObjectStore) -> None:
    await objects.check()


async def test_s3_check_fails_when_the_bucket_is_gone(s3proxy: S3ProxyProcess) -> None:
    store = S3ObjectStore(s3proxy.client(), "hb-no-such-bucket")
    with pytest.raises(Exception, match=r"404|Not Found|NoSuchBucket"):
        await store.check()


async def test_s3_objects_survive_a_restart_of_the_server(s3proxy: S3ProxyProcess) -> None:
    bucket = s3proxy.new_bucket()
    await s3proxy.store(bucket).put("segments/kept.seg", b"durable")
    s3proxy.restart()
    assert await s3proxy.store(bucket).get("segments/kept.seg") == b"durable"


async def test_a_reader_that_stops_early_lets_the_object_be_read_and_deleted(
    objects: ObjectStore,
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    await objects.put("blobs/cd/early", data)
    reader = objects.chunks("blobs/cd/early", 1024 * 1024)
    assert await anext(reader) == data[: 1024 * 1024]
    await reader.aclose()  # its body is closed off the loop
    assert await objects.get("blobs/cd/early") == data
    await objects.delete("blobs/cd/early")
    assert not await objects.exists("blobs/cd/early")


async def test_s3_calls_run_on_the_s3_threads_not_the_default_pool(
    s3proxy: S3ProxyProcess,
) -> None:
    client = s3proxy.client()
    threads: set[str] = set()
    client.meta.events.register(
        "before-send.s3", lambda **_: threads.add(threading.current_thread().name)
    )
    store = S3ObjectStore(client, s3proxy.new_bucket(), "archive/")
    await store.check()
    await store.put("blobs/ef/x", b"data")
    assert await store.get("blobs/ef/x") == b"data"
    assert [chunk async for chunk in store.chunks("blobs/ef/x", 2)] == [b"da", b"ta"]
    assert await store.exists("blobs/ef/x")
    assert await store.list_keys("blobs/") == ["blobs/ef/x"]
    await store.delete("blobs/ef/x")
    assert threads and all(name.startswith("s3-call") for name in threads), threads
