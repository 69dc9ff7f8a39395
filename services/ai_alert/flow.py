"""ai-alert's two reads, against the record store and the consent gate (no gRPC here).

Forecast: city-wide daily counts of influenza-like-illness diagnoses only; no person is
touched, so there is nothing to consent to or audit. Personal insights: one person's lab
results, through the consent gate like every clinical read (the patient themself, or a
clinician with consent → audit; no audit, no read) → observations → open → trends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal
from healthbank.records import RecordStore
from healthbank.rpc.gate import ConsentGate
from services.ai_alert import forecast, trends
from services.ai_alert.forecast import AlertLevel


@dataclass(frozen=True)
class DailyCount:
    """Diagnoses on one day; ``upper`` bounds a forecast day's count (0 for history)."""

    day: date
    count: float
    upper: float = 0.0


@dataclass(frozen=True)
class ForecastReport:
    """The counted history (ending yesterday), the forecast (from today) and the warning."""

    history: tuple[DailyCount, ...]
    forecast: tuple[DailyCount, ...]
    level: AlertLevel
    explanation: str


class AiAlertFlow:
    """Runs forecasts and personal insights; one instance per process.

    Args:
        records: the shared hot record store (daily code counts, observations).
        gate: decides and audits personal reads and opens the admitted person's payloads.
        now: the clock (UTC): "today" for forecasts and trends.
    """

    def __init__(
        self, *, records: RecordStore, gate: ConsentGate, now: Callable[[], datetime]
    ) -> None:
        self._records = records
        self._gate = gate
        self._now = now

    async def forecast(self, horizon_days: int, history_days: int) -> ForecastReport:
        """Forecast ``horizon_days`` of ILI diagnoses from the last ``history_days``."""
        # Today is still being counted: the history ends yesterday, the forecast starts today.
        today = self._now().astimezone(UTC).date()
        first_day = today - timedelta(days=history_days)
        counts = await self._records.daily_counts(
            forecast.ILI_CODE_SYSTEM, forecast.ILI_CODES, first_day, today
        )
        days = [first_day + timedelta(days=offset) for offset in range(history_days)]
        history = [float(counts.get(day, 0)) for day in days]
        assessment = forecast.assess(history, horizon_days)
        return ForecastReport(
            history=tuple(DailyCount(day, count) for day, count in zip(days, history, strict=True)),
            forecast=tuple(
                DailyCount(
                    today + timedelta(days=predicted.days_ahead - 1),
                    predicted.count,
                    predicted.upper,
                )
                for predicted in assessment.forecast
            ),
            level=assessment.level,
            explanation=assessment.explanation,
        )

    async def personal_insights(
        self, principal: Principal, person_token: str
    ) -> list[trends.Trend]:
        """The person's lab trends, for the patient themself or a clinician with consent."""
        admission = await self._gate.admit(
            principal,
            person_token,
            action=audit_pb2.ACTION_READ_HISTORY,
            categories=[common_pb2.RECORD_CATEGORY_OBSERVATION],
        )
        measurements: list[trends.Measurement] = []
        observations = await self._records.list_records(
            person_token, categories=[common_pb2.RECORD_CATEGORY_OBSERVATION]
        )
        for record in observations:
            if record.code_system and record.code_system != trends.LOINC_SYSTEM:
                continue
            document = await admission.open_payload(record.record_id, record.sealed_payload)
            measurements.extend(
                trends.measurements_from_observation(
                    document, record_code=record.code, record_time=record.effective_time
                )
            )
        return trends.personal_trends(measurements, self._now())
