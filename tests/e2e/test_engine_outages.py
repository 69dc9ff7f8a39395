"""Engine outages on the real engines, with the seven services running as processes:
OpenBao or Cassandra down → UNAVAILABLE (retryable), nothing half-written, and service
again once the engine is back, without restarting any service; Redis down → reads
still succeed, uncached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType
from typing import TypeVar

import grpc
import pytest
from e2e_support import AUTH_SECRET, real_engine_settings, start_stack, stop_stack

from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2
from healthbank.dev import synthetic
from healthbank.dev.demo import (
    CLINICIAN_B,
    DemoClient,
    patient_principal,
    scenario_a,
    scenario_b,
    submit,
)
from healthbank.dev.devstack import LocalStack, check_health
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc import error_details

T = TypeVar("T")


@pytest.fixture(scope="module")
def stack(
    engines: dict[str, str], module_keyspace_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    env = real_engine_settings(engines, module_keyspace_prefix)
    # No data-key reuse: every seal and open asks OpenBao, so its outage shows at once.
    env["HEALTHBANK_DATA_KEY_CACHE_SECONDS"] = "0"
    started = start_stack(tmp_path_factory.mktemp("outage-stack"), env)
    yield started
    stop_stack(started)


async def eventually(attempt: Callable[[], Awaitable[T]], seconds: float = 90.0) -> T:
    """Retry ``attempt`` on UNAVAILABLE until it succeeds (a client's retry loop)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await attempt()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def history(client: DemoClient, person_token: str) -> list[common_pb2.Record]:
    request = record_lookup_pb2.GetHistoryRequest(parent=f"persons/{person_token}")
    stream = client.lookup.GetHistory(request, metadata=client.auth(CLINICIAN_B), timeout=30)
    return [item.record async for item in stream]


def glucose(person: synthetic.Patient) -> tuple[bytes, str]:
    message_id = f"glucose-{person.mrn}"
    values = [("2024-01-05T08:00:00Z", 5.9), ("2025-01-07T08:00:00Z", 6.3)]
    return synthetic.glucose_bundle(person, message_id, values), message_id


async def health_becomes(address: str, status: str, seconds: float) -> bool:
    """Poll grpc.health.v1 until ``status`` is reported (True) or ``seconds`` pass."""
    for _ in range(int(seconds * 2)):
        if await check_health(address) == status:
            return True
        await asyncio.sleep(0.5)
    return await check_health(address) == status


async def expect_unavailable(call: Awaitable[object]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE, details
    assert details.retry_delay is not None


async def test_openbao_outage(stack: LocalStack, engines_tool: ModuleType) -> None:
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(21)
    content, message_id = glucose(person)
    fhir = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
    try:
        before = await scenario_a(client, person)
        engines_tool.down(only="vault")
        try:
            await expect_unavailable(
                submit(client, synthetic.HOSPITAL_A, fhir, content, message_id)
            )
            await expect_unavailable(history(client, before.person_token))
        finally:
            engines_tool.up(only="vault")
        # Back without restarting a service. STORED, not DUPLICATE: nothing was half-written.
        ack = await eventually(
            lambda: submit(client, synthetic.HOSPITAL_A, fhir, content, message_id)
        )
        assert ack.outcome == ingest_pb2.OUTCOME_STORED
        records = await eventually(lambda: history(client, before.person_token))
        assert len(records) == len(before.history) + 2
        assert all(record.fhir_json for record in records)
    finally:
        await client.close()


async def test_redis_outage_reads_still_succeed(
    stack: LocalStack, engines_tool: ModuleType
) -> None:
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(22)
    try:
        before = await scenario_a(client, person)
        engines_tool.down(only="redis")
        try:
            emergency = await scenario_b(client, person, before.person_token)
            assert emergency.summary.light == record_lookup_pb2.LIGHT_RED
            assert len(await history(client, before.person_token)) == len(before.history)
        finally:
            engines_tool.up(only="redis")
    finally:
        await client.close()


async def test_cassandra_outage(stack: LocalStack, engines_tool: ModuleType) -> None:
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(23)
    content, message_id = glucose(person)
    fhir = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
    ingest = stack.services["ingest"].address
    try:
        engines_tool.down(only="cassandra")
        try:
            await expect_unavailable(
                submit(client, synthetic.HOSPITAL_A, fhir, content, message_id)
            )
            # Health follows the engine: the load balancer stops sending traffic.
            assert await health_becomes(ingest, "NOT_SERVING", seconds=15)
        finally:
            engines_tool.up(only="cassandra")
        ack = await eventually(
            lambda: submit(client, synthetic.HOSPITAL_A, fhir, content, message_id)
        )
        assert ack.outcome == ingest_pb2.OUTCOME_STORED
        assert await health_becomes(ingest, "SERVING", seconds=30)
    finally:
        await client.close()


async def test_new_allergy_reaches_a_cached_summary_at_once(stack: LocalStack) -> None:
    """The summary is cached in Redis; ingest invalidates it when new facts arrive."""
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(24)
    try:
        before = await scenario_a(client, person)
        first = await scenario_b(client, person, before.person_token)  # now cached
        assert len(first.summary.allergies) == 1
        adt_id = f"adt-{person.mrn}"
        adt = synthetic.adt_a04(person, adt_id, synthetic.HOSPITAL_B)
        ack = await submit(
            client, synthetic.HOSPITAL_B, common_pb2.SOURCE_FORMAT_HL7V2, adt, adt_id
        )
        assert ack.outcome == ingest_pb2.OUTCOME_STORED
        second = await scenario_b(client, person, before.person_token)
        assert len(second.summary.allergies) == 2
    finally:
        await client.close()


async def test_revoked_grant_denies_at_once_despite_the_cache(stack: LocalStack) -> None:
    """Consent caches a person's grants in Redis; revoking one must deny the very next read."""
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    person = synthetic.patient(25)
    try:
        granted = await scenario_a(client, person)
        assert await history(client, granted.person_token)  # grants now cached
        await client.consent.RevokeGrant(
            consent_pb2.RevokeGrantRequest(name=granted.grant_name),
            metadata=client.auth(patient_principal(granted.person_token)),
            timeout=30,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await history(client, granted.person_token)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(raised.value).reason == "GRANT_REVOKED"
    finally:
        await client.close()
