"""The services' audit client over real gRPC: concurrent appends leave together in
AppendEvents calls, each caller gets its own event's leaf, and a bad event fails alone."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from service_support import answered_calls

from healthbank.audit.v1 import audit_pb2
from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.core.config import Settings
from healthbank.rpc import ServiceError
from healthbank.rpc.access_log import AccessLog
from healthbank.rpc.clients import service_client_factory
from services.audit.app import open_service

CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", hospital_id="hospital-a")
EVENTS = 40


def appended_calls(caplog: pytest.LogCaptureFixture, method: str) -> int:
    return answered_calls(caplog, f"healthbank.audit.v1.AuditService/{method}")


async def test_concurrent_records_share_calls_and_a_bad_event_fails_alone(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="healthbank.rpc.access")
    people = [f"{index:064x}" for index in range(EVENTS)]
    with_a_bad_one = [*people[: EVENTS // 2], "not-a-person-token", *people[EVENTS // 2 :]]
    async with open_service(settings) as host:
        port = await host.start(0)
        clients = service_client_factory(
            settings, "consent", addresses={"audit": f"127.0.0.1:{port}"}
        )
        log = AccessLog(clients=clients, service="consent", now=lambda: datetime.now(UTC))

        async def record_all(persons: list[str]) -> list[int | BaseException]:
            return await asyncio.gather(
                *(
                    log.record(CLINICIAN, audit_pb2.ACTION_CONSENT_CHANGE, p, [], basis="CONSENT")
                    for p in persons
                ),
                return_exceptions=True,
            )

        good = await record_all(people)
        calls = appended_calls(caplog, "AppendEvents") + appended_calls(caplog, "AppendEvent")
        mixed = await record_all(with_a_bad_one)
        await clients.close()
    # Every caller got its own leaf; the events that queued behind the first call left
    # together, in fewer calls than events.
    assert len(set(good)) == EVENTS and all(isinstance(leaf, int) for leaf in good), good
    assert appended_calls(caplog, "AppendEvents") >= 1
    assert calls < EVENTS
    # A batch refused for one event is sent again event by event: only that one fails.
    refused = mixed.pop(EVENTS // 2)
    assert isinstance(refused, ServiceError)
    assert refused.code.name == "INVALID_ARGUMENT"
    assert all(isinstance(leaf, int) for leaf in mixed), mixed
    assert len(set(mixed) | set(good)) == 2 * EVENTS
