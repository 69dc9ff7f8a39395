"""SHA-256 of byte strings of any size, without holding the event loop.

Hashing 60 MB takes ~0.1 s of CPU: from :data:`OFF_LOOP_BYTES` on it runs in a thread
(hashlib releases the GIL while it hashes), below that the thread hop would cost more.
"""

from __future__ import annotations

import asyncio
import hashlib

__all__ = ["OFF_LOOP_BYTES", "sha256_hex", "sha256_hex_off_loop"]

OFF_LOOP_BYTES = 1024 * 1024


def sha256_hex(content: bytes) -> str:
    """SHA-256 of ``content``, lowercase hex."""
    return hashlib.sha256(content).hexdigest()


async def sha256_hex_off_loop(content: bytes) -> str:
    """:func:`sha256_hex`, in a worker thread when ``content`` is large."""
    if len(content) < OFF_LOOP_BYTES:
        return sha256_hex(content)
    return await asyncio.to_thread(sha256_hex, content)
