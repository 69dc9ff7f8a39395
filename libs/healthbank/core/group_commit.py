"""Group commit: concurrent callers' items gathered into batches handled one at a time.

Used where a round of work costs about the same for one item as for many: the audit log's
storage (one sequence reservation per batch) and the services' audit client (one
AppendEvents call per batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

__all__ = ["GroupCommit"]


class GroupCommit(Generic[Item, Outcome]):
    """Gathers concurrent items into batches committed one at a time.

    No timer: while a batch is being committed the items that arrive queue up and become
    the next batch (up to ``max_batch``), so a lone item is committed at once and a busy
    caller commits many per round. Each caller's awaitable completes only after the batch
    holding its items is committed, or fails with the batch's error. ``commit`` returns one
    outcome per item, in order; an outcome that is an exception fails that item alone.
    """

    def __init__(
        self,
        commit: Callable[[list[Item]], Awaitable[Sequence[Outcome | BaseException]]],
        *,
        max_batch: int,
    ) -> None:
        """Commit batches of at most ``max_batch`` items with ``commit``."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def append(self, items: Sequence[Item]) -> list[Outcome]:
        """Commit ``items`` (in order) with whatever else is waiting; their outcomes."""
        loop = asyncio.get_running_loop()
        waiting = [(item, loop.create_future()) for item in items]
        self._queue.extend(waiting)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return list(await asyncio.gather(*(future for _, future in waiting)))

    async def _commit_queued(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            try:
                outcomes = await self._commit([item for item, _ in batch])
            except BaseException as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
