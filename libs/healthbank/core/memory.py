"""Handing freed heap memory back to the system after a large message.

CPython frees a large message's objects, but glibc keeps the freed pages of its heaps (and of
each thread's arena) for reuse: after 8 x 60 MB bundles ingest stayed ~200 MiB above where
it started. ``malloc_trim`` returns those pages; it is called in a thread, shortly after a
large message is done, at most once at a time.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class MemoryReleaser:
    """Releases free memory ``delay`` seconds after a large message, off the event loop."""

    def __init__(self, delay: float = 1.0) -> None:
        """``delay``: time for the message's request and response to be dropped first."""
        self._delay = delay
        self._pending: asyncio.Task[None] | None = None

    def after_large_message(self) -> None:
        """Schedule one release (nothing if one is already scheduled)."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._release())

    async def _release(self) -> None:
        await asyncio.sleep(self._delay)
        released = await asyncio.to_thread(release_free_memory)
        _log.debug("free heap memory released=%s", released)

    async def close(self) -> None:
        """Cancel a scheduled release (the service stops)."""
        if self._pending is not None:
            self._pending.cancel()


def resident_mib(pid: int) -> float:
    """Resident memory of one process, MiB (Linux /proc); 0.0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
