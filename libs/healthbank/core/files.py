"""Files that survive a crash whole: written aside, synced, renamed over, the rename synced.

A reader sees the old file or the new one, never a part; after a crash (power loss
included) the file holds what was last written whole, never nothing.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_durably(
    path: Path, data: bytes, *, mode: int = 0o666, directory_mode: int = 0o777
) -> None:
    """Replace ``path`` with ``data`` (a new file gets ``mode``, new directories
    ``directory_mode``, both less the umask). Blocking: call it off the event loop."""
    make_directories(path.parent, mode=directory_mode)
    # A dot name: listings of the directory (the archive's objects) skip it.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # The rename is only durable once the directory entry is on disk.
    fsync_directory(path.parent)


def make_directories(directory: Path, *, mode: int = 0o777) -> None:
    """mkdir -p, making each new directory entry durable in its parent."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new_directory in reversed(missing):
        new_directory.mkdir(mode=mode, exist_ok=True)
        fsync_directory(new_directory.parent)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename or a new name in it) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
