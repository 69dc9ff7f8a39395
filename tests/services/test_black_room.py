"""The black room in ai-alert over real gRPC, with the real consent and audit services.

A committee approves a grant (three COMMITTEE votes); the researcher queries as RESEARCHER.
The hot store is seeded the way ingest writes it (record metadata; the black room never
opens a payload): an influenza cohort of 240 persons at three hospitals, three more at a
small clinic (a cell below the minimum), and persons outside the cohort.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from service_support import (
    BearerAuth,
    RunningServices,
    failure,
    research_request_example,
    service_settings,
    ts,
)

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.contracts.research import parse_research_grant_name, research_ledger_token
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.records import MessageReceipt, SqliteRecordStore, StoredRecord
from services.ai_alert.app import open_service as open_ai_alert
from services.ai_alert.synthesis import DISTANCE_THRESHOLD
from services.audit.app import open_service as open_audit
from services.consent.app import open_service as open_consent

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-1", purpose=Purpose.RESEARCH)
OTHER_RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-2", purpose=Purpose.RESEARCH)
MEMBERS = [
    Principal(PrincipalKind.COMMITTEE, f"member-{n}", purpose=Purpose.OPERATIONS)
    for n in range(1, 4)
]
AUDITOR = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
COHORT_SIZES = {"city-general": 120, "east-er": 80, "north": 40, "small-clinic": 3}
COUNT = ai_alert_pb2.AGGREGATE_KIND_COUNT


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class BlackRoom(BearerAuth):
    settings: Settings
    scratch: Path
    clock: Clock
    alert: ai_alert_pb2_grpc.AiAlertServiceAsyncStub
    consent: consent_pb2_grpc.ConsentServiceAsyncStub
    audit: audit_pb2_grpc.AuditServiceAsyncStub

    async def grant(self, **changes: Any) -> str:
        """An approved grant's name (groupings: hospital; budget 1.0)."""
        asked = research_request_example(ts(self.clock.now + timedelta(days=90)))
        for field, value in changes.items():
            setattr(asked, field, value)
        request = await self.consent.SubmitResearchRequest(
            consent_pb2.SubmitResearchRequestRequest(research_request=asked, request_id=new_ulid()),
            metadata=self.auth(RESEARCHER),
        )
        for member in MEMBERS:
            request = await self.consent.CastCommitteeVote(
                consent_pb2.CastCommitteeVoteRequest(
                    name=request.name, choice=consent_pb2.VOTE_CHOICE_APPROVE
                ),
                metadata=self.auth(member),
            )
        assert request.grant_name
        return str(request.grant_name)

    async def run(
        self,
        grant_name: str,
        spec: ai_alert_pb2.AggregateSpec,
        epsilon: float = 0.1,
        principal: Principal = RESEARCHER,
    ) -> ai_alert_pb2.AggregateResult:
        response: ai_alert_pb2.AggregateResult = await self.alert.RunAggregate(
            ai_alert_pb2.RunAggregateRequest(
                grant_name=grant_name, spec=spec, epsilon=epsilon, query_id=new_ulid()
            ),
            metadata=self.auth(principal),
        )
        return response

    async def spent(self, grant_name: str) -> float:
        grant = await self.consent.GetResearchGrant(
            consent_pb2.GetResearchGrantRequest(name=grant_name), metadata=self.auth(RESEARCHER)
        )
        return float(grant.epsilon_spent)

    async def research_uses(self, person_token: str) -> list[str]:
        """The research events in the person's own access report, oldest first."""
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(parent=f"persons/{person_token}"),
            metadata=self.auth(
                Principal(PrincipalKind.PATIENT, person_token, purpose=Purpose.PATIENT_ACCESS)
            ),
        )
        return [
            logged.event.basis
            for logged in reversed(response.events)
            if logged.event.action == audit_pb2.ACTION_RESEARCH
        ]

    async def steps(self, grant_name: str) -> list[str]:
        grant_id = parse_research_grant_name(grant_name)
        assert grant_id is not None
        response = await self.audit.ListAccessEvents(
            audit_pb2.ListAccessEventsRequest(
                parent=f"persons/{research_ledger_token(grant_id)}", page_size=200
            ),
            metadata=self.auth(AUDITOR),
        )
        return [logged.event.basis.split()[0] for logged in reversed(response.events)]


async def seed(store: SqliteRecordStore) -> None:
    """The cohort (and persons outside it) as ingest stores records."""
    person = 0
    for hospital, size in COHORT_SIZES.items():
        for index in range(size):
            person += 1
            codes = ["J10.1" if index % 2 else "J11.1", "E11.9"] + ["R50.9"] * (index % 5)
            await _message(store, f"{person:064x}", hospital, codes, index)
    for outsider in range(20):
        await _message(store, f"{10_000 + outsider:064x}", "east-er", ["E11.9"], outsider)


async def _message(
    store: SqliteRecordStore, person_token: str, hospital: str, codes: list[str], index: int
) -> None:
    message_id = new_ulid()
    records = []
    for offset, code in enumerate(codes):
        effective = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=(index * 7 + offset * 30))
        record_id = new_ulid(effective)
        records.append(
            StoredRecord(
                record_id=record_id,
                person_token=person_token,
                source_hospital=hospital,
                source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                message_id=message_id,
                source_version="",
                content_hash=hashlib.sha256(record_id.encode()).hexdigest(),
                category=common_pb2.RECORD_CATEGORY_CONDITION,
                code_system=ICD10,
                code=code,
                code_display="",
                effective_time=effective,
                status="final",
                sealed_payload=b"sealed elsewhere; never opened by the black room",
            )
        )
    receipt = MessageReceipt(
        hospital,
        message_id,
        hashlib.sha256(message_id.encode()).hexdigest(),
        person_token,
        tuple(record.record_id for record in records),
    )
    await store.put_message(receipt, records, [])


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[BlackRoom]:
    settings = service_settings(tmp_path)
    clock = Clock(NOW)
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("audit", open_audit(settings))
        consent_clients = running.clients(settings, "consent")
        await running.start("consent", open_consent(settings, clients=consent_clients, now=clock))
        alert_clients = running.clients(settings, "ai-alert")
        await running.start("ai-alert", open_ai_alert(settings, clients=alert_clients, now=clock))
        store = await SqliteRecordStore(settings.data_dir / "records.db").open()
        exits.push_async_callback(store.close)
        await seed(store)
        yield BlackRoom(
            settings,
            tmp_path,
            clock,
            ai_alert_pb2_grpc.AiAlertServiceStub(running.channel("ai-alert")),
            consent_pb2_grpc.ConsentServiceStub(running.channel("consent")),
            audit_pb2_grpc.AuditServiceStub(running.channel("audit")),
        )


async def test_counts_by_an_allowed_grouping_are_noisy_and_small_cells_suppressed(
    room: BlackRoom,
) -> None:
    grant = await room.grant()
    result = await room.run(grant, ai_alert_pb2.AggregateSpec(kind=COUNT, group_by=["hospital"]))
    cells = {cell.group_values[0]: cell for cell in result.cells}
    assert set(cells) == set(COHORT_SIZES)
    assert cells["small-clinic"].suppressed and cells["small-clinic"].value == 0
    for hospital in ("city-general", "east-er", "north"):
        assert not cells[hospital].suppressed
        # Discrete Laplace of scale 10 (epsilon 0.1): off by more than 100 with p < 1e-4.
        assert abs(cells[hospital].value - COHORT_SIZES[hospital]) <= 100
    assert result.min_cell_size == 10
    assert "discrete Laplace" in result.mechanism
    assert result.epsilon_remaining == pytest.approx(0.9)
    assert await room.spent(grant) == pytest.approx(0.1)
    assert (await room.steps(grant))[-2:] == ["BUDGET_SPENT", "AGGREGATE_RUN"]


async def test_a_patients_access_report_shows_research_use_once_per_grant_and_use(
    room: BlackRoom,
) -> None:
    grant = await room.grant()
    spec = ai_alert_pb2.AggregateSpec(kind=COUNT, group_by=["hospital"])
    await room.run(grant, spec)
    await room.run(grant, spec)
    await room.alert.Synthesize(
        ai_alert_pb2.SynthesizeRequest(grant_name=grant, seed=3), metadata=room.auth(RESEARCHER)
    )
    in_cohort, outsider = f"{1:064x}", f"{10_000:064x}"
    assert await room.research_uses(in_cohort) == [
        f"RESEARCH_USE {grant} AGGREGATES",
        f"RESEARCH_USE {grant} SYNTHETIC_COHORT",
    ]
    assert await room.research_uses(outsider) == []


async def test_means_quantiles_and_histograms_are_released(room: BlackRoom) -> None:
    grant = await room.grant()
    mean = await room.run(
        grant,
        ai_alert_pb2.AggregateSpec(
            kind=ai_alert_pb2.AGGREGATE_KIND_MEAN, field="record_count", group_by=["hospital"]
        ),
        epsilon=0.3,
    )
    assert all(0 <= cell.value <= 200 for cell in mean.cells if not cell.suppressed)
    quantiles = await room.run(
        grant,
        ai_alert_pb2.AggregateSpec(
            kind=ai_alert_pb2.AGGREGATE_KIND_QUANTILES, field="span_days", quantiles=[0.5]
        ),
        epsilon=0.3,
    )
    assert len(quantiles.cells) == 1 and len(quantiles.cells[0].quantile_values) == 1
    histogram = await room.run(
        grant,
        ai_alert_pb2.AggregateSpec(
            kind=ai_alert_pb2.AGGREGATE_KIND_HISTOGRAM,
            field="record_count",
            bin_edges=[0, 3, 5, 7],
        ),
        epsilon=0.3,
    )
    # record_count is 2-6: bins [0, 3), [3, 5), [5, 7); nothing at 7 or above.
    assert [cell.bin for cell in histogram.cells] == ["0", "3", "5"]
    assert await room.spent(grant) == pytest.approx(0.9)


async def test_grouping_or_a_field_outside_the_grant_is_refused_and_spends_nothing(
    room: BlackRoom,
) -> None:
    grant = await room.grant()
    grouping = await failure(
        room.run(grant, ai_alert_pb2.AggregateSpec(kind=COUNT, group_by=["first_year"]))
    )
    assert (grouping.code, grouping.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "GROUPING_NOT_GRANTED",
    )
    assert "first_year" in grouping.message
    field = await failure(
        room.run(
            grant,
            ai_alert_pb2.AggregateSpec(
                kind=ai_alert_pb2.AGGREGATE_KIND_SUM, field="observation_count"
            ),
        )
    )
    assert (field.code, field.reason) == (grpc.StatusCode.PERMISSION_DENIED, "FIELD_NOT_GRANTED")
    assert await room.spent(grant) == 0.0


async def test_an_exhausted_budget_is_never_overspent_by_concurrent_queries(
    room: BlackRoom,
) -> None:
    grant = await room.grant()  # budget 1.0
    spec = ai_alert_pb2.AggregateSpec(kind=COUNT, group_by=["hospital"])
    outcomes = await asyncio.gather(
        *(room.run(grant, spec, epsilon=0.25) for _ in range(7)), return_exceptions=True
    )
    released = [
        outcome for outcome in outcomes if isinstance(outcome, ai_alert_pb2.AggregateResult)
    ]
    refused = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(released) == 4 and len(refused) == 3
    for error in refused:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "PRIVACY_BUDGET_EXHAUSTED" in str(error.trailing_metadata())
    assert await room.spent(grant) == pytest.approx(1.0)
    assert (await room.steps(grant)).count("AGGREGATE_RUN") == 4


async def test_another_researcher_and_an_expired_grant_are_refused(room: BlackRoom) -> None:
    grant = await room.grant()
    spec = ai_alert_pb2.AggregateSpec(kind=COUNT)
    other = await failure(room.run(grant, spec, principal=OTHER_RESEARCHER))
    assert (other.code, other.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_GRANT_HOLDER")
    room.clock.now += timedelta(days=91)
    expired = await failure(room.run(grant, spec))
    assert (expired.code, expired.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESEARCH_GRANT_EXPIRED",
    )
    assert await room.spent(grant) == 0.0


async def test_a_synthetic_cohort_keeps_its_distance_from_every_real_person(
    room: BlackRoom,
) -> None:
    grant = await room.grant()
    cohort = await room.alert.Synthesize(
        ai_alert_pb2.SynthesizeRequest(
            grant_name=grant, format=ai_alert_pb2.SYNTHETIC_FORMAT_PARQUET, seed=11
        ),
        metadata=room.auth(RESEARCHER),
    )
    privacy, utility = cohort.privacy, cohort.utility
    print(f"privacy report: {privacy}")
    print(f"utility report: {utility}")
    assert privacy.passed and privacy.exact_copies == 0
    assert privacy.min_distance_to_real >= DISTANCE_THRESHOLD == privacy.distance_threshold
    assert cohort.media_type == "application/vnd.apache.parquet"
    assert list(cohort.columns) == ["hospital", "first_year", "record_count", "span_days"]
    assert {marginal.field for marginal in utility.marginals} == {"record_count", "span_days"}
    assert utility.tstr_target == "record_count" and 0 <= utility.tstr_accuracy <= 1
    path = room.scratch / "cohort.parquet"
    path.write_bytes(cohort.content)
    with duckdb.connect() as connection:
        rows = connection.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
    assert len(rows) == cohort.row_count == 243 and all(len(row) == 4 for row in rows)
    assert (await room.steps(grant))[-1] == "COHORT_SYNTHESIZED"


async def test_an_aggregates_only_grant_gets_no_synthetic_cohort(room: BlackRoom) -> None:
    grant = await room.grant(output_kind=consent_pb2.RESEARCH_OUTPUT_KIND_AGGREGATES)
    refused = await failure(
        room.alert.Synthesize(
            ai_alert_pb2.SynthesizeRequest(grant_name=grant), metadata=room.auth(RESEARCHER)
        )
    )
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SYNTHETIC_NOT_GRANTED",
    )
