"""The AiAlertService gRPC edge: validation, consent and audit for insights, protos.

GetForecast works on city-wide daily code counts only (no person is touched, nothing to
consent to or audit). GetPersonalInsights reads one person's lab results, so it follows the
record-lookup order: authorize (the patient themself, or a clinician with consent), write
the audit leaf, and only then read and decrypt; if the audit log cannot record the access,
nothing is returned.

Calls to consent and audit carry this service's own token (the ClientFactory's); the end
user travels in ``CheckRequest.accessor`` and ``AccessEvent.actor``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.principal import Principal, PrincipalKind, principal_to_proto
from healthbank.crypto import Sealer
from healthbank.records import RecordStore, payload_aad
from healthbank.rpc import ClientFactory, ServiceError, Violations, error_details, require_principal
from healthbank.rpc.gate import AccessAuditor, open_sealed
from services.ai_alert import forecast, trends

_log = logging.getLogger(__name__)

SERVICE = "ai-alert"

BASIS_SELF = "SELF"

_PERSON_NAME = re.compile(r"^persons/([0-9a-f]{64})$")
# google.rpc.ErrorInfo.reason shape.
_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$")
_DEGRADED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class AiAlertServicer(ai_alert_pb2_grpc.AiAlertServiceServicer):
    """Serves GetForecast and GetPersonalInsights.

    Args:
        records: the shared hot record store (daily code counts, observations).
        sealer: opens sealed observation payloads.
        clients: stubs for consent and audit, carrying this service's own credentials.
        now: the clock (UTC).
    """

    def __init__(
        self,
        *,
        records: RecordStore,
        sealer: Sealer,
        clients: ClientFactory,
        now: Callable[[], datetime],
    ) -> None:
        self._records = records
        self._sealer = sealer
        self._clients = clients
        self._now = now
        self._auditor = AccessAuditor(clients, SERVICE, now)

    async def GetForecast(
        self, request: ai_alert_pb2.GetForecastRequest, context: object
    ) -> ai_alert_pb2.Forecast:
        """Forecast daily ILI diagnoses and set the warning level (any authenticated caller)."""
        require_principal()
        violations = Violations()
        violations.check(
            forecast.MIN_HORIZON_DAYS <= request.horizon_days <= forecast.MAX_HORIZON_DAYS,
            "horizon_days",
            f"must be {forecast.MIN_HORIZON_DAYS}-{forecast.MAX_HORIZON_DAYS}",
        )
        violations.check(
            request.history_days == 0
            or forecast.MIN_HISTORY_DAYS <= request.history_days <= forecast.MAX_HISTORY_DAYS,
            "history_days",
            f"must be {forecast.MIN_HISTORY_DAYS}-{forecast.MAX_HISTORY_DAYS}, or 0 for "
            f"{forecast.DEFAULT_HISTORY_DAYS}",
        )
        violations.raise_if_any()
        history_days = request.history_days or forecast.DEFAULT_HISTORY_DAYS

        # Today is still being counted: the history ends yesterday, the forecast starts today.
        today = self._now().astimezone(UTC).date()
        first_day = today - timedelta(days=history_days)
        counts = await self._records.daily_counts(
            forecast.ILI_CODE_SYSTEM, forecast.ILI_CODES, first_day, today
        )
        days = [first_day + timedelta(days=offset) for offset in range(history_days)]
        history = [float(counts.get(day, 0)) for day in days]
        assessment = forecast.assess(history, request.horizon_days)
        return ai_alert_pb2.Forecast(
            history=[_daily_count(day, count) for day, count in zip(days, history, strict=True)],
            forecast=[
                _daily_count(
                    today + timedelta(days=predicted.days_ahead - 1),
                    predicted.count,
                    predicted.upper,
                )
                for predicted in assessment.forecast
            ],
            level=int(assessment.level),  # type: ignore[arg-type]
            explanation=assessment.explanation,
        )

    async def GetPersonalInsights(
        self, request: ai_alert_pb2.GetPersonalInsightsRequest, context: object
    ) -> ai_alert_pb2.PersonalInsights:
        """Lab trends of one person, for that patient or a clinician with consent."""
        principal = require_principal(PrincipalKind.PATIENT, PrincipalKind.CLINICIAN)
        violations = Violations()
        person_token: str | None = None
        if violations.require(request.parent, "parent"):
            match = _PERSON_NAME.match(request.parent)
            violations.check(
                match is not None,
                "parent",
                "must be persons/{person_token} (64 lowercase hex digits)",
            )
            person_token = match.group(1) if match else None
        violations.raise_if_any()
        assert person_token is not None

        basis, authority = await self._authorize(principal, person_token)
        resource_names = [f"persons/{person_token}"]
        if authority:
            resource_names.append(authority)
        await self._auditor.record(
            principal, audit_pb2.ACTION_READ_HISTORY, person_token, resource_names, basis=basis
        )

        measurements: list[trends.Measurement] = []
        observations = await self._records.list_records(
            person_token, categories=[common_pb2.RECORD_CATEGORY_OBSERVATION]
        )
        for record in observations:
            if record.code_system and record.code_system != trends.LOINC_SYSTEM:
                continue
            document = await open_sealed(
                self._sealer, record.sealed_payload, payload_aad(person_token, record.record_id)
            )
            measurements.extend(
                trends.measurements_from_observation(
                    document, record_code=record.code, record_time=record.effective_time
                )
            )
        return ai_alert_pb2.PersonalInsights(
            trends=[
                _trend_proto(trend) for trend in trends.personal_trends(measurements, self._now())
            ]
        )

    async def _authorize(self, principal: Principal, person_token: str) -> tuple[str, str]:
        """(basis, authority name) when ``principal`` may read the person's lab values."""
        if principal.kind == PrincipalKind.PATIENT:
            if principal.subject == person_token:
                return BASIS_SELF, ""
            await self._auditor.record_denial(principal, person_token, "NOT_DATA_SUBJECT")
            raise ServiceError.permission_denied(
                "patients may only read their own insights", reason="NOT_DATA_SUBJECT"
            )
        stub = consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))
        try:
            decision: consent_pb2.CheckResponse = await stub.Check(
                consent_pb2.CheckRequest(
                    person_token=person_token,
                    accessor=principal_to_proto(principal),
                    categories=[common_pb2.RECORD_CATEGORY_OBSERVATION],
                )
            )
        except grpc.aio.AioRpcError as error:
            raise _dependency_error(error, "consent") from None
        if decision.decision != consent_pb2.DECISION_PERMIT:
            await self._auditor.record_denial(principal, person_token, decision.basis)
            reason = decision.basis if _REASON.match(decision.basis) else "CONSENT_DENIED"
            raise ServiceError.permission_denied("consent does not permit this read", reason=reason)
        return decision.basis, decision.authority_name


def _daily_count(day: date, count: float, upper: float = 0.0) -> ai_alert_pb2.DailyCount:
    message = ai_alert_pb2.DailyCount(count=count, upper=upper)
    message.day.FromDatetime(datetime.combine(day, time(), tzinfo=UTC))
    return message


def _trend_proto(trend: trends.Trend) -> ai_alert_pb2.Trend:
    message = ai_alert_pb2.Trend(
        code=common_pb2.Code(
            system=trends.LOINC_SYSTEM, code=trend.test.loinc, display=trend.test.display
        ),
        unit=trend.unit,
        sample_count=trend.sample_count,
        latest_value=trend.latest_value,
        slope_per_year=trend.slope_per_year,
        threshold=trend.threshold,
        reminder=trend.reminder,
    )
    if trend.projected_crossing is not None:
        message.projected_crossing_time.FromDatetime(trend.projected_crossing)
    return message


def _dependency_error(error: grpc.aio.AioRpcError, dependency: str) -> ServiceError:
    """Transient downstream failures become UNAVAILABLE; anything else is internal."""
    code = error_details(error).code
    if code in _DEGRADED:
        return ServiceError.unavailable(
            f"{dependency} is unavailable", reason=f"{dependency.upper()}_UNAVAILABLE"
        )
    _log.error("%s call failed with %s", dependency, code.name)
    return ServiceError(
        grpc.StatusCode.INTERNAL, f"{dependency} call failed", reason="DEPENDENCY_FAILED"
    )
