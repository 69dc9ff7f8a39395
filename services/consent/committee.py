"""The data security committee's rules (ADR 26): screening, the tally, the grant, the budget.

Pure domain code: no I/O, no gRPC. The committee desk (:mod:`services.consent.research_desk`)
stores and audits what these functions decide.

- **Screening** runs the named rules of :data:`SCREENING_RULES` on a new request; any
  finding rejects it at once, citing the rule.
- **Tally**: a veto (when the deployment allows vetoes) rejects at once; otherwise once
  ``quorum`` members have voted the request is approved when more voted for than against.
- An approval becomes a :class:`ResearchGrant` scoped to the request's cohort, fields,
  groupings, output kind and period, with its privacy budget and an expiry.
- The **budget** is kept in micro-epsilon integers, so repeated spends add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from healthbank.contracts.research import DIRECT_IDENTIFIERS

RULE_DIRECT_IDENTIFIER = "DIRECT_IDENTIFIER_REQUESTED"
RULE_ETHICS_MISSING = "ETHICS_APPROVAL_MISSING"
RULE_PURPOSE_DENY_LISTED = "PURPOSE_DENY_LISTED"
SCREENING_RULES = (RULE_DIRECT_IDENTIFIER, RULE_ETHICS_MISSING, RULE_PURPOSE_DENY_LISTED)

# Purposes the city's data never serves, whatever the committee thinks (matched as words
# in the lower-cased purpose).
DENY_LISTED_PURPOSES = (
    "marketing",
    "advertising",
    "insurance pricing",
    "premium setting",
    "underwriting",
    "credit scoring",
    "employment screening",
    "law enforcement",
)

MICRO = 1_000_000


class RequestState(IntEnum):
    """The numbers of consent.v1.ResearchRequestState."""

    UNDER_REVIEW = 1
    REJECTED_BY_SCREENING = 2
    APPROVED = 3
    REJECTED = 4


class OutputKind(IntEnum):
    """The numbers of consent.v1.ResearchOutputKind."""

    AGGREGATES = 1
    SYNTHETIC = 2


class Choice(IntEnum):
    """The numbers of consent.v1.VoteChoice."""

    APPROVE = 1
    REJECT = 2
    VETO = 3


@dataclass(frozen=True)
class Finding:
    """A screening rule a request broke, and what broke it (names only, never data)."""

    rule: str
    detail: str


@dataclass(frozen=True)
class Vote:
    """One committee member's vote."""

    member_id: str
    choice: Choice
    comment: str
    cast_time: datetime


@dataclass(frozen=True)
class Study:
    """What a researcher asks for (validated by the servicer)."""

    purpose: str
    protocol: str
    ethics_approval_reference: str
    code_system: str
    codes: tuple[str, ...]
    fields: tuple[str, ...]
    groupings: tuple[str, ...]
    output_kind: OutputKind
    period_start: datetime
    period_end: datetime
    epsilon_budget: float
    access_until: datetime


@dataclass(frozen=True)
class ResearchRequest:
    """A request as stored: the study, who asked, and what became of it."""

    request_id: str
    researcher_id: str
    idempotency_key: str
    study: Study
    state: RequestState
    create_time: datetime
    findings: tuple[Finding, ...] = ()
    votes: tuple[Vote, ...] = ()
    decision_reasons: tuple[str, ...] = ()
    decide_time: datetime | None = None

    @property
    def decided(self) -> bool:
        """True once screening or the committee has decided."""
        return self.state != RequestState.UNDER_REVIEW


@dataclass(frozen=True)
class ResearchGrant:
    """An approval's scoped, expiring permission; its id is the request's id."""

    grant_id: str
    researcher_id: str
    study: Study
    budget_micro: int
    spent_micro: int
    expire_time: datetime
    create_time: datetime
    spent_queries: frozenset[str] = field(default_factory=frozenset)

    @property
    def remaining_micro(self) -> int:
        """Budget not yet spent."""
        return self.budget_micro - self.spent_micro


@dataclass(frozen=True)
class Tally:
    """What the votes so far decide: None while the committee is still voting."""

    state: RequestState | None
    reasons: tuple[str, ...]


def screen(study: Study) -> tuple[Finding, ...]:
    """Every screening rule ``study`` breaks (empty: it goes to the committee)."""
    findings: list[Finding] = []
    asked = {name.lower() for name in study.fields}
    identifiers = sorted(asked & DIRECT_IDENTIFIERS)
    if identifiers:
        asked_for = "direct identifiers asked for: " + ", ".join(identifiers)
        findings.append(Finding(RULE_DIRECT_IDENTIFIER, asked_for))
    if not study.ethics_approval_reference.strip():
        findings.append(Finding(RULE_ETHICS_MISSING, "no ethics approval reference given"))
    purpose = " ".join(study.purpose.lower().split())
    for term in DENY_LISTED_PURPOSES:
        if term in purpose:
            findings.append(Finding(RULE_PURPOSE_DENY_LISTED, f"purpose is deny-listed: {term}"))
            break
    return tuple(findings)


def tally(votes: tuple[Vote, ...], *, quorum: int, veto_allowed: bool) -> Tally:
    """The committee's decision from ``votes`` under the configured quorum and veto rule."""
    vetoes = [vote for vote in votes if vote.choice == Choice.VETO]
    if veto_allowed and vetoes:
        return Tally(
            RequestState.REJECTED,
            tuple(f"vetoed by {vote.member_id}: {vote.comment}" for vote in vetoes),
        )
    if len(votes) < quorum:
        return Tally(None, ())
    approvals = sum(vote.choice == Choice.APPROVE for vote in votes)
    rejections = len(votes) - approvals
    summary = f"{approvals} for, {rejections} against (quorum {quorum})"
    comments = tuple(f"{vote.member_id}: {vote.comment}" for vote in votes if vote.comment.strip())
    if approvals > rejections:
        return Tally(RequestState.APPROVED, ("approved: " + summary, *comments))
    return Tally(RequestState.REJECTED, ("rejected: " + summary, *comments))


def grant_for(request: ResearchRequest, now: datetime) -> ResearchGrant:
    """The grant an approved request becomes."""
    return ResearchGrant(
        grant_id=request.request_id,
        researcher_id=request.researcher_id,
        study=request.study,
        budget_micro=to_micro(request.study.epsilon_budget),
        spent_micro=0,
        expire_time=request.study.access_until,
        create_time=now,
    )


def to_micro(epsilon: float) -> int:
    """Epsilon in whole micro-epsilons (rounded up: never spend less than asked)."""
    return -(-round(epsilon * MICRO * 1000) // 1000)


def from_micro(micro: int) -> float:
    """Micro-epsilons back to epsilon."""
    return micro / MICRO
