"""The committee's desk: research requests, votes, decisions, grants and budgets over the
research store, every step audited (ADR 26).

Holds no protocol concerns. Each step is appended to the audit log under the request's
research ledger token (:func:`healthbank.contracts.research.research_ledger_token`) before
it is stored (no audit, no change); a budget spend is audited once it has been made, so a
failed append leaves budget spent and nothing released, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.contracts.research import research_grant_name, research_request_name
from healthbank.core.ids import MonotonicUlidGenerator
from services.consent.committee import (
    Choice,
    RequestState,
    ResearchGrant,
    ResearchRequest,
    Study,
    Vote,
    from_micro,
    grant_for,
    screen,
    tally,
    to_micro,
)
from services.consent.store_research import BudgetExhausted, ResearchStore

STEP_SUBMITTED = "RESEARCH_SUBMITTED"
STEP_SCREENED_OUT = "RESEARCH_SCREENED_OUT"
STEP_VOTE = "COMMITTEE_VOTE"
STEP_APPROVED = "RESEARCH_APPROVED"
STEP_REJECTED = "RESEARCH_REJECTED"
STEP_BUDGET_SPENT = "BUDGET_SPENT"

REFUSAL_NOT_OWNER = "NOT_REQUEST_OWNER"


class ResearchLog(Protocol):
    """Where the desk records each step (the audit service); raises when it cannot."""

    async def research_step(self, actor: Principal, request_id: str, step: str) -> None:
        """Record that ``actor`` took ``step`` (``STEP_* <detail>``) on request ``request_id``."""
        ...


@dataclass(frozen=True)
class CommitteeRules:
    """The deployment's committee configuration."""

    quorum: int
    veto_allowed: bool


class ResearchNotFound(Exception):
    """No such request or grant (or a grant whose request was not approved)."""


class ResearchRefused(Exception):
    """A refusal the caller can act on; ``reason`` is its machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ResearchDesk:
    """The committee's workflow; one instance per consent process."""

    def __init__(
        self,
        store: ResearchStore,
        log: ResearchLog,
        rules: CommitteeRules,
        now: Callable[[], datetime],
    ) -> None:
        """Keep requests in ``store``, record steps in ``log``, decide by ``rules``."""
        self._store = store
        self._log = log
        self._rules = rules
        self._now = now
        self._ids = MonotonicUlidGenerator()

    async def submit(self, researcher: Principal, study: Study, key: str) -> ResearchRequest:
        """Screen and file ``study``; a retry with the same ``key`` returns the first filing."""
        existing = await self._store.request_for_key(researcher.subject, key)
        if existing is not None:
            return existing
        now = self._now()
        findings = screen(study)
        request_id = self._ids(now)
        request = ResearchRequest(
            request_id=request_id,
            researcher_id=researcher.subject,
            idempotency_key=key,
            study=study,
            state=RequestState.REJECTED_BY_SCREENING if findings else RequestState.UNDER_REVIEW,
            create_time=now,
            findings=findings,
            decision_reasons=tuple(f"{f.rule}: {f.detail}" for f in findings),
            decide_time=now if findings else None,
        )
        name = research_request_name(request_id)
        await self._log.research_step(researcher, request_id, f"{STEP_SUBMITTED} {name}")
        if findings:
            rules = ",".join(finding.rule for finding in findings)
            await self._log.research_step(
                researcher, request_id, f"{STEP_SCREENED_OUT} {name} {rules}"
            )
        return await self._store.add_request(request)

    async def request(self, caller: Principal, request_id: str) -> ResearchRequest:
        """One request, for the committee or its own researcher."""
        request = await self._store.get_request(request_id)
        if request is None:
            raise ResearchNotFound(request_id)
        _check_owner(caller, request.researcher_id)
        return request

    async def requests(
        self, caller: Principal, state: RequestState | None, limit: int, before: str | None
    ) -> tuple[list[ResearchRequest], str | None]:
        """A page of requests (a researcher's own only) and the id to continue after."""
        page = await self._store.list_requests(limit, before)
        last = page[-1].request_id if len(page) == limit else None
        shown = [
            request
            for request in page
            if (caller.kind != PrincipalKind.RESEARCHER or request.researcher_id == caller.subject)
            and (state is None or request.state == state)
        ]
        return shown, last

    async def vote(
        self, member: Principal, request_id: str, choice: Choice, comment: str
    ) -> ResearchRequest:
        """Record ``member``'s vote; decide once the tally does. A retried identical vote
        completes a decision its first attempt could not store."""
        if choice == Choice.VETO and not self._rules.veto_allowed:
            raise ResearchRefused("VETO_NOT_ALLOWED", "this committee does not allow vetoes")
        request = await self._store.get_request(request_id)
        if request is None:
            raise ResearchNotFound(request_id)
        if request.decided:
            raise ResearchRefused("RESEARCH_REQUEST_DECIDED", "the request is already decided")
        earlier = next((v for v in request.votes if v.member_id == member.subject), None)
        if earlier is None:
            vote = Vote(member.subject, choice, comment, self._now())
            await self._log.research_step(
                member,
                request_id,
                f"{STEP_VOTE} {research_request_name(request_id)} {choice.name}",
            )
            if not await self._store.add_vote(request_id, vote):
                earlier = vote  # a concurrent attempt of the same member won
        if earlier is not None and earlier.choice != choice:
            raise ResearchRefused("ALREADY_VOTED", "this member has already voted on the request")
        return await self._decide_if_due(member, request_id)

    async def _decide_if_due(self, member: Principal, request_id: str) -> ResearchRequest:
        request = await self._store.get_request(request_id)
        assert request is not None
        outcome = tally(
            request.votes, quorum=self._rules.quorum, veto_allowed=self._rules.veto_allowed
        )
        if outcome.state is None or request.decided:
            return request
        now = self._now()
        decided = replace(
            request, state=outcome.state, decision_reasons=outcome.reasons, decide_time=now
        )
        grant = grant_for(decided, now) if outcome.state == RequestState.APPROVED else None
        step = STEP_APPROVED if grant is not None else STEP_REJECTED
        detail = research_request_name(request_id)
        if grant is not None:
            detail += " " + research_grant_name(grant.grant_id)
        await self._log.research_step(member, request_id, f"{step} {detail}")
        await self._store.decide(decided, grant)
        refreshed = await self._store.get_request(request_id)
        assert refreshed is not None
        return refreshed

    async def grant(self, caller: Principal, grant_id: str) -> ResearchGrant:
        """An approved request's grant, for its researcher, the committee or the black room."""
        request = await self._store.get_request(grant_id)
        grant = await self._store.get_grant(grant_id)
        if request is None or grant is None or request.state != RequestState.APPROVED:
            raise ResearchNotFound(grant_id)
        _check_owner(caller, grant.researcher_id)
        return grant

    async def spend(
        self, caller: Principal, grant_id: str, epsilon: float, query_id: str
    ) -> ResearchGrant:
        """Spend ``epsilon`` of the grant's budget for ``query_id`` (once), then audit it."""
        grant = await self.grant(caller, grant_id)
        if query_id in grant.spent_queries:
            return grant  # a retry: spent and audited already
        if self._now() >= grant.expire_time:
            raise ResearchRefused("RESEARCH_GRANT_EXPIRED", "the research grant has expired")
        try:
            spent = await self._store.spend(grant_id, query_id, to_micro(epsilon))
        except BudgetExhausted:
            raise ResearchRefused(
                "PRIVACY_BUDGET_EXHAUSTED",
                f"the grant has {from_micro(grant.remaining_micro):g} epsilon left",
            ) from None
        await self._log.research_step(
            caller,
            grant_id,
            f"{STEP_BUDGET_SPENT} {research_grant_name(grant_id)} {epsilon:g} query {query_id}",
        )
        return spent


def _check_owner(caller: Principal, researcher_id: str) -> None:
    if caller.kind == PrincipalKind.RESEARCHER and caller.subject != researcher_id:
        raise ResearchRefused(REFUSAL_NOT_OWNER, "a researcher sees only their own research")
