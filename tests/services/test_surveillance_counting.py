"""Issue 12, DM3 through the services: hospital messages submitted to ingest, counted by
ai-alert's forecast (ADR 30). Each message stores its ILI cases with its records; the
forecast reads them per local day and district."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from service_support import BearerAuth, RunningServices, both_backends, ts

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.ai_alert.app import SERVICE as AI_ALERT
from services.ai_alert.app import open_service as open_ai_alert
from services.archive.app import open_service as open_archive
from services.audit.app import open_service as open_audit
from services.consent.app import open_service as open_consent
from services.identity.app import open_service as open_identity
from services.ingest.app import SERVICE as INGEST
from services.ingest.app import open_service as open_ingest

HOSPITAL = "hospital-a"
ENGINE = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", HOSPITAL)
RESEARCHER = Principal(PrincipalKind.RESEARCHER, "res-1", purpose=Purpose.RESEARCH)
NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
VISIT_DAY = date(2026, 1, 10)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
FAMILIES = [
    "Abernathy",
    "Okonkwo",
    "Zhang",
    "Villanueva",
    "Kowalczyk",
    "Lindqvist",
    "Nakamura",
    "Fitzgerald",
    "Moreau",
    "Haddad",
]
GIVEN = [
    "Wilhelmina",
    "Chidi",
    "Xiulan",
    "Esperanza",
    "Bartosz",
    "Ingrid",
    "Haruto",
    "Declan",
    "Amelie",
    "Yusuf",
]
PATIENT_URL = "urn:uuid:7d0f6f2a-4a57-4a52-9d1c-2f1c7c1b0001"


def condition(
    code: str = "J10.1",
    recorded: str = "2026-01-10T10:00:00+08:00",
    verification: str = "confirmed",
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        },
        "code": {"coding": [{"system": ICD10, "code": code}]},
        "subject": {"reference": PATIENT_URL},
        "onsetDateTime": "2026-01-03T00:00:00+08:00",
        "recordedDate": recorded,
    }


def visit(mrn: str, district: str, *conditions: dict[str, Any]) -> bytes:
    """A FHIR transaction: one patient living in ``district`` and the visit's diagnoses."""
    number = int(mrn.removeprefix("H1-"))
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": "urn:oid:1.2.156.hospital-a.mrn",
                "value": mrn,
            }
        ],
        # Distinct people to identity's matching: names, birth dates and sex all differ.
        "name": [{"family": FAMILIES[number], "given": [GIVEN[number]]}],
        "gender": "female" if number % 2 else "male",
        "birthDate": f"{1960 + 3 * number}-{1 + number:02d}-{3 + 2 * number:02d}",
        "address": [{"use": "home", "city": "上海市", "district": district}],
    }
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": PATIENT_URL, "resource": patient},
                *({"resource": resource} for resource in conditions),
            ],
        }
    ).encode()


@dataclass
class Stack(BearerAuth):
    settings: Settings
    ingest: ingest_pb2_grpc.IngestServiceAsyncStub
    alert: ai_alert_pb2_grpc.AiAlertServiceAsyncStub

    async def submit(self, content: bytes, message_id: str) -> None:
        await self.ingest.Submit(
            ingest_pb2.SubmitRequest(
                hospital_id=HOSPITAL,
                message_id=message_id,
                format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                content=content,
            ),
            metadata=self.auth(ENGINE),
        )

    async def counted(self, day: date) -> tuple[float, dict[str, float]]:
        """The city's count of ``day`` and each district's (EARS C2's observed value)."""
        as_of = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        request = ai_alert_pb2.GetForecastRequest(horizon_days=1, history_days=7)
        request.as_of.CopyFrom(ts(as_of))
        answer = await self.alert.GetForecast(request, metadata=self.auth(RESEARCHER))
        by_district = {
            alarm.district: alarm.observed for alarm in answer.alarms if alarm.detector == "EARS C2"
        }
        return answer.history[-1].count, by_district


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("audit", open_audit(settings))
        await running.start(
            "identity", open_identity(settings, clients=running.clients(settings, "identity"))
        )
        await running.start("archive", open_archive(settings))
        await running.start(
            "consent", open_consent(settings, clients=running.clients(settings, "consent"))
        )
        await running.start(
            INGEST, open_ingest(settings, clients=running.clients(settings, INGEST))
        )
        await running.start(
            AI_ALERT,
            open_ai_alert(settings, clients=running.clients(settings, AI_ALERT), now=lambda: NOW),
        )
        yield Stack(
            settings=settings,
            ingest=ingest_pb2_grpc.IngestServiceStub(running.channel(INGEST)),
            alert=ai_alert_pb2_grpc.AiAlertServiceStub(running.channel(AI_ALERT)),
        )


@both_backends
async def test_a_visit_counts_once_however_often_it_is_sent_and_districts_apart(
    stack: Stack,
) -> None:
    # Two ILI diagnoses of one visit: one case.
    await stack.submit(visit("H1-1", "黄浦区", condition("J10.1"), condition("J11.1")), "m-1")
    # The same message resent: still one.
    await stack.submit(visit("H1-1", "黄浦区", condition("J10.1"), condition("J11.1")), "m-1")
    # An update of the same visit under a new message id: the same person, day and district.
    await stack.submit(visit("H1-1", "黄浦区", condition("J09")), "m-1-update")
    await stack.submit(visit("H1-2", "黄浦区", condition("J10.1")), "m-2")
    await stack.submit(visit("H1-3", "徐汇区", condition("J10.1")), "m-3")
    # No district in the address: counted as "unknown".
    await stack.submit(visit("H1-4", " ", condition("J10.1")), "m-4")

    city, districts = await stack.counted(VISIT_DAY)
    assert districts == {"city": 4, "黄浦区": 2, "徐汇区": 1, "unknown": 1}
    assert city == 4


@both_backends
async def test_refuted_entered_in_error_and_other_codes_do_not_count(stack: Stack) -> None:
    await stack.submit(visit("H1-5", "黄浦区", condition(verification="refuted")), "m-5")
    await stack.submit(visit("H1-6", "黄浦区", condition(verification="entered-in-error")), "m-6")
    await stack.submit(visit("H1-7", "黄浦区", condition("J45.9")), "m-7")
    assert await stack.counted(VISIT_DAY) == (0, {"city": 0})
    await stack.submit(visit("H1-8", "黄浦区", condition(verification="provisional")), "m-8")
    assert await stack.counted(VISIT_DAY) == (1, {"city": 1, "黄浦区": 1})


@both_backends
async def test_an_early_morning_visit_counts_on_its_local_day_and_j11_100_counts(
    stack: Stack,
) -> None:
    # 07:30 in Beijing is 23:30 UTC the day before: it counts on the 10th, its local day.
    early = condition("J11.100", recorded="2026-01-10T07:30:00+08:00")
    await stack.submit(visit("H1-9", "徐汇区", early), "m-9")
    assert await stack.counted(VISIT_DAY) == (1, {"city": 1, "徐汇区": 1})
    assert await stack.counted(VISIT_DAY - timedelta(days=1)) == (0, {"city": 0})
