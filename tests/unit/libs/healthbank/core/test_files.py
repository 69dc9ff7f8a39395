"""write_durably: a reader sees the old file or the new one, never a part, and nothing of
a failed write is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from healthbank.core import files
from healthbank.core.files import write_durably


def test_a_file_is_written_in_new_directories_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "head.json"
    write_durably(path, b"first")
    assert path.read_bytes() == b"first"
    write_durably(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["head.json"]


def test_modes_are_those_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "secret" / "keyring.json"
    write_durably(path, b"{}", mode=0o600, directory_mode=0o700)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "head.json"
    write_durably(path, b"old")

    def failing_fsync(descriptor: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_durably(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["head.json"]


def test_each_new_directory_and_the_rename_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    fsync_directory = files.fsync_directory

    def recorded(directory: Path) -> None:
        synced.append(directory)
        fsync_directory(directory)

    monkeypatch.setattr(files, "fsync_directory", recorded)
    write_durably(tmp_path / "x" / "y" / "f", b"data")
    # x's entry in tmp_path, y's in x, then the file's rename in y.
    assert synced == [tmp_path, tmp_path / "x", tmp_path / "x" / "y"]
