"""Group commit: concurrent callers' items gathered into batches handled one at a time (or
a few at once, where their order does not matter).

Used where a round of work costs about the same for one item as for many: the audit log's
storage (one sequence reservation per batch), the services' audit client (one AppendEvents
call per batch), ingest's identity client, Vault's keyed hashes, Cassandra's coalesced
reads and writes.

A batch serves many callers (ADR 57). Each batch runs in the context of its own first
caller (so a lone caller's work stays in its trace, under its request id); one that serves
others too is marked: :func:`batch_callers` names every caller's span, which the spans of
the work done for them link to (outgoing calls; storage, key and cache work), and the first
caller's deadline is not imposed on the others' work. Each batch is a task of its own,
which starts the next: one task started by a caller and committing every batch after would
run them all in that caller's context for as long as items keep coming.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanContext

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

__all__ = ["GroupCommit", "batch_callers", "serving_a_shared_batch"]

# Inside the commit of a batch serving more than one caller: every item's caller context.
_batch_contexts: contextvars.ContextVar[tuple[contextvars.Context, ...] | None] = (
    contextvars.ContextVar("batch_contexts", default=None)
)


def serving_a_shared_batch() -> bool:
    """Whether this runs inside the commit of a batch serving more than one caller."""
    return _batch_contexts.get() is not None


def batch_callers() -> tuple[SpanContext, ...] | None:
    """Inside the commit of a batch serving more than one caller, the spans of the callers
    (first caller first, without repeats, only valid ones); else None: a batch of one
    caller's items is that caller's own work. Worked out when asked (an outgoing call
    asks), not for every batch."""
    contexts = _batch_contexts.get()
    if contexts is None:
        return None
    distinct = {id(context): context for context in contexts}.values()
    spans = (context.run(trace.get_current_span).get_span_context() for context in distinct)
    valid = {(span.trace_id, span.span_id): span for span in spans if span.is_valid}
    return tuple(valid.values())


class GroupCommit(Generic[Item, Outcome]):
    """Gathers concurrent items into batches committed one at a time, or up to
    ``max_in_flight`` at once.

    No timer: while ``max_in_flight`` batches are being committed the items that arrive queue
    up and become the next batch (up to ``max_batch``), so a lone item is committed at once
    and a busy caller commits many per round. Each caller's awaitable completes only after
    the batch holding its items is committed, or fails with the batch's error. ``commit``
    returns one outcome per item, in order; an outcome that is an exception fails that item
    alone.
    """

    def __init__(
        self,
        commit: Callable[[list[Item]], Coroutine[Any, Any, Sequence[Outcome | BaseException]]],
        *,
        max_batch: int,
        max_in_flight: int = 1,
    ) -> None:
        """Commit batches of at most ``max_batch`` items with ``commit``, at most
        ``max_in_flight`` batches at once (ADR 58; only for batches whose order does not
        matter: independent writes or reads)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[Item, asyncio.Future[Outcome], contextvars.Context]] = []
        # Batch tasks not yet done, and the one started but yet to take its batch (while it
        # waits to run, items appended join it rather than starting another).
        self._running: set[asyncio.Task[None]] = set()
        self._taking: asyncio.Task[None] | None = None

    async def append(self, items: Sequence[Item]) -> list[Outcome]:
        """Commit ``items`` (in order) with whatever else is waiting; their outcomes."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        caller = contextvars.copy_context()
        waiting = [(item, loop.create_future(), caller) for item in items]
        self._queue.extend(waiting)
        self._start_committing()
        return list(await asyncio.gather(*(future for _, future, _ in waiting)))

    def _start_committing(self) -> None:
        """Commit the next batch, if items wait and a batch may start: in a task of its own
        first caller's context. The batch is taken when the task runs, so items appended in
        the meantime (callers started together) leave in it too."""
        if not self._queue or self._taking is not None or len(self._running) >= self._max_in_flight:
            return
        task = asyncio.create_task(self._commit_batch(), context=self._queue[0][2].copy())
        self._taking = task
        self._running.add(task)
        # Also when the task is cancelled before it ran (and so never took a batch).
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._taking is task:
            self._taking = None
        self._start_committing()

    async def _commit_batch(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: len(batch)]
        self._taking = None
        # What this batch left behind may start beside it (with max_in_flight above 1).
        self._start_committing()
        contexts = tuple(context for _, _, context in batch)
        # Items of one append share its context object.
        if any(context is not contexts[0] for context in contexts):
            _batch_contexts.set(contexts)
        try:
            outcomes = await self._commit([item for item, _, _ in batch])
        except BaseException as error:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise  # cancelled: the done callback starts the next batch
        else:
            for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        # The next batch starts now, not a loop turn later from the done callback.
        current = asyncio.current_task()
        if current is not None:
            self._running.discard(current)
        self._start_committing()
