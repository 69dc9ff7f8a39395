"""Parsing and mapping off the event loop: a pool of worker processes (ADR 18).

Parsing a message (FHIR, HL7 v2, DICOM) and mapping it to FHIR resources is pure CPU work
whose cost grows with the message: a 100,000-segment HL7 message takes seconds. On the
event loop it would stall every other caller, health checks included. :class:`ParsePool`
runs :func:`parse_content` — the one function the workers run — in a
``ProcessPoolExecutor``; the submission's bytes go in, a picklable ``ParsedMessage`` (or the
``InvalidMessage`` it raised, with the same violations) comes back.

Memory per message is bounded by recycling: a worker exits after ``tasks_per_worker``
messages and a fresh one takes its place, so what a huge message made the worker's heap grow
to is returned to the operating system instead of being kept for the process's lifetime.
Workers are started by a fork server (never by forking the gRPC process, whose threads a
plain fork would copy mid-flight) with the parsers preloaded, so a fresh worker is cheap.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from services.ingest.dicom import parse_dicom
from services.ingest.fhir import parse_fhir, parse_fhir_ndjson
from services.ingest.hl7v2 import parse_hl7v2
from services.ingest.model import ParsedMessage, SourceFormat

PARSERS: dict[SourceFormat, Callable[[bytes], ParsedMessage]] = {
    SourceFormat.FHIR_R4_JSON: parse_fhir,
    SourceFormat.HL7V2: parse_hl7v2,
    SourceFormat.DICOM: parse_dicom,
    SourceFormat.FHIR_R4_NDJSON: parse_fhir_ndjson,
}

DEFAULT_TASKS_PER_WORKER = 16
"""Messages a worker parses before it is replaced (its memory returned)."""


def default_workers() -> int:
    """min(2, CPUs): parsing must leave the machine room for storing and sealing."""
    return min(2, os.cpu_count() or 1)


def parse_content(source_format: SourceFormat, content: bytes) -> ParsedMessage:
    """Parse and validate one message's content with its format's parser (any size).

    What the pool's workers run; raises ``InvalidMessage`` listing every problem.
    """
    return PARSERS[source_format](content)


class ParsePool:
    """Worker processes that parse messages; ``await parse(...)`` from the event loop."""

    def __init__(
        self, workers: int = 0, *, tasks_per_worker: int = DEFAULT_TASKS_PER_WORKER
    ) -> None:
        """``workers`` processes (0: :func:`default_workers`), each replaced after
        ``tasks_per_worker`` messages. Workers start with :meth:`start` or on first use."""
        if workers < 0 or tasks_per_worker < 1:
            raise ValueError("workers must be >= 0 and tasks_per_worker >= 1")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self._executor = ProcessPoolExecutor(
            max_workers=workers or default_workers(),
            mp_context=context,
            max_tasks_per_child=tasks_per_worker,
        )

    async def start(self) -> None:
        """Start the fork server and a worker now, off the event loop: the first message
        would otherwise start them on the loop (seconds of imports)."""
        await asyncio.to_thread(lambda: self._executor.submit(os.getpid).result())

    async def parse(self, source_format: SourceFormat, content: bytes) -> ParsedMessage:
        """:func:`parse_content` in a worker; the event loop keeps serving meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, parse_content, source_format, content)

    def worker_pids(self) -> set[int]:
        """The process ids of the workers alive now (a replaced worker's id is gone)."""
        processes = self._executor._processes or {}  # the executor keeps no public list
        return {pid for pid, process in processes.items() if process.is_alive()}

    async def close(self) -> None:
        """Stop the workers (a parse still running finishes first), off the event loop."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
