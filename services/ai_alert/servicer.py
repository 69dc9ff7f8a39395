"""The AiAlertService gRPC edge: request validation, the flow, response protos.

The reads themselves (and the consent gate for personal insights) are
:mod:`services.ai_alert.flow`.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import PERSON_NAME_RULE, parse_person_name
from healthbank.rpc import Violations, require_principal
from services.ai_alert import forecast, trends
from services.ai_alert.flow import AiAlertFlow, DailyCount

SERVICE = "ai-alert"


class AiAlertServicer(ai_alert_pb2_grpc.AiAlertServiceServicer):
    """Serves GetForecast and GetPersonalInsights over an :class:`AiAlertFlow`."""

    def __init__(self, flow: AiAlertFlow) -> None:
        """Serve ``flow``."""
        self._flow = flow

    async def GetForecast(
        self, request: ai_alert_pb2.GetForecastRequest, context: object
    ) -> ai_alert_pb2.Forecast:
        """Forecast daily ILI diagnoses and set the warning level."""
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
        report = await self._flow.forecast(
            request.horizon_days, request.history_days or forecast.DEFAULT_HISTORY_DAYS
        )
        return ai_alert_pb2.Forecast(
            history=[_daily_count(day) for day in report.history],
            forecast=[_daily_count(day) for day in report.forecast],
            level=int(report.level),  # type: ignore[arg-type]
            explanation=report.explanation,
        )

    async def GetPersonalInsights(
        self, request: ai_alert_pb2.GetPersonalInsightsRequest, context: object
    ) -> ai_alert_pb2.PersonalInsights:
        """Lab trends of one person, for that patient or a clinician with consent."""
        principal = require_principal()
        violations = Violations()
        person_token: str | None = None
        if violations.require(request.parent, "parent"):
            person_token = parse_person_name(request.parent)
            violations.check(person_token is not None, "parent", PERSON_NAME_RULE)
        violations.raise_if_any()
        assert person_token is not None
        found = await self._flow.personal_insights(principal, person_token)
        return ai_alert_pb2.PersonalInsights(trends=[_trend_proto(trend) for trend in found])


def _daily_count(count: DailyCount) -> ai_alert_pb2.DailyCount:
    message = ai_alert_pb2.DailyCount(count=count.count, upper=count.upper)
    message.day.FromDatetime(datetime.combine(count.day, time(), tzinfo=UTC))
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
