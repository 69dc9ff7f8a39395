"""Group commit: concurrent callers' items leave in batches, one batch at a time, each batch
in the context of its own first caller and marked with every caller's span (ADR 57)."""

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

    async def commit(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.seen.append(caller_var.get())
        self.callers.append(batch_callers())
        await asyncio.sleep(0.01)
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
