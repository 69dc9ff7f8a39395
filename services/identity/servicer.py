"""The gRPC edge of the identity service: validation, proto <-> domain, status codes.

National ID numbers and record numbers are validated here and handed to the index; no
error message, field violation or log line ever contains one (violations use
``InvalidNationalId.reason``). The caller of a read is the authenticated principal, whom
the index records in the audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from healthbank.contracts.names import PERSON_NAME_RULE, parse_person_name, person_name
from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from healthbank.crypto import KeyProviderUnavailable
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import ServiceError, Violations, require_principal
from services.identity.domain import (
    Demographics,
    MatchMethod,
    MergeRecord,
    MergeRefused,
    MrnLinkedToOtherPerson,
    PersonNotFound,
    PriorRecordOutcome,
    ReviewItem,
    demographics_problems,
    hospital_id_problem,
    mrn_problem,
)
from services.identity.index import BatchRegistration, MasterPatientIndex

_T = TypeVar("_T")

MAX_BATCH_REQUESTS = 1000
# An ADT^A40's MRG-1 lists a handful of prior record numbers, never hundreds.
MAX_PRIOR_MRNS = 20
# Chains of one batch resolved at once (each request is a few store round trips). Since the
# registrations that could decide each other chain (ADR 54), more at once costs no recall.
BATCH_CONCURRENCY = 48

_MATCH_METHODS = {
    MatchMethod.NATIONAL_ID: identity_pb2.MATCH_METHOD_NATIONAL_ID,
    MatchMethod.HOSPITAL_MRN: identity_pb2.MATCH_METHOD_HOSPITAL_MRN,
    MatchMethod.CREATED: identity_pb2.MATCH_METHOD_CREATED,
    MatchMethod.DEMOGRAPHICS: identity_pb2.MATCH_METHOD_DEMOGRAPHICS,
}
_PRIOR_OUTCOMES = {
    PriorRecordOutcome.ALREADY_SAME_PERSON: identity_pb2.PRIOR_RECORD_OUTCOME_ALREADY_SAME_PERSON,
    PriorRecordOutcome.LINKED: identity_pb2.PRIOR_RECORD_OUTCOME_LINKED,
    PriorRecordOutcome.MERGED: identity_pb2.PRIOR_RECORD_OUTCOME_MERGED,
    PriorRecordOutcome.REVIEW: identity_pb2.PRIOR_RECORD_OUTCOME_REVIEW,
}


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """identity.v1.IdentityService over a :class:`MasterPatientIndex`."""

    def __init__(self, index: MasterPatientIndex, now: Callable[[], datetime]) -> None:
        """Serve ``index``; ``now`` bounds national ID birth dates."""
        self._index = index
        self._now = now

    async def Resolve(
        self, request: identity_pb2.ResolveRequest, context: Any
    ) -> identity_pb2.ResolveResponse:
        """Find or create the person behind a hospital patient and link the MRN."""
        require_principal()
        return await self._resolve(request)

    async def ResolveBatch(
        self, request: identity_pb2.ResolveBatchRequest, context: Any
    ) -> identity_pb2.ResolveBatchResponse:
        """Resolve each request; a refusal is that request's result, an outage the call's."""
        require_principal()
        count = len(request.requests)
        violations = Violations()
        violations.check(count > 0, "requests", "is required")
        violations.check(
            count <= MAX_BATCH_REQUESTS, "requests", f"at most {MAX_BATCH_REQUESTS} per call"
        )
        violations.raise_if_any()
        # Requests that could decide each other's person (one MRN's; registrations sharing
        # a blocking key) run in request order; the other chains run concurrently.
        chains = await self._index.resolution_chains(
            [
                BatchRegistration(
                    item.hospital_id,
                    item.mrn,
                    has_national_id=bool(item.national_id),
                    demographics=(
                        _demographics(item.demographics) if item.HasField("demographics") else None
                    ),
                )
                for item in request.requests
            ]
        )
        results: list[identity_pb2.ResolveResult] = [identity_pb2.ResolveResult()] * count
        slots = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def resolve_in_order(positions: list[int]) -> None:
            async with slots:
                for position in positions:
                    results[position] = await self._result(request.requests[position])

        # A task group: the first outage cancels the rest, and the call fails as a whole,
        # with that outage's own error (a group unraised reaches the caller as INTERNAL).
        try:
            async with asyncio.TaskGroup() as group:
                for positions in chains:
                    group.create_task(resolve_in_order(positions))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return identity_pb2.ResolveBatchResponse(results=results)

    async def _result(self, item: identity_pb2.ResolveRequest) -> identity_pb2.ResolveResult:
        """One request's result; a refusal retrying cannot cure is the result, not raised."""
        try:
            return identity_pb2.ResolveResult(resolution=await self._resolve(item))
        except ServiceError as refused:
            if refused.retryable:
                raise
            return identity_pb2.ResolveResult(failure=_failure(refused))

    async def _resolve(self, request: identity_pb2.ResolveRequest) -> identity_pb2.ResolveResponse:
        """Resolve's work for one request; raises ServiceError when it refuses."""
        violations = Violations()
        hospital_problem = hospital_id_problem(request.hospital_id)
        if hospital_problem is not None:
            violations.add("hospital_id", hospital_problem)
        problem = mrn_problem(request.mrn)
        if problem is not None:
            violations.add("mrn", problem)
        national_id = None
        if request.national_id:
            national_id = self._national_id(request.national_id, violations)
        demographics = None
        if request.HasField("demographics"):
            demographics = _demographics(request.demographics)
            for field, rule in demographics_problems(demographics):
                violations.add(f"demographics.{field}", rule)
        _check_prior_mrns(violations, request.prior_mrns, request.mrn)
        violations.raise_if_any()
        try:
            resolution = await _with_keys(
                self._index.resolve(request.hospital_id, request.mrn, national_id, demographics)
            )
        except MrnLinkedToOtherPerson:
            raise ServiceError.failed_precondition(
                "the hospital record number and the national ID belong to different persons",
                reason="MRN_LINKED_TO_OTHER_PERSON",
            ) from None
        prior_outcomes = []
        if request.prior_mrns:
            prior_outcomes = await _with_keys(
                self._index.merge_prior_records(
                    require_principal(),
                    request.hospital_id,
                    resolution.person_token,
                    list(request.prior_mrns),
                )
            )
        return identity_pb2.ResolveResponse(
            person_token=resolution.person_token,
            match_method=_MATCH_METHODS[resolution.match_method],
            review_pending=resolution.review_pending,
            prior_record_outcomes=[_PRIOR_OUTCOMES[outcome] for outcome in prior_outcomes],
        )

    async def LookupByNationalId(
        self, request: identity_pb2.LookupByNationalIdRequest, context: Any
    ) -> identity_pb2.LookupByNationalIdResponse:
        """The person token of a national ID; NOT_FOUND when nobody has it."""
        caller = require_principal()
        violations = Violations()
        national_id = None
        if violations.require(request.national_id, "national_id"):
            national_id = self._national_id(request.national_id, violations)
        violations.raise_if_any()
        assert national_id is not None
        try:
            found = await _with_keys(self._index.lookup(caller, national_id))
        except PersonNotFound:
            raise _person_not_found("no person with that national ID is known") from None
        return identity_pb2.LookupByNationalIdResponse(
            person_token=found.person_token, merged_person_tokens=found.merged_tokens
        )

    async def ListMergedPersons(
        self, request: identity_pb2.ListMergedPersonsRequest, context: Any
    ) -> identity_pb2.ListMergedPersonsResponse:
        """The persons merged into one (none for an unknown or unmerged person)."""
        require_principal()
        violations = Violations()
        person_token = violations.parse(
            request.parent, "parent", parse_person_name, PERSON_NAME_RULE
        )
        violations.raise_if_any()
        assert person_token is not None
        merged = await self._index.merged_into(person_token)
        return identity_pb2.ListMergedPersonsResponse(merged_person_tokens=merged)

    async def GetPerson(
        self, request: identity_pb2.GetPersonRequest, context: Any
    ) -> identity_pb2.Person:
        """The hospitals linked to a person (no record numbers, no demographics)."""
        caller = require_principal()
        violations = Violations()
        person_token = violations.parse(request.name, "name", parse_person_name, PERSON_NAME_RULE)
        violations.raise_if_any()
        assert person_token is not None
        try:
            links = await self._index.links_of(caller, person_token)
        except PersonNotFound:
            raise _person_not_found("person not found") from None
        return identity_pb2.Person(
            name=person_name(person_token),
            person_token=person_token,
            # Record numbers are stored only as keyed hashes: the hospitals are what is known.
            links=[identity_pb2.HospitalLink(hospital_id=link.hospital_id) for link in links],
        )

    async def ListMatchReviews(
        self, request: identity_pb2.ListMatchReviewsRequest, context: Any
    ) -> identity_pb2.ListMatchReviewsResponse:
        """The match review queue (pending only unless asked)."""
        require_principal()
        items = await self._index.reviews(request.include_decided)
        return identity_pb2.ListMatchReviewsResponse(reviews=[_review(i) for i in items])

    async def DecideMatchReview(
        self, request: identity_pb2.DecideMatchReviewRequest, context: Any
    ) -> identity_pb2.MatchReview:
        """Accept (merge) or reject a queued review, audited as the caller's decision."""
        caller = require_principal()
        violations = Violations()
        violations.require(request.review_id, "review_id")
        violations.raise_if_any()
        try:
            item = await self._index.decide_review(caller, request.review_id, request.accept)
        except PersonNotFound:
            raise ServiceError.not_found("no such review", reason="REVIEW_NOT_FOUND") from None
        except MergeRefused as refused:
            raise _merge_refused(refused) from None
        return _review(item)

    async def MergePersons(
        self, request: identity_pb2.MergePersonsRequest, context: Any
    ) -> identity_pb2.Merge:
        """Merge one person into another, audited as the caller's change."""
        caller = require_principal()
        violations = Violations()
        survivor, absorbed = (
            violations.parse(getattr(request, field), field, parse_person_name, PERSON_NAME_RULE)
            for field in ("survivor", "absorbed")
        )
        violations.raise_if_any()
        assert survivor is not None and absorbed is not None
        try:
            merge = await self._index.merge(caller, survivor, absorbed)
        except PersonNotFound:
            raise _person_not_found("person not found") from None
        except MergeRefused as refused:
            raise _merge_refused(refused) from None
        return _merge(merge)

    async def UnmergePersons(
        self, request: identity_pb2.UnmergePersonsRequest, context: Any
    ) -> identity_pb2.Merge:
        """Undo a merge exactly, audited as the caller's change."""
        caller = require_principal()
        violations = Violations()
        violations.require(request.merge_id, "merge_id")
        violations.raise_if_any()
        try:
            merge = await self._index.unmerge(caller, request.merge_id)
        except PersonNotFound:
            raise ServiceError.not_found("no such merge", reason="MERGE_NOT_FOUND") from None
        except MergeRefused as refused:
            raise _merge_refused(refused) from None
        return _merge(merge)

    def _national_id(self, raw: str, violations: Violations) -> str | None:
        """The normalized national ID, or None after recording why it is invalid."""
        try:
            return validate_national_id(raw, today=self._now().date())
        except InvalidNationalId as invalid:
            # The reason says what is wrong without repeating the number.
            violations.add("national_id", invalid.reason)
            return None


def _check_prior_mrns(violations: Violations, prior_mrns: Sequence[str], mrn: str) -> None:
    violations.check(
        len(prior_mrns) <= MAX_PRIOR_MRNS, "prior_mrns", f"at most {MAX_PRIOR_MRNS} per request"
    )
    for index, prior_mrn in enumerate(prior_mrns[:MAX_PRIOR_MRNS]):
        problem = mrn_problem(prior_mrn)
        if problem is not None:
            violations.add(f"prior_mrns[{index}]", problem)
        elif prior_mrn == mrn:
            violations.add(f"prior_mrns[{index}]", "must differ from mrn (the surviving one)")


def _failure(refused: ServiceError) -> identity_pb2.ResolveFailure:
    return identity_pb2.ResolveFailure(
        code=refused.code.name,
        reason=refused.reason,
        message=refused.message,
        field_violations=[
            identity_pb2.ResolveFieldViolation(field=field, description=description)
            for field, description in refused.field_violations
        ],
    )


def _demographics(message: identity_pb2.Demographics) -> Demographics:
    return Demographics(
        family_name=message.family_name,
        given_name=message.given_name,
        birth_date=message.birth_date,
        sex=message.sex,
        phone=message.phone,
        address=message.address,
    )


def _review(item: ReviewItem) -> identity_pb2.MatchReview:
    return identity_pb2.MatchReview(
        review_id=item.review_id,
        person_token=item.person_token,
        candidate_token=item.candidate_token,
        probability=item.probability,
        field_levels=item.levels,
        status=item.status.value,
        merge_id=item.merge_id,
    )


def _merge(merge: MergeRecord) -> identity_pb2.Merge:
    return identity_pb2.Merge(
        merge_id=merge.merge_id,
        survivor_token=merge.survivor_token,
        absorbed_token=merge.absorbed_token,
        moved_links=len(merge.moved_links),
        moved_national_id=merge.national_id_hash is not None,
        undone=merge.undone,
    )


def _merge_refused(refused: MergeRefused) -> ServiceError:
    return ServiceError.failed_precondition(refused.message, reason=refused.reason)


def _person_not_found(message: str) -> ServiceError:
    return ServiceError.not_found(message, reason="PERSON_NOT_FOUND")


async def _with_keys(operation: Awaitable[_T]) -> _T:
    """Await ``operation``, reporting an unreachable key provider as retryable UNAVAILABLE."""
    try:
        return await operation
    except KeyProviderUnavailable:
        raise ServiceError.unavailable(
            "the key provider is unavailable", reason="KEY_PROVIDER_UNAVAILABLE"
        ) from None
