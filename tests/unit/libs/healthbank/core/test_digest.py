"""SHA-256 off the event loop: the same digest either way, and a large input hashed in a
thread while the loop keeps running."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import pytest

from healthbank.core import digest
from healthbank.core.digest import OFF_LOOP_BYTES, sha256_hex, sha256_hex_off_loop


@pytest.mark.parametrize("size", [0, 1, OFF_LOOP_BYTES - 1, OFF_LOOP_BYTES, 3 * OFF_LOOP_BYTES])
async def test_the_digest_is_sha256_whatever_the_size(size: int) -> None:
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    expected = hashlib.sha256(content).hexdigest()
    assert sha256_hex(content) == expected
    assert await sha256_hex_off_loop(content) == expected


async def test_only_a_large_input_is_hashed_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []

    def recording(content: bytes) -> str:
        threads.append(threading.current_thread())
        return hashlib.sha256(content).hexdigest()

    monkeypatch.setattr(digest, "sha256_hex", recording)
    await sha256_hex_off_loop(b"small")
    await sha256_hex_off_loop(b"\0" * OFF_LOOP_BYTES)
    loop_thread = threading.current_thread()
    assert threads[0] is loop_thread and threads[1] is not loop_thread
    assert asyncio.get_running_loop().is_running()
