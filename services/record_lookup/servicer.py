"""The RecordLookupService gRPC edge: validation, the consent → audit → read flow, protos.

Every read follows the same order: ask consent, write the audit leaf, and only then read
and decrypt. If the audit log cannot record the access, the read is refused before anything
is returned, so there is never a disclosure without a ledger entry.

Calls to identity, consent (Check), audit and archive carry this service's own token (the
ClientFactory's): the end user travels in the request (``CheckRequest.accessor``,
``AccessEvent.actor``). The one exception is ``consent.BreakGlass``, which must be opened by
the emergency actor themself (consent records who broke the glass, and only that actor's
later Checks are covered by the session), so it is called with the inbound caller's own
token forwarded explicitly (``caller_metadata()``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import timestamp_pb2

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from healthbank.contracts.principal import Principal, PrincipalKind, principal_to_proto
from healthbank.core.logs import request_id_var
from healthbank.crypto import Sealer, TamperedPayload
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.records import RecordStore, StoredRecord, fact_aad, payload_aad
from healthbank.rpc import (
    AUTHORIZATION_KEY,
    REQUEST_ID_KEY,
    ClientFactory,
    ServiceError,
    Violations,
    caller_metadata,
    error_details,
    inbound_deadline,
    require_principal,
)
from healthbank.rpc.gate import AccessAuditor, open_sealed
from healthbank.storage.cache import Cache, emergency_summary_key
from services.record_lookup import domain

_log = logging.getLogger(__name__)

SERVICE = "record-lookup"

# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799

# google.rpc.ErrorInfo.reason shape.
_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$")

_DEGRADED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class RecordLookupServicer(record_lookup_pb2_grpc.RecordLookupServiceServicer):
    """Serves GetHistory and GetEmergencySummary.

    Args:
        records: the shared hot record store.
        sealer: opens sealed payloads and facts, seals cached summaries.
        cache: emergency summaries (sealed) per person.
        clients: stubs for consent, audit, archive and identity, carrying this service's
            own credentials (``service_client_factory``).
        service_token: mints this service's own token for the archive stream (see
            :func:`_streaming_call_options`).
        cache_ttl_seconds: how long a computed summary is reused (0: never).
        now: the clock (UTC).
    """

    def __init__(
        self,
        *,
        records: RecordStore,
        sealer: Sealer,
        cache: Cache,
        clients: ClientFactory,
        service_token: Callable[[], str],
        cache_ttl_seconds: float,
        now: Callable[[], datetime],
    ) -> None:
        self._records = records
        self._sealer = sealer
        self._cache = cache
        self._clients = clients
        self._service_token = service_token
        self._cache_ttl_seconds = cache_ttl_seconds
        self._now = now
        self._auditor = AccessAuditor(clients, SERVICE, now)

    # --- GetHistory ------------------------------------------------------------------------

    async def GetHistory(
        self, request: record_lookup_pb2.GetHistoryRequest, context: object
    ) -> AsyncIterator[record_lookup_pb2.HistoryItem]:
        """Stream a person's records, oldest first, after consent and audit."""
        principal = require_principal(
            PrincipalKind.CLINICIAN, PrincipalKind.PATIENT, PrincipalKind.EMERGENCY
        )
        person_token, start, end = _validate_history(request)
        categories = list(request.categories)

        decision = await self._check_consent(principal, person_token, categories)
        if decision.decision != consent_pb2.DECISION_PERMIT:
            await self._auditor.record_denial(principal, person_token, decision.basis)
            raise ServiceError.permission_denied(
                "consent does not permit this read", reason=_reason(decision.basis)
            )
        resource_names = [domain.person_name(person_token)]
        if decision.authority_name:
            resource_names.append(decision.authority_name)
        await self._auditor.record(
            principal,
            audit_pb2.ACTION_READ_HISTORY,
            person_token,
            resource_names,
            basis=decision.basis,
        )

        readable = domain.readable_categories(categories, decision.permitted_categories)
        hot = await self._records.list_records(
            person_token, categories=sorted(readable), start=start, end=end
        )
        cold = await self._fetch_cold(person_token, request.effective)
        # Everything is collected before the first item goes out: a failing archive must not
        # leave the caller with a silently truncated history.
        for record, is_cold in domain.merge_history(hot, cold, readable):
            payload = await open_sealed(
                self._sealer, record.sealed_payload, payload_aad(person_token, record.record_id)
            )
            yield record_lookup_pb2.HistoryItem(
                record=to_record_proto(
                    record,
                    tier=common_pb2.TIER_COLD if is_cold else common_pb2.TIER_HOT,
                    fhir_json=payload,
                )
            )

    async def _fetch_cold(
        self, person_token: str, effective: common_pb2.Interval
    ) -> list[StoredRecord]:
        stub = archive_pb2_grpc.ArchiveServiceStub(self._clients.channel("archive"))
        request = archive_pb2.FetchRecordsRequest(person_token=person_token)
        request.effective.CopyFrom(effective)
        cold: list[StoredRecord] = []
        try:
            async for item in stub.FetchRecords(
                request, **_streaming_call_options(self._service_token)
            ):
                record = from_cold_proto(item)
                if record.person_token != person_token:
                    # Never hand out another person's record, whatever the archive says.
                    _log.error("archive returned a record of another person; dropped")
                    continue
                cold.append(record)
        except grpc.aio.AioRpcError as error:
            raise _dependency_error(error, "archive") from None
        return cold

    # --- GetEmergencySummary ---------------------------------------------------------------

    async def GetEmergencySummary(
        self, request: record_lookup_pb2.GetEmergencySummaryRequest, context: object
    ) -> record_lookup_pb2.EmergencySummary:
        """Break the glass for a national ID and return the traffic light."""
        principal = require_principal(PrincipalKind.EMERGENCY)
        national_id = _validate_emergency(request, self._now())

        person_token = await self._lookup_person(national_id)
        session = await self._break_glass(person_token, request.justification)
        audit_leaf = await self._auditor.record(
            principal,
            audit_pb2.ACTION_READ_EMERGENCY,
            person_token,
            [session.name, domain.person_name(person_token)],
            basis="BREAK_GLASS",
            flagged_for_review=True,
        )
        summary = await self._summary(person_token)
        summary.person_token = person_token
        summary.audit_leaf_index = audit_leaf
        summary.break_glass_name = session.name
        return summary

    async def _lookup_person(self, national_id: str) -> str:
        stub = identity_pb2_grpc.IdentityServiceStub(self._clients.channel("identity"))
        try:
            response = await stub.LookupByNationalId(
                identity_pb2.LookupByNationalIdRequest(national_id=national_id)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise ServiceError.not_found(
                    "no person is known with this national ID", reason="PERSON_NOT_FOUND"
                ) from None
            raise _dependency_error(error, "identity") from None
        return str(response.person_token)

    async def _break_glass(
        self, person_token: str, justification: str
    ) -> consent_pb2.BreakGlassResponse:
        stub = consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))
        try:
            return await stub.BreakGlass(
                consent_pb2.BreakGlassRequest(
                    person_token=person_token, justification=justification
                ),
                metadata=_caller_credentials(),
            )
        except grpc.aio.AioRpcError as error:
            raise _dependency_error(error, "consent") from None

    async def _summary(self, person_token: str) -> record_lookup_pb2.EmergencySummary:
        """The person's summary from the cache, or computed from the sealed facts."""
        key = emergency_summary_key(person_token)
        aad = domain.summary_aad(person_token)
        cached = await self._cache.get(key)
        if cached is not None:
            try:
                summary = record_lookup_pb2.EmergencySummary()
                summary.ParseFromString(await self._sealer.open(cached, aad))
                return summary
            except TamperedPayload:
                _log.warning("cached emergency summary failed to open; recomputing")
                await self._cache.delete(key)
        summary = await self._compute_summary(person_token)
        if self._cache_ttl_seconds > 0:
            sealed = await self._sealer.seal(summary.SerializeToString(), aad)
            await self._cache.set(key, sealed, self._cache_ttl_seconds)
        return summary

    async def _compute_summary(self, person_token: str) -> record_lookup_pb2.EmergencySummary:
        facts: list[domain.SummaryFact] = []
        for stored in await self._records.list_facts(person_token):
            document = await open_sealed(
                self._sealer, stored.sealed_fact, fact_aad(person_token, stored.record_id)
            )
            try:
                facts.append(domain.parse_fact(document, stored.category))
            except domain.MalformedFact:
                # A summary that silently drops a fact could show green over an anaphylaxis.
                _log.error("emergency fact of record %s is malformed", stored.record_id)
                raise ServiceError(
                    grpc.StatusCode.DATA_LOSS,
                    "an emergency fact could not be read",
                    reason="FACT_UNREADABLE",
                ) from None
        summary = domain.summarize(facts)
        message = record_lookup_pb2.EmergencySummary(
            light=cast(record_lookup_pb2.Light, int(summary.light.light)),
            light_reason=summary.light.reason,
            allergies=[_fact_proto(fact) for fact in summary.allergies],
            surgeries=[_fact_proto(fact) for fact in summary.surgeries],
            conditions=[_fact_proto(fact) for fact in summary.conditions],
        )
        message.generate_time.FromDatetime(self._now())
        return message

    # --- consent, audit, keys ----------------------------------------------------------------

    async def _check_consent(
        self, principal: Principal, person_token: str, categories: Sequence[int]
    ) -> consent_pb2.CheckResponse:
        stub = consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))
        try:
            response: consent_pb2.CheckResponse = await stub.Check(
                consent_pb2.CheckRequest(
                    person_token=person_token,
                    accessor=principal_to_proto(principal),
                    categories=cast(list[common_pb2.RecordCategory], list(categories)),
                )
            )
        except grpc.aio.AioRpcError as error:
            raise _dependency_error(error, "consent") from None
        return response


# Bound for the archive stream when the inbound call has no deadline of its own.
_STREAM_TIMEOUT_SECONDS = 30.0


def _streaming_call_options(service_token: Callable[[], str]) -> dict[str, Any]:
    """Credentials, request id and deadline for a server-streaming call, set by hand.

    grpc.aio registers a client interceptor for the first call type it implements only
    (``Channel.__init__`` is an if/elif chain), so the ClientFactory's interceptor, which
    implements all four, never sees streaming calls. Until it registers one interceptor per
    call type, streaming calls carry what it would have added themselves; once it does,
    it leaves metadata that is already present alone.
    """
    metadata = [(AUTHORIZATION_KEY, f"Bearer {service_token()}")]
    request_id = request_id_var.get()
    if request_id:
        metadata.append((REQUEST_ID_KEY, request_id))
    deadline = inbound_deadline.get()
    timeout = _STREAM_TIMEOUT_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
    return {"metadata": tuple(metadata), "timeout": timeout}


def _caller_credentials() -> tuple[tuple[str, str], ...]:
    metadata = caller_metadata()
    if not metadata:
        raise ServiceError.unauthenticated("credentials required", "CREDENTIALS_REQUIRED")
    return metadata


# --- validation -----------------------------------------------------------------------------


def _validate_history(
    request: record_lookup_pb2.GetHistoryRequest,
) -> tuple[str, datetime | None, datetime | None]:
    violations = Violations()
    person_token = _check_parent(violations, request.parent, "parent")
    for index, category in enumerate(request.categories):
        violations.check(
            category in domain.KNOWN_CATEGORIES,
            f"categories[{index}]",
            "must be a known record category",
        )
    effective = request.effective if request.HasField("effective") else None
    start, end = _check_interval(violations, effective, "effective")
    violations.raise_if_any()
    assert person_token is not None
    return person_token, start, end


def _check_parent(violations: Violations, parent: str, field: str) -> str | None:
    if not violations.require(parent, field):
        return None
    token = domain.parse_person_name(parent)
    violations.check(
        token is not None, field, "must be persons/{person_token} (64 lowercase hex digits)"
    )
    return token


def _check_interval(
    violations: Violations, interval: common_pb2.Interval | None, field: str
) -> tuple[datetime | None, datetime | None]:
    """Validate an optional ``Interval`` field; returns its (start, end), None where open."""
    if interval is None:
        return None, None
    start = _timestamp(violations, interval, "start", f"{field}.start")
    end = _timestamp(violations, interval, "end", f"{field}.end")
    if start is not None and end is not None:
        violations.check(start < end, f"{field}.end", f"must be after {field}.start")
    return start, end


def _timestamp(
    violations: Violations, interval: common_pb2.Interval, name: str, field: str
) -> datetime | None:
    if not interval.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(interval, name)
    valid = _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000
    if not violations.check(valid, field, "must be a valid timestamp"):
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def _validate_emergency(
    request: record_lookup_pb2.GetEmergencySummaryRequest, now: datetime
) -> str:
    violations = Violations()
    national_id = ""
    if violations.require(request.national_id, "national_id"):
        try:
            national_id = validate_national_id(request.national_id, today=now.date())
        except InvalidNationalId as error:
            # The reason describes the rule that failed, never the number.
            violations.add("national_id", error.reason)
    justification = request.justification.strip()
    if violations.require(justification, "justification"):
        violations.check(
            len(justification) >= domain.MIN_JUSTIFICATION_LENGTH,
            "justification",
            f"must be at least {domain.MIN_JUSTIFICATION_LENGTH} characters",
        )
    violations.raise_if_any()
    return national_id


# --- conversions ----------------------------------------------------------------------------


def to_record_proto(record: StoredRecord, *, tier: int, fhir_json: bytes) -> common_pb2.Record:
    """The canonical record as the API shows it (the one StoredRecord → Record conversion)."""
    message = common_pb2.Record(
        name=record.name,
        record_id=record.record_id,
        person_token=record.person_token,
        source_hospital=record.source_hospital,
        source=common_pb2.RecordSource(
            format=record.source_format,  # type: ignore[arg-type]
            message_id=record.message_id,
            version=record.source_version,
            content_hash=record.content_hash,
        ),
        category=record.category,  # type: ignore[arg-type]
        code=common_pb2.Code(
            system=record.code_system, code=record.code, display=record.code_display
        ),
        status=record.status,
        tier=tier,  # type: ignore[arg-type]
        fhir_json=fhir_json,
        blob_name=record.blob_name,
    )
    message.effective_time.FromDatetime(record.effective_time)
    return message


def from_cold_proto(item: archive_pb2.FetchRecordsResponse) -> StoredRecord:
    """A cold record from the archive as a StoredRecord (payload still sealed)."""
    record = item.record
    return StoredRecord(
        record_id=record.record_id,
        person_token=record.person_token,
        source_hospital=record.source_hospital,
        source_format=int(record.source.format),
        message_id=record.source.message_id,
        source_version=record.source.version,
        content_hash=record.source.content_hash,
        category=int(record.category),
        code_system=record.code.system,
        code=record.code.code,
        code_display=record.code.display,
        effective_time=record.effective_time.ToDatetime(tzinfo=UTC),
        status=record.status,
        sealed_payload=item.sealed_payload,
        blob_name=record.blob_name,
    )


def _fact_proto(fact: domain.SummaryFact) -> record_lookup_pb2.Fact:
    message = record_lookup_pb2.Fact(
        category=fact.category,  # type: ignore[arg-type]
        code=common_pb2.Code(system=fact.system, code=fact.code, display=fact.display),
        severity=fact.severity,
        source_hospital=fact.source_hospital,
        record_name=fact.record_name,
    )
    if fact.effective_time is not None:
        message.effective_time.FromDatetime(fact.effective_time)
    return message


# --- errors ---------------------------------------------------------------------------------


def _reason(basis: str) -> str:
    """Consent's basis as an ErrorInfo reason (it already is UPPER_SNAKE_CASE)."""
    return basis if _REASON.match(basis) else "CONSENT_DENIED"


def _dependency_error(error: grpc.aio.AioRpcError, dependency: str) -> ServiceError:
    """Map a failed downstream call to what our caller should see.

    Transient failures become UNAVAILABLE; refusals the caller can act on (bad argument,
    permission, not found, precondition) and lost data pass through with their reason;
    anything else is an internal error on our side.
    """
    details = error_details(error)
    code = details.code
    if code in _DEGRADED:
        return ServiceError.unavailable(
            f"{dependency} is unavailable", reason=f"{_upper(dependency)}_UNAVAILABLE"
        )
    if code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.DATA_LOSS,
    ):
        # Our services' messages and reasons are PHI-free by contract.
        return ServiceError(
            code,
            details.message or f"{dependency} refused the request",
            reason=details.reason or f"{_upper(dependency)}_REFUSED",
            field_violations=details.field_violations,
        )
    _log.error("%s call failed with %s", dependency, code.name)
    return ServiceError(
        grpc.StatusCode.INTERNAL, f"{dependency} call failed", reason="DEPENDENCY_FAILED"
    )


def _upper(name: str) -> str:
    return name.replace("-", "_").upper()
