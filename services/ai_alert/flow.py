"""ai-alert's two reads, against the record store and the consent gate (no gRPC here).

Forecast: daily ILI cases (distinct persons per local day and district, kept by ingest
with each stored message: RecordStore.surveillance_counts, ADR 30); no person is touched,
so there is nothing to consent to or audit. The city's total is forecast; over the
detectors' longer window, the GLM-CUSUM's and EARS C2's verdicts on the last complete day
are given for the city and for each district with cases in that window.
Personal insights: one person's lab results, through the consent gate like every clinical
read (the patient themself, or a clinician with consent → audit; no audit, no read) → the
patient's opt-in (ADR 30; none → nothing analysed) → observations of both tiers → open →
trends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import numpy as np

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal
from healthbank.records import RecordStore, StoredRecord
from healthbank.rpc.gate import ConsentGate
from services.ai_alert import detectors, forecast, trends
from services.ai_alert.forecast import AlertLevel


@dataclass(frozen=True)
class DailyCount:
    """Diagnoses on one day; ``upper`` bounds a forecast day's count (0 for history)."""

    day: date
    count: float
    upper: float = 0.0
    lower: float = 0.0


# The alarms' district of the whole city's total (beside each real district's).
CITY = "city"


@dataclass(frozen=True)
class DistrictVerdict:
    """A detector's verdict on ``day`` (the last complete day) for ``district``."""

    district: str
    day: date
    verdict: detectors.Verdict


@dataclass(frozen=True)
class ForecastReport:
    """The counted history (ending yesterday), the forecast (from today) and the warning."""

    history: tuple[DailyCount, ...]
    forecast: tuple[DailyCount, ...]
    level: AlertLevel
    explanation: str
    alarms: tuple[DistrictVerdict, ...] = ()


def _series_by_district(
    counts: dict[tuple[date, str], int], first_day: date, days: int
) -> dict[str, list[float]]:
    """Daily series over ``days`` from ``first_day``: the city's total first, then each
    district with cases, by name."""
    districts = sorted({district for _, district in counts})
    series = {
        district: [
            float(counts.get((first_day + timedelta(days=n), district), 0)) for n in range(days)
        ]
        for district in districts
    }
    city = [sum(values) for values in zip(*series.values(), strict=True)] or [0.0] * days
    return {CITY: city, **series}


class OptIns(Protocol):
    """Whether a patient opted in to personal insights (consent's PERSONAL_INSIGHTS grant)."""

    async def opted_in(self, person_token: str) -> bool:
        """True while the person holds an active opt-in grant to ai-alert."""
        ...


class ColdRecords(Protocol):
    """A person's archived (cold-tier) records, still sealed."""

    async def cold_records(self, person_token: str) -> Sequence[StoredRecord]:
        """Every cold record of ``person_token``."""
        ...


@dataclass(frozen=True)
class PersonalInsights:
    """The trends found, and whether the patient opted in at all."""

    opted_in: bool
    trends: tuple[trends.Trend, ...]


class AiAlertFlow:
    """Runs forecasts and personal insights; one instance per process.

    Args:
        records: the shared hot record store (daily code counts, observations).
        gate: decides and audits personal reads and opens the admitted person's payloads.
        opt_ins: the patients' opt-ins to personal insights.
        cold: archived observations, read beside the hot ones.
        now: the clock (UTC): "today" for forecasts and trends.
    """

    def __init__(
        self,
        *,
        records: RecordStore,
        gate: ConsentGate,
        opt_ins: OptIns,
        cold: ColdRecords,
        now: Callable[[], datetime],
    ) -> None:
        self._records = records
        self._gate = gate
        self._opt_ins = opt_ins
        self._cold = cold
        self._now = now

    def today(self) -> date:
        """Today's date by this flow's clock (UTC)."""
        return self._now().astimezone(UTC).date()

    async def forecast(
        self, horizon_days: int, history_days: int, as_of: date | None = None
    ) -> ForecastReport:
        """Forecast ``horizon_days`` of ILI diagnoses from the ``history_days`` before
        ``as_of`` (default today): what a run on that day answered."""
        # Today is still being counted: the history ends yesterday, the forecast starts today.
        today = as_of or self.today()
        # One read serves the forecast's window and the detectors' longer one.
        read_days = max(history_days, detectors.DETECTOR_HISTORY_DAYS)
        first_read = today - timedelta(days=read_days)
        counts = await self._records.surveillance_counts(first_read, today)
        by_district = _series_by_district(counts, first_read, read_days)
        series = by_district[CITY]
        days = [today - timedelta(days=history_days - offset) for offset in range(history_days)]
        history = series[-history_days:]

        def fit() -> tuple[forecast.Assessment, list[tuple[str, detectors.Verdict]]]:
            judged = [
                (district, verdict)
                for district, counted in by_district.items()
                for verdict in detectors.latest_verdicts(
                    np.array(counted[-detectors.DETECTOR_HISTORY_DAYS :])
                )
            ]
            return forecast.assess(history, horizon_days), judged

        # Fitting is CPU work: off the event loop.
        assessment, verdicts = await asyncio.to_thread(fit)
        last_day = today - timedelta(days=1)
        return ForecastReport(
            history=tuple(DailyCount(day, count) for day, count in zip(days, history, strict=True)),
            forecast=tuple(
                DailyCount(
                    today + timedelta(days=predicted.days_ahead - 1),
                    predicted.count,
                    predicted.upper,
                    predicted.lower,
                )
                for predicted in assessment.forecast
            ),
            level=assessment.level,
            explanation=assessment.explanation,
            alarms=tuple(
                DistrictVerdict(district, last_day, verdict) for district, verdict in verdicts
            ),
        )

    async def personal_insights(self, principal: Principal, person_token: str) -> PersonalInsights:
        """The person's lab trends over both tiers, for the patient themself or a clinician
        with consent, when the patient opted in; nothing is opened without the opt-in."""
        admission = await self._gate.admit(
            principal,
            person_token,
            action=audit_pb2.ACTION_READ_HISTORY,
            categories=[common_pb2.RECORD_CATEGORY_OBSERVATION],
        )
        if not await self._opt_ins.opted_in(person_token):
            return PersonalInsights(opted_in=False, trends=())
        hot = await self._records.list_records(
            person_token, categories=[common_pb2.RECORD_CATEGORY_OBSERVATION]
        )
        seen = {record.record_id for record in hot}
        # A record being tiered can briefly be in both tiers: the hot copy wins.
        cold = [
            record
            for record in await self._cold.cold_records(person_token)
            if record.record_id not in seen
            and record.person_token == person_token
            and record.category == common_pb2.RECORD_CATEGORY_OBSERVATION
        ]
        measurements: list[trends.Measurement] = []
        for record in [*hot, *cold]:
            if record.code_system and record.code_system != trends.LOINC_SYSTEM:
                continue
            document = await admission.open_payload(record.record_id, record.sealed_payload)
            measurements.extend(
                trends.measurements_from_observation(
                    document, record_code=record.code, record_time=record.effective_time
                )
            )
        found = trends.personal_trends(measurements, self._now())
        return PersonalInsights(opted_in=True, trends=tuple(found))
