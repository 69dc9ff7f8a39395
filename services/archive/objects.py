"""Where the archive's bytes live: a flat object store keyed by path-like names.

The embedded default is a local directory (``<data_dir>/archive``); an S3-compatible
implementation of the same protocol comes with the at-scale backends. Objects are
written whole or not at all: a reader never sees half a blob or half a segment.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

# Keys are relative, slash-separated, made of safe characters, with no "." or ".." parts.
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


class ObjectMissing(Exception):
    """No object is stored under the key."""


class ObjectStore(Protocol):
    """Durable, atomic whole-object storage."""

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably; replaces atomically if present."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; ObjectMissing if absent."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_size``; ObjectMissing if absent."""
        ...

    async def check(self) -> None:
        """Raise unless the store is usable now (health checks)."""
        ...


class LocalObjectStore:
    """ObjectStore in a local directory; keys map to files below ``root``."""

    def __init__(self, root: Path) -> None:
        """Store objects below ``root`` (created on first write)."""
        self.root = root

    def path_of(self, key: str) -> Path:
        """The file that holds ``key``."""
        if not _KEY.match(key):
            raise ValueError("object keys are relative names of safe characters")
        return self.root / key

    async def put(self, key: str, data: bytes) -> None:
        """See ObjectStore.put: temp file, fsync, rename, fsync the directory."""
        await asyncio.to_thread(_write_durably, self.path_of(key), data)

    async def get(self, key: str) -> bytes:
        """See ObjectStore.get."""
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    async def exists(self, key: str) -> bool:
        """See ObjectStore.exists."""
        return await asyncio.to_thread(self.path_of(key).is_file)

    async def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """See ObjectStore.chunks."""
        path = self.path_of(key)
        try:
            handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def check(self) -> None:
        """See ObjectStore.check: the root exists (or can be made) and is writable."""
        await asyncio.to_thread(_check_writable, self.root)


def _write_durably(path: Path, data: bytes) -> None:
    _make_directories(path.parent)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # The rename is only durable once the directory entry is on disk.
    _fsync_directory(path.parent)


def _make_directories(directory: Path) -> None:
    """mkdir -p, making each new directory entry durable in its parent."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new_directory in reversed(missing):
        new_directory.mkdir(exist_ok=True)
        _fsync_directory(new_directory.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK):
        raise PermissionError("archive directory is not writable")
