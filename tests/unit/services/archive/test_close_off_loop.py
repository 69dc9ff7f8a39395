"""A body a cancelled reader was still reading is closed on a worker thread: closing waits
for that read, and the event loop must not."""

from __future__ import annotations

import asyncio
import threading

from services.archive.objects import close_off_loop


class BodyInARead:
    """A response body whose close waits until the read in flight returns (as urllib3's
    does for a socket another thread is reading)."""

    def __init__(self) -> None:
        self.read_returns = threading.Event()
        self.closed = threading.Event()
        self.closed_on: int | None = None

    def close(self) -> None:
        self.read_returns.wait(timeout=30)
        self.closed_on = threading.get_ident()
        self.closed.set()


async def test_closing_a_body_in_a_read_does_not_wait_on_the_loop() -> None:
    body = BodyInARead()
    close_off_loop(body)  # returns although the close is still waiting for the read
    assert not body.closed.is_set()
    # The loop goes on serving meanwhile.
    await asyncio.sleep(0)
    body.read_returns.set()
    assert await asyncio.to_thread(body.closed.wait, 30)
    assert body.closed_on != threading.get_ident()


def test_without_a_running_loop_the_body_is_closed_at_once() -> None:
    body = BodyInARead()
    body.read_returns.set()
    close_off_loop(body)
    assert body.closed.is_set() and body.closed_on == threading.get_ident()
