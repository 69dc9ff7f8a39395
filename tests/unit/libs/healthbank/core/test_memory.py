"""Handing freed heap memory back after a large message (healthbank.core.memory)."""

from __future__ import annotations

import asyncio
import platform

import pytest

from healthbank.core import memory
from healthbank.core.memory import MemoryReleaser, release_free_memory


def test_free_memory_is_released_where_the_c_library_can() -> None:
    assert release_free_memory() is (platform.libc_ver()[0] == "glibc")


async def test_one_release_follows_a_burst_of_large_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[bool] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: released.append(True) or True)
    releaser = MemoryReleaser(delay=0.01)
    releaser.after_large_message()
    releaser.after_large_message()  # while one is scheduled: nothing more
    await asyncio.sleep(0.2)
    assert released == [True]
    releaser.after_large_message()  # the next large message gets its own release
    await asyncio.sleep(0.2)
    assert released == [True, True]


async def test_closing_cancels_a_scheduled_release(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[bool] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: released.append(True) or True)
    releaser = MemoryReleaser(delay=0.05)
    releaser.after_large_message()
    await releaser.close()
    await asyncio.sleep(0.2)
    assert released == []
