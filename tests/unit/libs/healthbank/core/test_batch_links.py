"""Work done for a batch of callers (ADR 57), a call or a storage, key or cache span, sits in
its first caller's trace and links to every other caller's span, so each message's trace
leads to the work that served it."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan

from healthbank.core import telemetry
from healthbank.core.group_commit import GroupCommit
from healthbank.core.telemetry import MAX_CALLER_LINKS, links_to_other_callers

# Recorded spans from a provider of this test's own (the global one stays untouched).
TRACER = TracerProvider().get_tracer("test")


async def batched_links(callers: int, recorded: bool) -> list[tuple[int, list[int]]]:
    """(the call's parent span id, the span ids it links to) for each batch, when one
    caller and then ``callers`` - 1 more send an item each."""
    seen: list[tuple[int, list[int]]] = []

    async def commit(items: list[int]) -> list[int]:
        parent = trace.get_current_span().get_span_context().span_id
        seen.append((parent, [link.context.span_id for link in links_to_other_callers()]))
        await asyncio.sleep(0.01)
        return items

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=1000)
    spans = [TRACER.start_span(f"caller {n}") for n in range(callers)]
    if not recorded:
        spans = [NonRecordingSpan(span.get_span_context()) for span in spans]

    async def caller(number: int) -> list[int]:
        with trace.use_span(spans[number]):
            return await group.append([number])

    first = asyncio.create_task(caller(0))
    await asyncio.sleep(0)
    await asyncio.gather(first, *(caller(n) for n in range(1, callers)))
    ids = [span.get_span_context().span_id for span in spans]
    return [(ids.index(parent), [ids.index(link) for link in links]) for parent, links in seen]


async def test_a_batch_call_links_the_callers_other_than_the_one_whose_trace_it_is_in() -> None:
    seen = await batched_links(300, recorded=True)

    assert seen[0] == (0, [])  # a lone caller: its own trace, nothing to link
    assert seen[1] == (1, list(range(2, 2 + MAX_CALLER_LINKS)))
    assert links_to_other_callers() == []  # outside a batch


async def test_a_span_not_recorded_gets_no_links_worked_out() -> None:
    assert await batched_links(5, recorded=False) == [(0, []), (1, [])]


async def test_a_storage_span_of_a_shared_batch_links_the_other_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "_TRACER", provider.get_tracer("test"))

    async def commit(items: list[int]) -> list[int]:
        with telemetry.traced("vault hmac", {"healthbank.items": len(items)}):
            await asyncio.sleep(0.01)
        return items

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=1000)
    callers = [TRACER.start_span(f"caller {n}") for n in range(4)]

    async def caller(number: int) -> list[int]:
        with trace.use_span(callers[number]):
            return await group.append([number])

    first = asyncio.create_task(caller(0))
    await asyncio.sleep(0)
    await asyncio.gather(first, *(caller(n) for n in range(1, 4)))

    alone, shared = exporter.get_finished_spans()
    ids = [span.get_span_context().span_id for span in callers]
    assert alone.parent is not None and alone.parent.span_id == ids[0]
    assert alone.links == ()
    # The second batch served callers 1-3: in caller 1's trace, linked to 2 and 3.
    assert shared.parent is not None and shared.parent.span_id == ids[1]
    assert [link.context.span_id for link in shared.links] == ids[2:]
