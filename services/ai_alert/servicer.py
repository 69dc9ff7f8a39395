"""The AiAlertService gRPC edge: request validation, the flow, response protos.

The reads themselves (and the consent gate for personal insights) are
:mod:`services.ai_alert.flow`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time

from google.protobuf import timestamp_pb2

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import PERSON_NAME_RULE, parse_person_name
from healthbank.contracts.research import GRANT_NAME_RULE, parse_research_grant_name
from healthbank.core.ids import is_ulid
from healthbank.rpc import ServiceError, Violations, require_principal
from services.ai_alert import forecast, synthesis, trends
from services.ai_alert.aggregates import AggregateKind, AggregateSpec, spec_problems
from services.ai_alert.flow import AiAlertFlow, DailyCount, DistrictVerdict
from services.ai_alert.research_flow import ResearchFlow, ResearchRefused

SERVICE = "ai-alert"

# How often WatchAlerts looks again at the counts.
ALERT_POLL_SECONDS = 60.0


class AiAlertServicer(ai_alert_pb2_grpc.AiAlertServiceServicer):
    """Serves GetForecast and GetPersonalInsights over an :class:`AiAlertFlow`, and the
    black room's RunAggregate and Synthesize over a :class:`ResearchFlow`."""

    def __init__(self, flow: AiAlertFlow, research: ResearchFlow) -> None:
        """Serve ``flow`` and ``research``."""
        self._flow = flow
        self._research = research

    async def RunAggregate(
        self, request: ai_alert_pb2.RunAggregateRequest, context: object
    ) -> ai_alert_pb2.AggregateResult:
        """One noisy aggregate under a research grant."""
        principal = require_principal()
        violations = Violations()
        grant_id = _grant_id(request.grant_name, violations)
        spec = None
        if not request.HasField("spec"):
            violations.add("spec", "is required")
        elif request.spec.kind not in AggregateKind._value2member_map_:
            violations.add("spec.kind", "must be COUNT, SUM, MEAN, QUANTILES or HISTOGRAM")
        else:
            spec = AggregateSpec(
                kind=AggregateKind(request.spec.kind),
                field=request.spec.field,
                group_by=tuple(request.spec.group_by),
                quantiles=tuple(request.spec.quantiles),
                bin_edges=tuple(request.spec.bin_edges),
            )
            for field, rule in spec_problems(spec):
                violations.add(f"spec.{field}", rule)
        violations.check(0 <= request.epsilon <= 10, "epsilon", "must be 0 (default) to 10")
        if violations.require(request.query_id, "query_id"):
            violations.check(is_ulid(request.query_id), "query_id", "must be a ULID")
        violations.raise_if_any()
        assert grant_id is not None and spec is not None
        with _research_refusals():
            outcome = await self._research.aggregate(
                principal, grant_id, spec, request.epsilon, request.query_id
            )
        return ai_alert_pb2.AggregateResult(
            query_id=request.query_id,
            cells=[
                ai_alert_pb2.AggregateCell(
                    group_values=cell.group,
                    bin=cell.bin_label,
                    suppressed=cell.suppressed,
                    value=cell.value,
                    quantile_values=cell.quantile_values,
                )
                for cell in outcome.cells
            ],
            epsilon=outcome.epsilon,
            epsilon_remaining=outcome.epsilon_remaining,
            min_cell_size=outcome.min_cell_size,
            mechanism=outcome.mechanism,
        )

    async def Synthesize(
        self, request: ai_alert_pb2.SynthesizeRequest, context: object
    ) -> ai_alert_pb2.SyntheticCohort:
        """A synthetic cohort with its utility and privacy reports."""
        principal = require_principal()
        violations = Violations()
        grant_id = _grant_id(request.grant_name, violations)
        violations.check(
            0 <= request.row_count <= synthesis.MAX_ROWS,
            "row_count",
            f"must be 0 (the cohort's size) to {synthesis.MAX_ROWS}",
        )
        violations.check(
            request.format in ai_alert_pb2.SyntheticFormat.values(),
            "format",
            "must be CSV or PARQUET",
        )
        violations.raise_if_any()
        assert grant_id is not None
        with _research_refusals():
            cohort = await self._research.synthesize(
                principal,
                grant_id,
                request.row_count,
                request.format == ai_alert_pb2.SYNTHETIC_FORMAT_PARQUET,
                request.seed,
            )
        utility, privacy = cohort.utility, cohort.privacy
        return ai_alert_pb2.SyntheticCohort(
            content=cohort.content,
            media_type=cohort.media_type,
            columns=cohort.columns,
            row_count=cohort.row_count,
            utility=ai_alert_pb2.UtilityReport(
                marginals=[
                    ai_alert_pb2.MarginalComparison(
                        field=marginal.field,
                        real_mean=marginal.real_mean,
                        synthetic_mean=marginal.synthetic_mean,
                        real_sd=marginal.real_sd,
                        synthetic_sd=marginal.synthetic_sd,
                        ks_statistic=marginal.ks_statistic,
                    )
                    for marginal in utility.marginals
                ],
                max_correlation_difference=utility.max_correlation_difference,
                tstr_target=utility.tstr_target,
                tstr_accuracy=utility.tstr_accuracy,
                trtr_accuracy=utility.trtr_accuracy,
            ),
            privacy=ai_alert_pb2.PrivacyReport(
                min_distance_to_real=privacy.min_distance_to_real,
                median_distance_to_real=privacy.median_distance_to_real,
                exact_copies=privacy.exact_copies,
                distance_threshold=privacy.distance_threshold,
                membership_inference_auc=privacy.membership_inference_auc,
                membership_inference_p_value=privacy.membership_inference_p_value,
                passed=privacy.passed,
            ),
        )

    async def WatchAlerts(
        self, request: ai_alert_pb2.WatchAlertsRequest, context: object
    ) -> AsyncIterator[ai_alert_pb2.Alert]:
        """The current alert, then each change of level, of a detector's verdict or of the
        day, until the caller leaves."""
        violations = Violations()
        _check_windows(request.horizon_days, request.history_days, violations)
        violations.raise_if_any()
        history_days = request.history_days or forecast.DEFAULT_HISTORY_DAYS
        last: tuple[object, ...] | None = None
        while True:
            report = await self._flow.forecast(request.horizon_days, history_days)
            day = report.forecast[0].day if report.forecast else self._flow.today()
            state = (
                day,
                int(report.level),
                *(
                    (alarm.district, alarm.verdict.detector, alarm.verdict.alarm)
                    for alarm in report.alarms
                ),
            )
            if last != state:
                last = state
                alert = ai_alert_pb2.Alert(
                    level=int(report.level),  # type: ignore[arg-type]
                    explanation=report.explanation,
                    alarms=[_alarm(alarm) for alarm in report.alarms],
                )
                alert.day.FromDatetime(datetime.combine(day, time(), tzinfo=UTC))
                yield alert
            await asyncio.sleep(ALERT_POLL_SECONDS)

    async def GetForecast(
        self, request: ai_alert_pb2.GetForecastRequest, context: object
    ) -> ai_alert_pb2.Forecast:
        """Forecast daily ILI diagnoses and set the warning level."""
        violations = Violations()
        _check_windows(request.horizon_days, request.history_days, violations)
        as_of = None
        if request.HasField("as_of"):
            as_of = _day(request.as_of)
            violations.check(
                as_of is not None and as_of <= self._flow.today(),
                "as_of",
                "must be a valid day no later than today",
            )
        violations.raise_if_any()
        report = await self._flow.forecast(
            request.horizon_days, request.history_days or forecast.DEFAULT_HISTORY_DAYS, as_of
        )
        return ai_alert_pb2.Forecast(
            history=[_daily_count(day) for day in report.history],
            forecast=[_daily_count(day) for day in report.forecast],
            level=int(report.level),  # type: ignore[arg-type]
            explanation=report.explanation,
            alarms=[_alarm(alarm) for alarm in report.alarms],
        )

    async def GetPersonalInsights(
        self, request: ai_alert_pb2.GetPersonalInsightsRequest, context: object
    ) -> ai_alert_pb2.PersonalInsights:
        """Lab trends of one person, for that patient or a clinician with consent."""
        principal = require_principal()
        violations = Violations()
        person_token = violations.parse(
            request.parent, "parent", parse_person_name, PERSON_NAME_RULE
        )
        violations.raise_if_any()
        assert person_token is not None
        found = await self._flow.personal_insights(principal, person_token)
        return ai_alert_pb2.PersonalInsights(
            trends=[_trend_proto(trend) for trend in found.trends], opted_in=found.opted_in
        )


def _check_windows(horizon_days: int, history_days: int, violations: Violations) -> None:
    violations.check(
        forecast.MIN_HORIZON_DAYS <= horizon_days <= forecast.MAX_HORIZON_DAYS,
        "horizon_days",
        f"must be {forecast.MIN_HORIZON_DAYS}-{forecast.MAX_HORIZON_DAYS}",
    )
    violations.check(
        history_days == 0 or forecast.MIN_HISTORY_DAYS <= history_days <= forecast.MAX_HISTORY_DAYS,
        "history_days",
        f"must be {forecast.MIN_HISTORY_DAYS}-{forecast.MAX_HISTORY_DAYS}, or 0 for "
        f"{forecast.DEFAULT_HISTORY_DAYS}",
    )


def _day(timestamp: timestamp_pb2.Timestamp) -> date | None:
    """The UTC date of a timestamp, or None when it is out of range."""
    try:
        return timestamp.ToDatetime(tzinfo=UTC).date()
    except (ValueError, OverflowError):
        return None


def _daily_count(count: DailyCount) -> ai_alert_pb2.DailyCount:
    message = ai_alert_pb2.DailyCount(count=count.count, upper=count.upper, lower=count.lower)
    message.day.FromDatetime(datetime.combine(count.day, time(), tzinfo=UTC))
    return message


def _alarm(alarm: DistrictVerdict) -> ai_alert_pb2.DetectorAlarm:
    verdict = alarm.verdict
    message = ai_alert_pb2.DetectorAlarm(
        district=alarm.district,
        detector=verdict.detector,
        level=ai_alert_pb2.ALERT_LEVEL_WARNING
        if verdict.alarm
        else ai_alert_pb2.ALERT_LEVEL_NORMAL,
        observed=verdict.observed,
        expected=verdict.expected,
        statistic=verdict.statistic,
        threshold=verdict.threshold,
        evidence=verdict.evidence,
    )
    message.day.FromDatetime(datetime.combine(alarm.day, time(), tzinfo=UTC))
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
        reminder_zh=trend.reminder_zh,
        p_value=trend.p_value,
        significant=trend.significant,
    )
    if trend.projected_crossing is not None:
        message.projected_crossing_time.FromDatetime(trend.projected_crossing)
    return message


def _grant_id(name: str, violations: Violations) -> str | None:
    return violations.parse(name, "grant_name", parse_research_grant_name, GRANT_NAME_RULE)


@contextmanager
def _research_refusals() -> Iterator[None]:
    """The black room's refusals: outside the grant is PERMISSION_DENIED, a state of the
    grant or cohort FAILED_PRECONDITION; both name their reason and are never retryable."""
    try:
        yield
    except ResearchRefused as refused:
        if refused.precondition:
            raise ServiceError.failed_precondition(refused.message, reason=refused.reason) from None
        raise ServiceError.permission_denied(refused.message, reason=refused.reason) from None
