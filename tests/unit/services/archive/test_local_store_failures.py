"""How the archive's local object store fails: the disk's failures are storage errors the
RPC layer answers (UNAVAILABLE for a full or failing disk, a refusal for a directory the
service cannot use), named by errno, never by path; a missing object stays missing."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from healthbank.storage.errors import StorageRefused, StorageUnavailable
from services.archive import objects
from services.archive.objects import LocalObjectStore, ObjectMissing

KEY = "blobs/ab/abcdef"


async def test_a_full_disk_is_unavailable_and_names_no_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(objects, "write_durably", full)
    with pytest.raises(StorageUnavailable) as raised:
        await LocalObjectStore(tmp_path).put(KEY, b"bytes")
    assert str(raised.value) == "archive directory: ENOSPC"
    assert str(tmp_path) not in str(raised.value)


async def test_a_directory_the_store_cannot_use_is_a_refusal(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "blobs").write_bytes(b"a file where the blobs' folder belongs")
    with pytest.raises(StorageRefused) as raised:
        await store.put(KEY, b"bytes")  # a real ENOTDIR from the file system
    assert raised.value.cause == "CONFIGURATION"
    assert str(raised.value) == "archive directory: ENOTDIR"
    with pytest.raises(StorageRefused):
        await store.chunks(KEY, 1024).__anext__()


async def test_a_missing_object_is_still_missing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with pytest.raises(ObjectMissing):
        await store.get(KEY)
    with pytest.raises(ObjectMissing):
        await store.chunks(KEY, 1024).__anext__()
    assert not await store.exists(KEY)


async def test_a_permission_error_without_a_known_errno_is_still_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Raised by a layer that sets no errno (a sandbox's policy, say): refused all the same,
    # since retrying cannot cure a permission.
    def denied(path: Path, data: bytes) -> None:
        raise PermissionError(f"writing {path} is not allowed here")

    monkeypatch.setattr(objects, "write_durably", denied)
    with pytest.raises(StorageRefused) as raised:
        await LocalObjectStore(tmp_path).put(KEY, b"bytes")
    assert raised.value.cause == "CONFIGURATION"
    assert str(raised.value) == "archive directory: PermissionError"
    assert str(tmp_path) not in str(raised.value)
