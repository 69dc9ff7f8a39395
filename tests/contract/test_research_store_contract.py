"""One contract for the committee's research store, run against SQLite and real Cassandra.

Both backends keep one request per (researcher, idempotency key), one vote per member,
one decision per request (with its grant), and spend a grant's privacy budget atomically:
spends racing from several store instances (several consent processes) never take it
below zero, and a query id spends once (ADR 26).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from contract_support import StoreKind

from healthbank.core.ids import MonotonicUlidGenerator
from services.consent.committee import (
    Choice,
    OutputKind,
    RequestState,
    ResearchRequest,
    Study,
    Vote,
    grant_for,
    to_micro,
)
from services.consent.store_research import BudgetExhausted, ResearchStore, SqliteResearchStore
from services.consent.store_research_cassandra import MIGRATIONS, CassandraResearchStore

T0 = datetime(2030, 6, 1, 8, 0, 0, 250000, tzinfo=UTC)
STUDY = Study(
    purpose="influenza burden",
    protocol="FLU-1",
    ethics_approval_reference="IRB-1",
    code_system="http://hl7.org/fhir/sid/icd-10",
    codes=("J10.1",),
    fields=("hospital", "record_count"),
    groupings=("hospital",),
    output_kind=OutputKind.AGGREGATES,
    period_start=datetime(2020, 1, 1, tzinfo=UTC),
    period_end=datetime(2030, 1, 1, tzinfo=UTC),
    epsilon_budget=1.0,
    access_until=T0 + timedelta(days=90),
)


@pytest.fixture
def store_kind() -> StoreKind:
    return StoreKind(
        SqliteResearchStore, "research.db", CassandraResearchStore, "research", MIGRATIONS
    )


def _request(request_id: str, key: str = "key-1") -> ResearchRequest:
    return ResearchRequest(
        request_id=request_id,
        researcher_id="res-1",
        idempotency_key=key,
        study=STUDY,
        state=RequestState.UNDER_REVIEW,
        create_time=T0,
    )


async def _approved(store: ResearchStore, request_id: str) -> None:
    request = await store.add_request(_request(request_id))
    decided = replace(
        request, state=RequestState.APPROVED, decision_reasons=("approved",), decide_time=T0
    )
    assert await store.decide(decided, grant_for(decided, T0))


async def test_one_request_per_key_one_vote_per_member_one_decision(store: ResearchStore) -> None:
    new_id = MonotonicUlidGenerator()
    first, second = new_id(T0), new_id(T0)
    stored = await store.add_request(_request(first))
    assert (await store.add_request(_request(second))).request_id == first
    assert (await store.request_for_key("res-1", "key-1")).request_id == first  # type: ignore[union-attr]
    assert await store.add_vote(first, Vote("m-1", Choice.APPROVE, "", T0))
    assert not await store.add_vote(first, Vote("m-1", Choice.REJECT, "again", T0))
    assert [vote.choice for vote in (await store.get_request(first)).votes] == [Choice.APPROVE]  # type: ignore[union-attr]
    rejected = replace(
        stored, state=RequestState.REJECTED, decision_reasons=("no",), decide_time=T0
    )
    assert await store.decide(rejected, None)
    approved = replace(rejected, state=RequestState.APPROVED)
    assert not await store.decide(approved, grant_for(approved, T0))
    final = await store.get_request(first)
    assert final is not None and final.state == RequestState.REJECTED
    assert final.decision_reasons == ("no",)
    assert [request.request_id for request in await store.list_requests(10)] == [first]


async def test_concurrent_spends_from_several_stores_never_overspend(
    open_store: object, store: ResearchStore
) -> None:
    request_id = MonotonicUlidGenerator()(T0)
    await _approved(store, request_id)
    others = [await open_store() for _ in range(2)]  # type: ignore[operator]
    new_query = MonotonicUlidGenerator()
    queries = [new_query(T0) for _ in range(12)]

    async def spend(index: int) -> bool:
        target = [store, *others][index % 3]
        try:
            await target.spend(request_id, queries[index], to_micro(0.25))
        except BudgetExhausted:
            return False
        return True

    outcomes = await asyncio.gather(*(spend(index) for index in range(12)))
    assert sum(outcomes) == 4
    grant = await store.get_grant(request_id)
    assert grant is not None and grant.spent_micro == grant.budget_micro == to_micro(1.0)
    # A query that spent spends once more at no cost; the budget is exhausted for new ones.
    spent_query = queries[outcomes.index(True)]
    again = await store.spend(request_id, spent_query, to_micro(0.25))
    assert again.spent_micro == to_micro(1.0)
    with pytest.raises(BudgetExhausted):
        await store.spend(request_id, new_query(T0), 1)
