"""Group commit: concurrent callers' items leave in batches, one batch at a time (or a few at
once: ADR 58), each batch in the context of its own first caller and marked with every
caller's span (ADR 57)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from healthbank.core.group_commit import GroupCommit, batch_callers

caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("caller_var", default="")


def span_of(number: int) -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(
            trace_id=number, span_id=number, is_remote=False, trace_flags=TraceFlags.SAMPLED
        )
    )


class Recorder:
    """A commit that takes a while and notes what each batch saw."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.seen: list[str] = []
        self.callers: list[tuple[SpanContext, ...] | None] = []
        self.committing = 0
        self.most_at_once = 0

    async def commit(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.seen.append(caller_var.get())
        self.callers.append(batch_callers())
        self.committing += 1
        self.most_at_once = max(self.most_at_once, self.committing)
        await asyncio.sleep(0.01)
        self.committing -= 1
        return [ValueError(item) if item < 0 else item * 10 for item in items]


async def call(group: GroupCommit[int, int], name: str, items: list[int]) -> list[int]:
    caller_var.set(name)
    return await group.append(items)


async def test_callers_started_together_leave_together() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=10)
    answers = await asyncio.gather(*(call(group, name, [n]) for n, name in enumerate("abc", 1)))
    assert answers == [[10], [20], [30]] and recorder.batches == [[1, 2, 3]]
    assert await group.append([]) == []


async def test_items_that_arrive_during_a_commit_leave_together_in_the_next() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=3)

    first = asyncio.create_task(call(group, "a", [1]))
    await asyncio.sleep(0)  # the lone item leaves at once
    rest = [asyncio.create_task(call(group, name, [n])) for n, name in enumerate("bcde", 2)]

    assert await first == [10]
    assert [await task for task in rest] == [[20], [30], [40], [50]]
    assert recorder.batches == [[1], [2, 3, 4], [5]]


@pytest.mark.parametrize("max_in_flight", [1, 2])
async def test_a_backlog_leaves_in_at_most_max_in_flight_batches_at_once(
    max_in_flight: int,
) -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=2, max_in_flight=max_in_flight)

    first = asyncio.create_task(call(group, "a", [1]))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(call(group, name, [n])) for n, name in enumerate("bcdefgh", 2)]

    assert [await task for task in [first, *rest]] == [[n * 10] for n in range(1, 9)]
    # With room for a second batch, the backlog's first batch leaves beside the lone item's
    # (and each batch still takes what waits when it starts).
    assert recorder.most_at_once == max_in_flight
    assert sorted(item for batch in recorder.batches for item in batch) == list(range(1, 9))
    assert all(len(batch) <= 2 for batch in recorder.batches)


async def test_callers_started_together_leave_together_with_room_for_more_batches() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=10, max_in_flight=4)
    answers = await asyncio.gather(*(call(group, name, [n]) for n, name in enumerate("abc", 1)))
    assert answers == [[10], [20], [30]] and recorder.batches == [[1, 2, 3]]


async def test_a_batch_cancelled_before_it_ran_leaves_its_items_to_the_next() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=10)
    before = asyncio.all_tasks()
    waiting = asyncio.create_task(call(group, "a", [1]))
    await asyncio.sleep(0)  # the caller queued its item and started a batch, not yet run
    (batch,) = asyncio.all_tasks() - before - {waiting}
    batch.cancel()
    assert await asyncio.wait_for(waiting, 1) == [10]


async def test_one_items_failure_is_its_own_and_a_failed_commit_fails_its_batch() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=10)
    outcomes = await asyncio.gather(
        call(group, "a", [1]), call(group, "b", [-2]), return_exceptions=True
    )
    assert outcomes[0] == [10] and isinstance(outcomes[1], ValueError)

    async def broken(items: list[int]) -> list[int | BaseException]:
        raise RuntimeError("store down")

    failing: GroupCommit[int, int] = GroupCommit(broken, max_batch=10)
    with pytest.raises(RuntimeError):
        await failing.append([1, 2])


async def test_each_batch_runs_in_its_own_first_callers_context() -> None:
    # Before ADR 57 the committer ran in the context of the caller that started it, and so
    # did every batch after while items kept coming: its deadline, credentials and request
    # id on the calls made for everyone else.
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=2)

    first = asyncio.create_task(call(group, "a", [1]))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(call(group, name, [n])) for n, name in enumerate("bcd", 2)]
    await asyncio.gather(first, *rest)

    assert recorder.batches == [[1], [2, 3], [4]]
    assert recorder.seen == ["a", "b", "d"]
    assert caller_var.get() == ""  # nothing leaks back into this context either


async def test_a_batch_names_every_callers_span_and_none_outside_a_batch() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_batch=10)

    async def traced_call(number: int, items: list[int]) -> list[int]:
        with trace.use_span(span_of(number)):
            return await group.append(items)

    first = asyncio.create_task(traced_call(1, [1]))
    await asyncio.sleep(0)
    await asyncio.gather(first, traced_call(2, [2, 3]), traced_call(3, [4]), call(group, "x", [5]))

    # A lone caller's batch is its own work: not marked. Then each caller's span once, first
    # caller first; a caller without a span is left out.
    assert recorder.callers[0] is None
    assert [c.span_id for c in recorder.callers[1] or ()] == [2, 3]
    assert recorder.batches == [[1], [2, 3, 4, 5]]
    assert batch_callers() is None
