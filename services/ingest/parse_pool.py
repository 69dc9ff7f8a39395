"""Parsing and mapping off the event loop: worker processes (ADR 18, ADR 20).

Parsing a message (FHIR, HL7 v2, DICOM) and mapping it to FHIR resources is pure CPU work
whose cost grows with the message: a 100,000-segment HL7 message takes seconds. On the
event loop it would stall every other caller, health checks included. :class:`ParsePool`
runs :func:`parse_content` — the one function the workers run — in worker processes; the
submission's bytes go in, a picklable ``ParsedMessage`` or ``ParsedBatch`` (or the
``InvalidMessage`` it raised, with the same violations) comes back.

Two kinds of worker, by the message's size, and one exception:

* A FHIR R4 JSON message below ``inline_message_bytes`` (4 KiB) is parsed on the event loop
  itself (ADR 67): at most ~0.7 ms here, where the trip to a worker and back cost more
  CPU than the parse (pickling both ways, the executor's threads, two processes woken).
  HL7 v2 (up to ~1 ms a KiB), NDJSON and DICOM always go to a worker.
* Messages below ``large_message_bytes`` go to a long-lived pool: a round trip costs well
  under a millisecond, and what such a message allocates is reused by the next one.
* A large message gets a worker process of its own that exits after it, so whatever its
  heap grew to is returned to the operating system; at most ``workers`` run at once, which
  bounds the memory large messages can hold together.

Workers are never recycled with ``max_tasks_per_child``: on CPython 3.11 to 3.13 an executor
whose worker retires under a backlog stops scheduling (gh-115634) and every later message
waits forever. Workers are started by a fork server (never by forking the gRPC process,
whose threads a plain fork would copy mid-flight) with the parsers and the main module
preloaded, so a fresh worker is cheap (tens of milliseconds, next to the seconds a large
message takes); without the main module each new worker spent 1-3 s importing it again.

A worker exits when the process that owns the pool dies, even by SIGKILL: the fork server
hands every worker the write end of its own "alive" pipe, and a worker waiting for work
would otherwise keep itself and the fork server running forever.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from services.ingest.dicom import parse_dicom
from services.ingest.fhir import parse_fhir, parse_fhir_ndjson
from services.ingest.hl7v2 import parse_hl7v2
from services.ingest.model import Parsed, SourceFormat

PARSERS: dict[SourceFormat, Callable[[bytes], Parsed]] = {
    SourceFormat.FHIR_R4_JSON: parse_fhir,
    SourceFormat.HL7V2: parse_hl7v2,
    SourceFormat.DICOM: parse_dicom,
    SourceFormat.FHIR_R4_NDJSON: parse_fhir_ndjson,
}

DEFAULT_LARGE_MESSAGE_BYTES = 1024 * 1024
"""Messages of at least this size are parsed in a worker of their own."""

DEFAULT_INLINE_MESSAGE_BYTES = 4096
"""FHIR R4 JSON messages below this size are parsed on the event loop (ADR 67)."""

INLINE_FORMATS = frozenset({SourceFormat.FHIR_R4_JSON})
"""The formats whose parse cost is small and near-linear in the size (measured worst case:
~0.2 ms a KiB), so a small message may be parsed on the event loop."""


def default_workers() -> int:
    """min(2, CPUs): parsing must leave the machine room for storing and sealing."""
    return min(2, os.cpu_count() or 1)


def parse_content(source_format: SourceFormat, content: bytes) -> Parsed:
    """Parse and validate one message's content with its format's parser (any size).

    What the workers run; raises ``InvalidMessage`` listing every problem.
    """
    return PARSERS[source_format](content)


def _main_modules() -> list[str]:
    """What each new worker would otherwise import again, for seconds: multiprocessing runs
    the parent's main module in every child (as ``__mp_main__``), and ours is
    ``healthbank.cli`` (``python -m healthbank.cli`` or the ``healthbank`` script, which
    imports it). Imported once in the fork server, a child inherits it already loaded."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return sorted({"healthbank.cli", *([spec.name] if spec is not None else [])})


def _exit_with_owner() -> None:
    """A worker's initializer: exit as soon as the pool's owner is gone.

    ``parent_process()`` is the owner (the fork server only forks on its behalf); its
    sentinel is the pipe the owner sent the worker's start-up data through, which closes
    when the owner dies."""
    owner = multiprocessing.parent_process()
    if owner is None:
        return

    def wait_then_exit() -> None:
        owner.join()
        os._exit(1)

    threading.Thread(target=wait_then_exit, name="exit-with-owner", daemon=True).start()


class ParsePool:
    """Worker processes that parse messages; ``await parse(...)`` from the event loop."""

    def __init__(
        self,
        workers: int = 0,
        *,
        large_message_bytes: int = DEFAULT_LARGE_MESSAGE_BYTES,
        inline_message_bytes: int = DEFAULT_INLINE_MESSAGE_BYTES,
    ) -> None:
        """``workers`` long-lived processes (0: :func:`default_workers`) for messages below
        ``large_message_bytes``, and as many single-use ones at most for larger messages;
        messages of :data:`INLINE_FORMATS` below ``inline_message_bytes`` (0: none) are
        parsed on the caller's event loop. The long-lived workers start with :meth:`start`
        or on first use."""
        if workers < 0 or large_message_bytes < 1 or inline_message_bytes < 0:
            raise ValueError(
                "workers and inline_message_bytes must be >= 0 and large_message_bytes >= 1"
            )
        self._inline_message_bytes = inline_message_bytes
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__, *_main_modules()])
        self._workers = workers or default_workers()
        self._large_message_bytes = large_message_bytes
        self._executor = self._new_executor(self._workers)
        self._large = asyncio.Semaphore(self._workers)
        self._large_pids: set[int] = set()

    def _new_executor(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=self._context, initializer=_exit_with_owner
        )

    async def start(self) -> None:
        """Start the fork server and a worker now, off the event loop: the first message
        would otherwise start them on the loop (seconds of imports)."""
        await asyncio.to_thread(lambda: self._executor.submit(os.getpid).result())

    async def parse(self, source_format: SourceFormat, content: bytes) -> Parsed:
        """:func:`parse_content` in a worker, the event loop serving meanwhile; a small
        message of an inline format right here."""
        if source_format in INLINE_FORMATS and len(content) < self._inline_message_bytes:
            return parse_content(source_format, content)
        if len(content) >= self._large_message_bytes:
            return await self._parse_alone(source_format, content)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, parse_content, source_format, content)

    async def _parse_alone(self, source_format: SourceFormat, content: bytes) -> Parsed:
        """Parse in a fresh worker that exits afterwards (its memory goes with it)."""
        async with self._large:
            executor = self._new_executor(1)
            loop = asyncio.get_running_loop()
            pid = 0
            try:
                pid = await loop.run_in_executor(executor, os.getpid)
                self._large_pids.add(pid)
                return await loop.run_in_executor(executor, parse_content, source_format, content)
            finally:
                # Off the loop: shutting down joins the worker process.
                await asyncio.to_thread(executor.shutdown, wait=True)
                self._large_pids.discard(pid)

    def worker_pids(self) -> set[int]:
        """The process ids of the long-lived workers alive now."""
        # The executor keeps no public list. Its management thread edits this dict; copying
        # it is one step under the GIL, where iterating it could meet a change midway.
        processes = dict(self._executor._processes or {})
        return {pid for pid, process in processes.items() if process.is_alive()}

    def large_message_pids(self) -> set[int]:
        """The process ids of the single-use workers parsing large messages now."""
        return set(self._large_pids)

    async def close(self) -> None:
        """Stop the workers (a parse still running finishes first), off the event loop."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
