"""Small helpers for the asyncio tasks a request starts beside its own work."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it ended, whatever it raised: no task outlives the
    request that started it, and its exception is retrieved (never logged as unhandled)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
