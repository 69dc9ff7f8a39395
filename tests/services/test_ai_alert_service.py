"""The ai-alert service over real gRPC, with the real consent, audit and archive services.

Every service runs in-process from its own ``open_service`` on a free port, sharing one data
directory (so one local keyring); the archive holds tiered (cold) lab results. ai-alert runs
on a fixed clock so "today" is known. The hot store is seeded directly through
``healthbank.records.SqliteRecordStore`` with payloads sealed by a Sealer built from the same
settings, as ingest writes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from service_support import BearerAuth, RunningServices, failure, fields, service_settings, ts

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.crypto import Sealer, build_key_provider, build_sealer
from healthbank.records import (
    MessageReceipt,
    SqliteRecordStore,
    StoredRecord,
    SurveillanceCase,
    payload_aad,
)
from healthbank.rpc import ServiceHost
from healthbank.surveillance import visit_cells
from services.ai_alert import servicer
from services.ai_alert.app import SERVICE, open_service
from services.archive.app import open_service as open_archive
from services.audit.app import open_service as open_audit
from services.consent.app import open_service as open_consent

NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
TODAY = datetime(2026, 1, 15, tzinfo=UTC)
PERSON = "d4" * 32
OTHER_PERSON = "e5" * 32
HOSPITAL = "city-general"
DISTRICT = "黄浦区"

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"

PATIENT = Principal(PrincipalKind.PATIENT, PERSON, purpose=Purpose.PATIENT_ACCESS)
OTHER_PATIENT = Principal(PrincipalKind.PATIENT, OTHER_PERSON, purpose=Purpose.PATIENT_ACCESS)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "doc-7", hospital_id=HOSPITAL)
RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-1", purpose=Purpose.RESEARCH)
TIERING = Principal(PrincipalKind.SERVICE, "archive-tiering", purpose=Purpose.OPERATIONS)


@dataclass
class Seeder:
    """Writes records into the shared hot store the way ingest does."""

    store: SqliteRecordStore
    sealer: Sealer

    async def message(
        self,
        person_token: str,
        category: int,
        code: tuple[str, str],
        effective: datetime,
        payloads: list[dict[str, Any]],
        cases: Sequence[SurveillanceCase] = (),
    ) -> list[StoredRecord]:
        message_id = new_ulid()
        records = []
        for payload in payloads:
            record_id = new_ulid(effective)
            document = json.dumps(payload).encode()
            records.append(
                StoredRecord(
                    record_id=record_id,
                    person_token=person_token,
                    source_hospital="hospital-a",
                    source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                    message_id=message_id,
                    source_version="",
                    content_hash=hashlib.sha256(document).hexdigest(),
                    category=category,
                    code_system=code[0],
                    code=code[1],
                    code_display="",
                    effective_time=effective,
                    status="final",
                    sealed_payload=await self.sealer.seal(
                        document, payload_aad(person_token, record_id)
                    ),
                )
            )
        receipt = MessageReceipt(
            "hospital-a",
            message_id,
            hashlib.sha256(message_id.encode()).hexdigest(),
            person_token,
            tuple(record.record_id for record in records),
        )
        await self.store.put_message(receipt, records, [], cases)
        return records

    async def diagnoses(self, day: datetime, count: int, code: str = "J10.1") -> None:
        """``count`` influenza diagnoses (of different people) effective on ``day``: one
        message, with the ILI cases ingest would store with it (one per person)."""
        if count == 0:
            return
        condition = {
            "resourceType": "Condition",
            "code": {"coding": [{"system": ICD10, "code": code}]},
        }
        # The day's persons: distinct per day and call (a case is a person on a day).
        persons = [hashlib.sha256(f"{day}:{code}:{n}".encode()).hexdigest() for n in range(count)]
        cells = visit_cells(DISTRICT, None, [(condition, day + timedelta(hours=2))])
        await self.message(
            "f6" * 32,
            common_pb2.RECORD_CATEGORY_CONDITION,
            (ICD10, code),
            day + timedelta(hours=10),
            [condition] * count,
            [
                SurveillanceCase(cell.day, cell.district, cell.age_band, person)
                for cell in cells
                for person in persons
            ],
        )

    async def glucose(self, person_token: str, moment: datetime, value: float, unit: str) -> None:
        await self.message(
            person_token,
            common_pb2.RECORD_CATEGORY_OBSERVATION,
            (LOINC, "1558-6"),
            moment,
            [
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "1558-6"}]},
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                    "effectiveDateTime": moment.isoformat().replace("+00:00", "Z"),
                }
            ],
        )


@dataclass
class Clock:
    """ai-alert's clock, moved by a test replaying days."""

    now: datetime = NOW


@dataclass
class Stack(BearerAuth):
    """ai-alert and the services it calls, running, with stubs to call them."""

    settings: Settings
    hosts: dict[str, ServiceHost]
    alert: ai_alert_pb2_grpc.AiAlertServiceAsyncStub
    consent: consent_pb2_grpc.ConsentServiceAsyncStub
    audit: audit_pb2_grpc.AuditServiceAsyncStub
    archive: archive_pb2_grpc.ArchiveServiceAsyncStub
    seed: Seeder
    clock: Clock

    async def opt_in(self, person_token: str = PERSON, request_id: str = "opt-in") -> str:
        """The patient opts in to personal insights; returns the grant's name."""
        grant = await self.consent.CreateGrant(
            consent_pb2.CreateGrantRequest(
                parent=f"persons/{person_token}",
                grant=consent_pb2.Grant(
                    grantee_hospital_id=SERVICE,
                    categories=[common_pb2.RECORD_CATEGORY_PERSONAL_INSIGHTS],
                    expire_time=ts(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)),
                ),
                request_id=request_id,
            ),
            metadata=self.auth(
                Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)
            ),
        )
        return str(grant.name)

    async def tier_before(self, cutoff: datetime) -> int:
        """Move hot records effective before ``cutoff`` to the archive, as the tiering job."""
        moved = await self.archive.TierRecords(
            archive_pb2.TierRecordsRequest(cutoff=ts(cutoff)), metadata=self.auth(TIERING)
        )
        return int(moved.records_moved)

    async def forecast(
        self,
        horizon_days: int,
        history_days: int = 0,
        principal: Principal = RESEARCHER,
        as_of: datetime | None = None,
    ) -> ai_alert_pb2.Forecast:
        request = ai_alert_pb2.GetForecastRequest(
            horizon_days=horizon_days, history_days=history_days
        )
        if as_of is not None:
            request.as_of.CopyFrom(ts(as_of))
        response: ai_alert_pb2.Forecast = await self.alert.GetForecast(
            request, metadata=self.auth(principal)
        )
        return response

    async def insights(
        self, principal: Principal = PATIENT, parent: str = f"persons/{PERSON}"
    ) -> ai_alert_pb2.PersonalInsights:
        response: ai_alert_pb2.PersonalInsights = await self.alert.GetPersonalInsights(
            ai_alert_pb2.GetPersonalInsightsRequest(parent=parent),
            metadata=self.auth(principal),
        )
        return response

    async def access_events(self, person_token: str = PERSON) -> list[audit_pb2.AccessEvent]:
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}"),
            metadata=self.auth(
                Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)
            ),
        )
        # The reads ai-alert recorded; consent records its grants beside them.
        return [logged.event for logged in response.events if logged.event.recorded_by == SERVICE]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    settings = service_settings(tmp_path)
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        # Audit first: consent records every grant there.
        await running.start("audit", open_audit(settings))
        await running.start("archive", open_archive(settings))
        consent_clients = running.clients(settings, "consent")
        await running.start("consent", open_consent(settings, clients=consent_clients))
        clients = running.clients(settings, SERVICE)
        clock = Clock()
        await running.start(SERVICE, open_service(settings, clients=clients, now=lambda: clock.now))
        channel = running.channel
        store = await SqliteRecordStore(settings.data_dir / "records.db").open()
        exits.push_async_callback(store.close)
        yield Stack(
            settings=settings,
            hosts=running.hosts,
            alert=ai_alert_pb2_grpc.AiAlertServiceStub(channel(SERVICE)),
            consent=consent_pb2_grpc.ConsentServiceStub(channel("consent")),
            audit=audit_pb2_grpc.AuditServiceStub(channel("audit")),
            archive=archive_pb2_grpc.ArchiveServiceStub(channel("archive")),
            seed=Seeder(store, build_sealer(settings, build_key_provider(settings))),
            clock=clock,
        )


def poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, 1.0
    while True:
        product *= rng.random()
        if product < limit:
            return k
        k += 1


# --- GetForecast ------------------------------------------------------------------------------


async def test_forecast_over_quiet_counts_is_normal(stack: Stack) -> None:
    rng = random.Random(1)
    for back in range(1, 57):
        await stack.seed.diagnoses(TODAY - timedelta(days=back), poisson(rng, 8))
    # Other codes and today's (incomplete) counts are not part of the history.
    await stack.seed.diagnoses(TODAY - timedelta(days=3), 50, code="J45")
    await stack.seed.diagnoses(TODAY, 40)

    result = await stack.forecast(horizon_days=7)
    assert result.level == ai_alert_pb2.ALERT_LEVEL_NORMAL
    assert len(result.history) == 56
    assert len(result.forecast) == 7
    assert result.history[0].day.ToDatetime(tzinfo=UTC) == TODAY - timedelta(days=56)
    assert result.history[-1].day.ToDatetime(tzinfo=UTC) == TODAY - timedelta(days=1)
    assert result.forecast[0].day.ToDatetime(tzinfo=UTC) == TODAY
    assert result.forecast[-1].day.ToDatetime(tzinfo=UTC) == TODAY + timedelta(days=6)
    assert max(day.count for day in result.history) < 50
    assert all(day.upper >= day.count >= day.lower >= 0 for day in result.forecast)
    assert any(day.upper > day.count > day.lower for day in result.forecast)
    assert result.explanation
    # Each detector judges yesterday and finds nothing; the GLM needs more history.
    # The city's total and the one district with cases.
    assert [(alarm.detector, alarm.district) for alarm in result.alarms] == [
        ("GLM-CUSUM", "city"),
        ("EARS C2", "city"),
        ("GLM-CUSUM", DISTRICT),
        ("EARS C2", DISTRICT),
    ]
    for alarm in result.alarms:
        assert alarm.level == ai_alert_pb2.ALERT_LEVEL_NORMAL
        assert alarm.day.ToDatetime(tzinfo=UTC) == TODAY - timedelta(days=1)
        assert alarm.observed == result.history[-1].count
    assert "too little history" in result.alarms[0].evidence
    assert "EARS C2 no alarm" in result.alarms[1].evidence


async def test_forecast_warns_of_a_growing_outbreak(stack: Stack) -> None:
    rng = random.Random(2)
    for back in range(1, 29):
        # Quiet for two weeks, then growing 15% a day; dotted and undotted codes both count.
        mean = 8 if back > 14 else 8 * 1.15 ** (15 - back)
        code = "J11.1" if back % 2 else "J111"
        await stack.seed.diagnoses(TODAY - timedelta(days=back), poisson(rng, mean), code=code)

    result = await stack.forecast(horizon_days=14, history_days=28)
    assert result.level == ai_alert_pb2.ALERT_LEVEL_WARNING
    assert len(result.history) == 28
    assert result.forecast[-1].count > result.history[-1].count
    assert "outbreak line" in result.explanation


async def test_the_glm_cusum_alarms_on_a_rise_with_its_evidence(stack: Stack) -> None:
    rng = random.Random(3)
    for back in range(1, 201):
        # Half a year quiet, then a rise of 10 % a day over the last ten days.
        mean = 8 if back > 10 else 8 * 1.1 ** (11 - back)
        await stack.seed.diagnoses(TODAY - timedelta(days=back), poisson(rng, mean))

    result = await stack.forecast(horizon_days=7)
    glm = next(alarm for alarm in result.alarms if alarm.detector == "GLM-CUSUM")
    assert glm.level == ai_alert_pb2.ALERT_LEVEL_WARNING
    assert glm.observed > glm.expected > 0
    assert "GLM-CUSUM alarm" in glm.evidence
    # Quiet days in the same season: no alarm.
    earlier = await stack.forecast(horizon_days=7, as_of=TODAY - timedelta(days=20))
    assert all(alarm.level == ai_alert_pb2.ALERT_LEVEL_NORMAL for alarm in earlier.alarms)


async def test_forecast_with_no_data_is_normal_and_zero(stack: Stack) -> None:
    result = await stack.forecast(horizon_days=3, history_days=7)
    assert result.level == ai_alert_pb2.ALERT_LEVEL_NORMAL
    assert [day.count for day in result.history] == [0.0] * 7
    assert [day.count for day in result.forecast] == [0.0] * 3


@pytest.mark.parametrize(
    ("horizon_days", "history_days", "violations"),
    [
        (0, 0, ["horizon_days"]),
        (29, 56, ["horizon_days"]),
        (7, 6, ["history_days"]),
        (7, 366, ["history_days"]),
        (-1, -5, ["horizon_days", "history_days"]),
    ],
)
async def test_malformed_forecast_requests_are_invalid(
    stack: Stack, horizon_days: int, history_days: int, violations: list[str]
) -> None:
    details = await failure(stack.forecast(horizon_days, history_days))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == violations


async def test_as_of_replays_a_season_exactly_as_it_was_answered_live(stack: Stack) -> None:
    # DM2: a season lived day by day (each morning's answer recorded, then the day's visits
    # stored), then replayed from the end with as_of: every day's answer is the same.
    rng = random.Random(5)
    first_day = TODAY - timedelta(days=80)
    live: dict[datetime, ai_alert_pb2.Forecast] = {}
    for offset in range(80):
        day = first_day + timedelta(days=offset)
        stack.clock.now = day + timedelta(hours=9, minutes=30)
        if offset >= 56:
            live[day] = await stack.forecast(horizon_days=7)
        mean = 8 if offset < 60 else 8 * 1.2 ** (offset - 60)
        await stack.seed.diagnoses(day, poisson(rng, mean))
    stack.clock.now = NOW
    levels = set()
    detector_levels = set()
    for day, answer in live.items():
        replayed = await stack.forecast(horizon_days=7, as_of=day)
        assert replayed == answer
        levels.add(replayed.level)
        detector_levels.update((alarm.detector, alarm.level) for alarm in replayed.alarms)
    # The season has both quiet days and an outbreak: the replay compared real changes,
    # the detectors' verdicts among them.
    assert ai_alert_pb2.ALERT_LEVEL_NORMAL in levels
    assert ai_alert_pb2.ALERT_LEVEL_WARNING in levels
    assert ("GLM-CUSUM", ai_alert_pb2.ALERT_LEVEL_NORMAL) in detector_levels
    assert ("GLM-CUSUM", ai_alert_pb2.ALERT_LEVEL_WARNING) in detector_levels


async def test_as_of_after_today_is_invalid(stack: Stack) -> None:
    details = await failure(stack.forecast(7, as_of=TODAY + timedelta(days=1)))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == ["as_of"]


async def test_watch_alerts_streams_the_current_alert_then_each_change(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicer, "ALERT_POLL_SECONDS", 0.05)
    call = stack.alert.WatchAlerts(
        ai_alert_pb2.WatchAlertsRequest(horizon_days=7, history_days=28),
        metadata=stack.auth(RESEARCHER),
    )
    try:
        stream = aiter(call)
        first = await anext(stream)
        assert first.level == ai_alert_pb2.ALERT_LEVEL_NORMAL
        assert first.day.ToDatetime(tzinfo=UTC) == TODAY
        # An outbreak arrives in the counts: the warning follows, with its evidence.
        rng = random.Random(2)
        for back in range(1, 29):
            mean = 8 if back > 14 else 8 * 1.15 ** (15 - back)
            await stack.seed.diagnoses(TODAY - timedelta(days=back), poisson(rng, mean))
        # While the days are being stored a detector's verdict may change first: each
        # change is an alert, until the warning.
        second = await asyncio.wait_for(anext(stream), timeout=30)
        while second.level != ai_alert_pb2.ALERT_LEVEL_WARNING:
            second = await asyncio.wait_for(anext(stream), timeout=30)
        assert "outbreak line" in second.explanation
        # The detectors' verdicts travel with it: the city's, then the district's.
        assert [(alarm.district, alarm.detector) for alarm in second.alarms] == [
            ("city", "GLM-CUSUM"),
            ("city", "EARS C2"),
            (DISTRICT, "GLM-CUSUM"),
            (DISTRICT, "EARS C2"),
        ]
        assert all(alarm.evidence for alarm in second.alarms)
    finally:
        call.cancel()


async def test_watch_alerts_checks_its_request(stack: Stack) -> None:
    call = stack.alert.WatchAlerts(
        ai_alert_pb2.WatchAlertsRequest(horizon_days=0), metadata=stack.auth(RESEARCHER)
    )
    details = await failure(anext(aiter(call)))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == ["horizon_days"]


async def test_forecast_needs_credentials(stack: Stack) -> None:
    details = await failure(
        stack.alert.GetForecast(ai_alert_pb2.GetForecastRequest(horizon_days=7))
    )
    assert details.code == grpc.StatusCode.UNAUTHENTICATED


# --- GetPersonalInsights ------------------------------------------------------------------


async def seed_glucose_series(stack: Stack) -> None:
    """Four years of fasting glucose, every six months, rising 0.3 mmol/L a year."""
    for half_years in range(9):
        moment = NOW - timedelta(days=182.6 * (8 - half_years))
        await stack.seed.glucose(PERSON, moment, round(5.2 + 0.15 * half_years, 2), "mmol/L")


async def test_patient_sees_a_rising_glucose_trend_with_a_reminder(stack: Stack) -> None:
    await seed_glucose_series(stack)
    await stack.opt_in()
    insights = await stack.insights()
    assert insights.opted_in
    (trend,) = insights.trends
    assert trend.code.system == LOINC
    assert trend.code.code == "1558-6"
    assert trend.unit == "mmol/L"
    assert trend.sample_count == 9
    assert trend.latest_value == pytest.approx(6.4)
    assert trend.slope_per_year == pytest.approx(0.3, rel=0.01)
    assert trend.threshold == 7.0
    crossing = trend.projected_crossing_time.ToDatetime(tzinfo=UTC)
    assert NOW + timedelta(days=365) < crossing < NOW + timedelta(days=3 * 365)
    assert trend.significant
    assert trend.p_value < 0.001
    first, last = NOW - timedelta(days=182.6 * 8), NOW
    assert trend.reminder == (
        "Fasting glucose has risen 0.3 mmol/L per year; at this pace it reaches 7.0 mmol/L "
        f"around {crossing:%Y-%m} (from 9 results, {first:%Y-%m} to {last:%Y-%m}; "
        "trend test p = < 0.001). Consider a check-up."
    )
    assert trend.reminder_zh.startswith("您的空腹血糖每年上升0.3 mmol/L")
    assert PERSON not in trend.reminder + trend.reminder_zh

    (event,) = await stack.access_events()
    assert event.action == audit_pb2.ACTION_READ_HISTORY
    assert event.basis == "SELF"
    assert event.recorded_by == SERVICE
    assert event.actor.kind == common_pb2.PRINCIPAL_KIND_PATIENT


async def test_clinician_needs_consent_for_insights(stack: Stack) -> None:
    await seed_glucose_series(stack)
    await stack.opt_in()
    denied = await failure(stack.insights(CLINICIAN))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert denied.reason == "NO_GRANT"

    await stack.consent.CreateGrant(
        consent_pb2.CreateGrantRequest(
            parent=f"persons/{PERSON}",
            grant=consent_pb2.Grant(
                grantee_hospital_id=HOSPITAL,
                categories=[common_pb2.RECORD_CATEGORY_OBSERVATION],
                expire_time=ts(datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)),
            ),
            request_id="grant-1",
        ),
        metadata=stack.auth(PATIENT),
    )
    insights = await stack.insights(CLINICIAN)
    assert [trend.code.code for trend in insights.trends] == ["1558-6"]
    events = await stack.access_events()
    assert [(event.action, event.basis) for event in events] == [
        (audit_pb2.ACTION_READ_HISTORY, "GRANT"),
        (audit_pb2.ACTION_DENIED, "NO_GRANT"),
    ]


async def test_patient_cannot_read_another_persons_insights(stack: Stack) -> None:
    await seed_glucose_series(stack)
    details = await failure(stack.insights(OTHER_PATIENT))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "NOT_DATA_SUBJECT"


async def test_insights_need_a_patient_or_clinician(stack: Stack) -> None:
    details = await failure(stack.insights(RESEARCHER))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED


async def test_insights_with_too_little_data_are_empty(stack: Stack) -> None:
    await stack.opt_in()
    await stack.seed.glucose(PERSON, NOW - timedelta(days=30), 5.5, "mmol/L")
    await stack.seed.glucose(PERSON, NOW - timedelta(days=10), 5.6, "mmol/L")
    assert list((await stack.insights()).trends) == []


async def test_without_opt_in_nothing_is_analysed(stack: Stack) -> None:
    await seed_glucose_series(stack)
    insights = await stack.insights()
    assert not insights.opted_in
    assert list(insights.trends) == []
    # Another patient's opt-in is not this one's.
    await stack.opt_in(OTHER_PERSON)
    assert not (await stack.insights()).opted_in


async def test_a_revoked_opt_in_stops_the_analysis(stack: Stack) -> None:
    await seed_glucose_series(stack)
    grant_name = await stack.opt_in()
    assert len((await stack.insights()).trends) == 1
    await stack.consent.RevokeGrant(
        consent_pb2.RevokeGrantRequest(name=grant_name), metadata=stack.auth(PATIENT)
    )
    insights = await stack.insights()
    assert (insights.opted_in, list(insights.trends)) == (False, [])


async def test_a_six_year_trend_includes_the_archived_years(stack: Stack) -> None:
    # Six years of yearly results rising 0.2 mmol/L a year; the first four are tiered.
    for year in range(7):
        moment = NOW - timedelta(days=365.25 * (6 - year))
        await stack.seed.glucose(PERSON, moment, round(5.0 + 0.2 * year, 2), "mmol/L")
    assert await stack.tier_before(NOW - timedelta(days=365.25 * 2.5)) == 4
    await stack.opt_in()
    (trend,) = (await stack.insights()).trends
    assert trend.sample_count == 7
    assert trend.slope_per_year == pytest.approx(0.2, rel=0.01)
    assert trend.significant


async def test_insights_are_refused_when_audit_cannot_record(stack: Stack) -> None:
    await seed_glucose_series(stack)
    await stack.hosts["audit"].stop(0)
    details = await failure(stack.insights())
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == "AUDIT_UNAVAILABLE"


@pytest.mark.parametrize(
    "parent", ["", "persons/", f"patients/{PERSON}", "persons/XYZ", f"persons/{PERSON}/x"]
)
async def test_malformed_insights_requests_are_invalid(stack: Stack, parent: str) -> None:
    details = await failure(stack.insights(parent=parent))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields(details) == ["parent"]
