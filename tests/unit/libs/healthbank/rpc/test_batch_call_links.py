"""A call made for a batch of callers (ADR 57) sits in its first caller's trace and links to
every other caller's span, so each message's trace leads to the call that served it."""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from healthbank.core.group_commit import GroupCommit
from healthbank.rpc.clients import MAX_CALLER_LINKS, links_to_other_callers


def span_of(number: int) -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(
            trace_id=number, span_id=number, is_remote=False, trace_flags=TraceFlags.SAMPLED
        )
    )


async def test_a_batch_call_links_the_callers_other_than_the_one_whose_trace_it_is_in() -> None:
    seen: list[tuple[int, list[int]]] = []

    async def commit(items: list[int]) -> list[int]:
        parent = trace.get_current_span().get_span_context().span_id
        seen.append((parent, [link.context.span_id for link in links_to_other_callers()]))
        await asyncio.sleep(0.01)
        return items

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=1000)

    async def caller(number: int) -> list[int]:
        with trace.use_span(span_of(number)):
            return await group.append([number])

    first = asyncio.create_task(caller(1))
    await asyncio.sleep(0)
    await asyncio.gather(first, *(caller(n) for n in range(2, 300)))

    assert seen[0] == (1, [])  # a lone caller: its own trace, nothing to link
    parent, links = seen[1]
    assert parent == 2 and links == list(range(3, 3 + MAX_CALLER_LINKS))
    assert links_to_other_callers() == []  # outside a batch
