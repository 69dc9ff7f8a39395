"""The data security committee in consent over real gRPC, with the real audit service (DM1).

Researchers submit as RESEARCHER, members vote as COMMITTEE, the black room spends budget
as the SERVICE "ai-alert" (the principals a deployment uses). Consent runs on a clock the
test moves; quorum 3 with vetoes allowed (the defaults). Every step is read back from the
audit log under the request's research ledger token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from service_support import (
    BearerAuth,
    RunningServices,
    failure,
    fields,
    research_request_example,
    service_settings,
    ts,
    wait_for_health,
)

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.contracts.research import parse_research_request_name, research_ledger_token
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from services.audit.app import open_service as open_audit
from services.consent.app import SERVICE_NAME, open_service

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-1", purpose=Purpose.RESEARCH)
OTHER_RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-2", purpose=Purpose.RESEARCH)
MEMBERS = [
    Principal(PrincipalKind.COMMITTEE, f"member-{n}", purpose=Purpose.OPERATIONS)
    for n in range(1, 5)
]
AUDITOR = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
BLACK_ROOM = Principal(PrincipalKind.SERVICE, "ai-alert", purpose=Purpose.OPERATIONS)

APPROVE = consent_pb2.VOTE_CHOICE_APPROVE
REJECT = consent_pb2.VOTE_CHOICE_REJECT
VETO = consent_pb2.VOTE_CHOICE_VETO
State = consent_pb2.ResearchRequestState


class Clock:
    """A UTC clock that moves only when a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Committee(BearerAuth):
    """Consent (with audit) running, its clock, and stubs."""

    settings: Settings
    clock: Clock
    consent: consent_pb2_grpc.ConsentServiceAsyncStub
    audit: audit_pb2_grpc.AuditServiceAsyncStub

    async def submit(
        self, principal: Principal = RESEARCHER, **changes: Any
    ) -> consent_pb2.ResearchRequest:
        asked = research_request_example(ts(self.clock.now + timedelta(days=90)))
        for field, value in changes.items():
            if field in ("fields", "groupings"):
                del getattr(asked, field)[:]
                getattr(asked, field).extend(value)
            else:
                setattr(asked, field, value)
        response: consent_pb2.ResearchRequest = await self.consent.SubmitResearchRequest(
            consent_pb2.SubmitResearchRequestRequest(research_request=asked, request_id=new_ulid()),
            metadata=self.auth(principal),
        )
        return response

    async def vote(
        self, name: str, member: Principal, choice: int, comment: str = "fine"
    ) -> consent_pb2.ResearchRequest:
        response: consent_pb2.ResearchRequest = await self.consent.CastCommitteeVote(
            consent_pb2.CastCommitteeVoteRequest(name=name, choice=choice, comment=comment),  # type: ignore[arg-type]
            metadata=self.auth(member),
        )
        return response

    async def approved(self) -> consent_pb2.ResearchRequest:
        request = await self.submit()
        for member in MEMBERS[:3]:
            request = await self.vote(request.name, member, APPROVE)
        assert request.state == State.RESEARCH_REQUEST_STATE_APPROVED
        return request

    async def spend(self, grant_name: str, epsilon: float, query_id: str = "") -> Any:
        return await self.consent.SpendPrivacyBudget(
            consent_pb2.SpendPrivacyBudgetRequest(
                grant_name=grant_name, epsilon=epsilon, query_id=query_id or new_ulid()
            ),
            metadata=self.auth(BLACK_ROOM),
        )

    async def ledger(self, request_name: str) -> list[str]:
        """The bases of every audit event of a request, oldest first."""
        request_id = parse_research_request_name(request_name)
        assert request_id is not None
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(
                parent=f"persons/{research_ledger_token(request_id)}", page_size=100
            ),
            metadata=self.auth(AUDITOR),
        )
        events = list(reversed(response.events))
        assert all(logged.event.action == audit_pb2.ACTION_RESEARCH for logged in events)
        return [logged.event.basis for logged in events]


@pytest.fixture
async def committee(tmp_path: Path) -> AsyncIterator[Committee]:
    settings = service_settings(tmp_path)
    clock = Clock(START)
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("audit", open_audit(settings))
        clients = running.clients(settings, "consent")
        await running.start("consent", open_service(settings, clients=clients, now=clock))
        await wait_for_health(running.channel("consent"), SERVICE_NAME)
        yield Committee(
            settings,
            clock,
            consent_pb2_grpc.ConsentServiceStub(running.channel("consent")),
            audit_pb2_grpc.AuditServiceStub(running.channel("audit")),
        )


async def test_a_request_for_national_ids_and_names_is_rejected_citing_the_rule(
    committee: Committee,
) -> None:
    request = await committee.submit(fields=["hospital", "national_id", "name"])
    assert request.state == State.RESEARCH_REQUEST_STATE_REJECTED_BY_SCREENING
    assert [finding.rule for finding in request.screening_findings] == [
        "DIRECT_IDENTIFIER_REQUESTED"
    ]
    assert "name, national_id" in request.screening_findings[0].detail
    assert request.decision_reasons[0].startswith("DIRECT_IDENTIFIER_REQUESTED")
    assert not request.grant_name
    # Screened out: no member can vote it through.
    refused = await failure(committee.vote(request.name, MEMBERS[0], APPROVE))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.reason == "RESEARCH_REQUEST_DECIDED"
    bases = await committee.ledger(request.name)
    assert [basis.split()[0] for basis in bases] == ["RESEARCH_SUBMITTED", "RESEARCH_SCREENED_OUT"]
    assert "DIRECT_IDENTIFIER_REQUESTED" in bases[1]


async def test_missing_ethics_approval_and_a_deny_listed_purpose_are_each_cited(
    committee: Committee,
) -> None:
    request = await committee.submit(
        ethics_approval_reference="", purpose="Insurance pricing of diabetic customers"
    )
    assert request.state == State.RESEARCH_REQUEST_STATE_REJECTED_BY_SCREENING
    assert {finding.rule for finding in request.screening_findings} == {
        "ETHICS_APPROVAL_MISSING",
        "PURPOSE_DENY_LISTED",
    }


async def test_the_request_is_decided_only_once_the_quorum_has_voted(
    committee: Committee,
) -> None:
    request = await committee.submit()
    assert request.state == State.RESEARCH_REQUEST_STATE_UNDER_REVIEW
    request = await committee.vote(request.name, MEMBERS[0], APPROVE)
    request = await committee.vote(request.name, MEMBERS[1], REJECT, "too broad a cohort")
    assert request.state == State.RESEARCH_REQUEST_STATE_UNDER_REVIEW
    assert not request.grant_name
    request = await committee.vote(request.name, MEMBERS[2], APPROVE)
    assert request.state == State.RESEARCH_REQUEST_STATE_APPROVED
    assert request.decision_reasons[0] == "approved: 2 for, 1 against (quorum 3)"
    assert "member-2: too broad a cohort" in request.decision_reasons
    grant = await committee.consent.GetResearchGrant(
        consent_pb2.GetResearchGrantRequest(name=request.grant_name),
        metadata=committee.auth(RESEARCHER),
    )
    assert list(grant.fields) == ["hospital", "first_year", "record_count", "span_days"]
    assert list(grant.groupings) == ["hospital"]
    assert grant.epsilon_budget == 1.0
    assert grant.epsilon_spent == 0.0
    assert grant.expire_time == request.access_until
    # Another researcher is refused the grant; a late vote is refused the decided request.
    other = await failure(
        committee.consent.GetResearchGrant(
            consent_pb2.GetResearchGrantRequest(name=request.grant_name),
            metadata=committee.auth(OTHER_RESEARCHER),
        )
    )
    assert (other.code, other.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_REQUEST_OWNER")
    late = await failure(committee.vote(request.name, MEMBERS[3], REJECT, "late"))
    assert late.reason == "RESEARCH_REQUEST_DECIDED"
    steps = [basis.split()[0] for basis in await committee.ledger(request.name)]
    assert steps == ["RESEARCH_SUBMITTED", *["COMMITTEE_VOTE"] * 3, "RESEARCH_APPROVED"]


async def test_a_majority_against_rejects_without_a_grant(committee: Committee) -> None:
    request = await committee.submit()
    request = await committee.vote(request.name, MEMBERS[0], REJECT, "no clear benefit")
    request = await committee.vote(request.name, MEMBERS[1], REJECT, "no clear benefit")
    request = await committee.vote(request.name, MEMBERS[2], APPROVE)
    assert request.state == State.RESEARCH_REQUEST_STATE_REJECTED
    assert request.decision_reasons[0] == "rejected: 1 for, 2 against (quorum 3)"
    assert not request.grant_name


async def test_a_veto_rejects_at_once(committee: Committee) -> None:
    request = await committee.submit()
    request = await committee.vote(request.name, MEMBERS[0], APPROVE)
    request = await committee.vote(request.name, MEMBERS[1], VETO, "re-identification risk")
    assert request.state == State.RESEARCH_REQUEST_STATE_REJECTED
    assert list(request.decision_reasons) == ["vetoed by member-2: re-identification risk"]
    steps = [basis.split()[0] for basis in await committee.ledger(request.name)]
    assert steps[-1] == "RESEARCH_REJECTED"


async def test_a_member_votes_once_and_a_veto_needs_a_reason(committee: Committee) -> None:
    request = await committee.submit()
    await committee.vote(request.name, MEMBERS[0], APPROVE)
    # The same vote again is a retry; a different one is refused.
    again = await committee.vote(request.name, MEMBERS[0], APPROVE)
    assert len(again.votes) == 1
    changed = await failure(committee.vote(request.name, MEMBERS[0], REJECT, "changed my mind"))
    assert (changed.code, changed.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_VOTED")
    unexplained = await failure(committee.vote(request.name, MEMBERS[1], VETO, comment=""))
    assert unexplained.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(unexplained) == ["comment"]


async def test_a_researcher_cannot_vote(committee: Committee) -> None:
    request = await committee.submit()
    refused = await failure(committee.vote(request.name, RESEARCHER, APPROVE))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED


async def test_an_incomplete_request_names_every_bad_field(committee: Committee) -> None:
    refused = await failure(
        committee.consent.SubmitResearchRequest(
            consent_pb2.SubmitResearchRequestRequest(
                research_request=consent_pb2.ResearchRequest(
                    fields=["hospital", "favourite_colour"], groupings=["record_count"]
                ),
                request_id="r-1",
            ),
            metadata=committee.auth(RESEARCHER),
        )
    )
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(fields(refused)) >= {
        "research_request.purpose",
        "research_request.protocol",
        "research_request.cohort.code_system",
        "research_request.cohort.codes",
        "research_request.fields",
        "research_request.groupings",
        "research_request.output_kind",
        "research_request.period_start",
        "research_request.access_until",
        "research_request.epsilon_budget",
    }


async def test_an_expired_grant_spends_nothing(committee: Committee) -> None:
    request = await committee.approved()
    await committee.spend(request.grant_name, 0.1)
    committee.clock.now = request.access_until.ToDatetime(tzinfo=UTC) + timedelta(seconds=1)
    refused = await failure(committee.spend(request.grant_name, 0.1))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESEARCH_GRANT_EXPIRED",
    )


async def test_concurrent_spends_never_overspend_and_a_retried_query_spends_once(
    committee: Committee,
) -> None:
    request = await committee.approved()  # budget 1.0
    results = await asyncio.gather(
        *(committee.spend(request.grant_name, 0.15) for _ in range(12)), return_exceptions=True
    )
    spent = [result for result in results if not isinstance(result, BaseException)]
    refused = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(spent) == 6 and len(refused) == 6
    assert all(error.code() == grpc.StatusCode.FAILED_PRECONDITION for error in refused)
    assert all("PRIVACY_BUDGET_EXHAUSTED" in str(error.trailing_metadata()) for error in refused)
    query = new_ulid()
    first = await committee.spend(request.grant_name, 0.05, query)
    retried = await committee.spend(request.grant_name, 0.05, query)
    assert first.epsilon_spent == retried.epsilon_spent == pytest.approx(0.95)
    grant = await committee.consent.GetResearchGrant(
        consent_pb2.GetResearchGrantRequest(name=request.grant_name),
        metadata=committee.auth(MEMBERS[0]),
    )
    assert grant.epsilon_spent == pytest.approx(0.95)
    steps = [basis.split()[0] for basis in await committee.ledger(request.name)]
    assert steps.count("BUDGET_SPENT") == 7
