"""The gRPC edge of the data security committee (ADR 26): validation, proto <-> domain.

:class:`CommitteeEdge` holds consent.v1's research RPCs; :class:`ConsentServicer` inherits
them beside the grant RPCs. A request's fields are all checked before anything is
screened or stored; field names a request may ask for are the extract catalog's and the
direct identifiers (which screening then rejects, citing the rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.research import (
    DIRECT_IDENTIFIERS,
    EXTRACT_FIELDS,
    GRANT_NAME_RULE,
    REQUEST_NAME_RULE,
    parse_research_grant_name,
    parse_research_request_name,
    research_grant_name,
    research_request_name,
)
from healthbank.core.ids import is_ulid
from healthbank.rpc import ServiceError, Violations, require_principal
from services.consent.committee import (
    Choice,
    OutputKind,
    RequestState,
    ResearchGrant,
    ResearchRequest,
    Study,
    from_micro,
)
from services.consent.research_desk import ResearchDesk, ResearchNotFound, ResearchRefused

MAX_TEXT = 4000
MAX_CODES = 100
MAX_ACCESS = timedelta(days=2 * 366)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_KEY = re.compile(r"[\x21-\x7e]{1,128}")
_CODE = re.compile(r"[\x21-\x7e]{1,64}")


class CommitteeEdge:
    """consent.v1's committee RPCs over a :class:`ResearchDesk`."""

    _desk: ResearchDesk
    _now: Callable[[], datetime]
    _max_epsilon: float

    async def SubmitResearchRequest(
        self, request: consent_pb2.SubmitResearchRequestRequest, context: Any
    ) -> consent_pb2.ResearchRequest:
        """Screen and file a research request (idempotent by request_id)."""
        caller = require_principal()
        violations = Violations()
        if violations.require(request.request_id, "request_id"):
            violations.check(
                _KEY.fullmatch(request.request_id) is not None,
                "request_id",
                "must be 1-128 visible ASCII characters",
            )
        study = _study(request, self._now(), self._max_epsilon, violations)
        violations.raise_if_any()
        assert study is not None
        with _refusals():
            filed = await self._desk.submit(caller, study, request.request_id)
        return request_proto(filed)

    async def GetResearchRequest(
        self, request: consent_pb2.GetResearchRequestRequest, context: Any
    ) -> consent_pb2.ResearchRequest:
        """One research request."""
        caller = require_principal()
        request_id = _named(request.name, "name", parse_research_request_name, REQUEST_NAME_RULE)
        with _refusals():
            return request_proto(await self._desk.request(caller, request_id))

    async def ListResearchRequests(
        self, request: consent_pb2.ListResearchRequestsRequest, context: Any
    ) -> consent_pb2.ListResearchRequestsResponse:
        """Research requests, newest first."""
        caller = require_principal()
        violations = Violations()
        violations.check(request.page_size >= 0, "page_size", "must not be negative")
        violations.check(
            not request.page_token or is_ulid(request.page_token),
            "page_token",
            "must be a next_page_token from a previous response",
        )
        violations.check(
            request.state == 0 or request.state in RequestState._value2member_map_,
            "state",
            "must be a known research request state",
        )
        violations.raise_if_any()
        state = RequestState(request.state) if request.state else None
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        found, last = await self._desk.requests(
            caller, state, page_size, request.page_token or None
        )
        return consent_pb2.ListResearchRequestsResponse(
            research_requests=[request_proto(one) for one in found],
            next_page_token=last or "",
        )

    async def CastCommitteeVote(
        self, request: consent_pb2.CastCommitteeVoteRequest, context: Any
    ) -> consent_pb2.ResearchRequest:
        """A committee member's vote; decides the request when the tally does."""
        caller = require_principal()
        violations = Violations()
        request_id = violations.parse(
            request.name, "name", parse_research_request_name, REQUEST_NAME_RULE
        )
        violations.check(
            request.choice in Choice._value2member_map_, "choice", "must be APPROVE, REJECT or VETO"
        )
        comment = request.comment.strip()
        violations.check(len(comment) <= MAX_TEXT, "comment", f"must be at most {MAX_TEXT} chars")
        if request.choice in (Choice.REJECT, Choice.VETO):
            violations.require(comment, "comment")
        violations.raise_if_any()
        assert request_id is not None
        with _refusals():
            decided = await self._desk.vote(caller, request_id, Choice(request.choice), comment)
        return request_proto(decided)

    async def GetResearchGrant(
        self, request: consent_pb2.GetResearchGrantRequest, context: Any
    ) -> consent_pb2.ResearchGrant:
        """A research grant with its budget."""
        caller = require_principal()
        grant_id = _named(request.name, "name", parse_research_grant_name, GRANT_NAME_RULE)
        with _refusals():
            return grant_proto(await self._desk.grant(caller, grant_id))

    async def SpendPrivacyBudget(
        self, request: consent_pb2.SpendPrivacyBudgetRequest, context: Any
    ) -> consent_pb2.SpendPrivacyBudgetResponse:
        """Spend epsilon of a grant's budget, once per query id."""
        caller = require_principal()
        violations = Violations()
        grant_id = violations.parse(
            request.grant_name, "grant_name", parse_research_grant_name, GRANT_NAME_RULE
        )
        violations.check(
            0 < request.epsilon <= self._max_epsilon,
            "epsilon",
            f"must be more than 0 and at most {self._max_epsilon:g}",
        )
        if violations.require(request.query_id, "query_id"):
            violations.check(is_ulid(request.query_id), "query_id", "must be a ULID")
        violations.raise_if_any()
        assert grant_id is not None
        with _refusals():
            grant = await self._desk.spend(caller, grant_id, request.epsilon, request.query_id)
        return consent_pb2.SpendPrivacyBudgetResponse(
            epsilon_spent=from_micro(grant.spent_micro),
            epsilon_remaining=from_micro(grant.remaining_micro),
        )


@contextmanager
def _refusals() -> Iterator[None]:
    """The desk's refusals as statuses the caller can act on (never retryable)."""
    try:
        yield
    except ResearchNotFound:
        raise ServiceError.not_found(
            "no such research request or grant", reason="RESEARCH_NOT_FOUND"
        ) from None
    except ResearchRefused as refused:
        if refused.reason == "NOT_REQUEST_OWNER":
            raise ServiceError.permission_denied(refused.message, reason=refused.reason) from None
        if refused.reason == "VETO_NOT_ALLOWED":
            raise ServiceError.invalid_argument([("choice", refused.message)]) from None
        raise ServiceError.failed_precondition(refused.message, reason=refused.reason) from None


def _named(name: str, field: str, parse: Callable[[str], str | None], rule: str) -> str:
    violations = Violations()
    parsed = None
    if violations.require(name, field):
        parsed = parse(name)
        violations.check(parsed is not None, field, rule)
    violations.raise_if_any()
    assert parsed is not None
    return parsed


def _study(
    request: consent_pb2.SubmitResearchRequestRequest,
    now: datetime,
    max_epsilon: float,
    violations: Violations,
) -> Study | None:
    """The study asked for, recording every problem with it."""
    if not request.HasField("research_request"):
        violations.add("research_request", "is required")
        return None
    asked = request.research_request
    prefix = "research_request."
    for field in ("purpose", "protocol"):
        value = getattr(asked, field).strip()
        if violations.require(value, prefix + field):
            violations.check(len(value) <= MAX_TEXT, prefix + field, f"at most {MAX_TEXT} chars")
    violations.check(
        len(asked.ethics_approval_reference) <= 200,
        prefix + "ethics_approval_reference",
        "must be at most 200 characters",
    )
    cohort = asked.cohort
    violations.require(cohort.code_system, prefix + "cohort.code_system")
    violations.check(
        0 < len(cohort.codes) <= MAX_CODES and all(_CODE.fullmatch(code) for code in cohort.codes),
        prefix + "cohort.codes",
        f"must list 1-{MAX_CODES} codes (visible ASCII, at most 64 characters)",
    )
    known = set(EXTRACT_FIELDS) | DIRECT_IDENTIFIERS
    violations.check(
        len(asked.fields) > 0 and all(field.lower() in known for field in asked.fields),
        prefix + "fields",
        "must list extract fields: " + ", ".join(EXTRACT_FIELDS),
    )
    violations.check(
        all(
            grouping in asked.fields
            and grouping in EXTRACT_FIELDS
            and EXTRACT_FIELDS[grouping].dimension
            for grouping in asked.groupings
        ),
        prefix + "groupings",
        "must be dimension fields also listed in fields",
    )
    violations.check(
        asked.output_kind in OutputKind._value2member_map_,
        prefix + "output_kind",
        "must be AGGREGATES or SYNTHETIC",
    )
    start = _time(asked, "period_start", prefix, violations)
    end = _time(asked, "period_end", prefix, violations)
    if start is not None and end is not None:
        violations.check(start < end, prefix + "period_end", "must be after period_start")
    access_until = _time(asked, "access_until", prefix, violations)
    if access_until is not None:
        violations.check(
            now < access_until <= now + MAX_ACCESS,
            prefix + "access_until",
            "must be in the future and at most two years away",
        )
    violations.check(
        0 < asked.epsilon_budget <= max_epsilon,
        prefix + "epsilon_budget",
        f"must be more than 0 and at most {max_epsilon:g}",
    )
    if violations or start is None or end is None or access_until is None:
        return None
    return Study(
        purpose=asked.purpose.strip(),
        protocol=asked.protocol.strip(),
        ethics_approval_reference=asked.ethics_approval_reference.strip(),
        code_system=cohort.code_system,
        codes=tuple(cohort.codes),
        fields=tuple(field.lower() for field in asked.fields),
        groupings=tuple(asked.groupings),
        output_kind=OutputKind(asked.output_kind),
        period_start=start,
        period_end=end,
        epsilon_budget=asked.epsilon_budget,
        access_until=access_until,
    )


def _time(message: Any, field: str, prefix: str, violations: Violations) -> datetime | None:
    if not message.HasField(field):
        violations.add(prefix + field, "is required")
        return None
    try:
        moment: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        violations.add(prefix + field, "must be a valid timestamp")
        return None
    return moment


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def _study_fields(study: Study) -> dict[str, Any]:
    return {
        "cohort": consent_pb2.CohortDefinition(code_system=study.code_system, codes=study.codes),
        "fields": study.fields,
        "groupings": study.groupings,
        "output_kind": int(study.output_kind),
        "period_start": _ts(study.period_start),
        "period_end": _ts(study.period_end),
    }


def request_proto(request: ResearchRequest) -> consent_pb2.ResearchRequest:
    """A stored request as consent.v1.ResearchRequest."""
    study = request.study
    message = consent_pb2.ResearchRequest(
        name=research_request_name(request.request_id),
        researcher_id=request.researcher_id,
        purpose=study.purpose,
        protocol=study.protocol,
        ethics_approval_reference=study.ethics_approval_reference,
        epsilon_budget=study.epsilon_budget,
        access_until=_ts(study.access_until),
        state=int(request.state),  # type: ignore[arg-type]
        screening_findings=[
            consent_pb2.ScreeningFinding(rule=finding.rule, detail=finding.detail)
            for finding in request.findings
        ],
        votes=[
            consent_pb2.CommitteeVote(
                member_id=vote.member_id,
                choice=int(vote.choice),  # type: ignore[arg-type]
                comment=vote.comment,
                cast_time=_ts(vote.cast_time),
            )
            for vote in request.votes
        ],
        decision_reasons=request.decision_reasons,
        grant_name=(
            research_grant_name(request.request_id)
            if request.state == RequestState.APPROVED
            else ""
        ),
        create_time=_ts(request.create_time),
        **_study_fields(study),
    )
    if request.decide_time is not None:
        message.decide_time.CopyFrom(_ts(request.decide_time))
    return message


def grant_proto(grant: ResearchGrant) -> consent_pb2.ResearchGrant:
    """A grant as consent.v1.ResearchGrant."""
    return consent_pb2.ResearchGrant(
        name=research_grant_name(grant.grant_id),
        request_name=research_request_name(grant.grant_id),
        researcher_id=grant.researcher_id,
        epsilon_budget=from_micro(grant.budget_micro),
        epsilon_spent=from_micro(grant.spent_micro),
        expire_time=_ts(grant.expire_time),
        create_time=_ts(grant.create_time),
        **_study_fields(grant.study),
    )
