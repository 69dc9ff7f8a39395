"""Per-caller rate limits on the real ingest service (issue 15, done-means 5, its behaviour):
one hospital engine flooding Submit is refused RESOURCE_EXHAUSTED with RetryInfo, while
another engine's messages, sent during the flood, are all stored. (How the other engine's
latency holds up is a benchmark's question, not a test's.)"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import grpc.aio
from auth_support import auth_metadata
from service_support import RunningServices, service_settings

from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.dev import synthetic
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.rpc import error_details
from services.audit.app import open_service as open_audit
from services.identity.app import open_service as open_identity
from services.ingest.app import open_service as open_ingest

FLOODER = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", "hospital-a")
NEIGHBOUR = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-b-engine", "hospital-b")
FHIR = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
# Few tokens, slow refill: the flood runs out at once, the neighbour's few calls fit.
LIMITS = {
    "HEALTHBANK_RATE_LIMIT_HOSPITAL_ENGINE_PER_SECOND": "0.5",
    "HEALTHBANK_RATE_LIMIT_HOSPITAL_ENGINE_BURST": "4",
}


def message(hospital_id: str, index: int) -> ingest_pb2.SubmitRequest:
    person = synthetic.fresh_patient()
    message_id = f"{hospital_id}-flood-{index}"
    return ingest_pb2.SubmitRequest(
        hospital_id=hospital_id,
        message_id=message_id,
        format=FHIR,
        content=synthetic.emergency_history_bundle(person, message_id),
    )


async def test_a_flooding_engine_is_limited_while_another_engine_is_served(
    tmp_path: Path,
) -> None:
    settings = service_settings(tmp_path)
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("identity", open_identity(settings))
        await running.start("audit", open_audit(settings))
        ingest_settings = service_settings(tmp_path, LIMITS)
        await running.start(
            "ingest",
            open_ingest(ingest_settings, clients=running.clients(ingest_settings, "ingest")),
        )
        stub = ingest_pb2_grpc.IngestServiceStub(running.channel(running.addresses["ingest"]))

        async def submit(principal: Principal, index: int) -> grpc.StatusCode:
            try:
                await stub.Submit(
                    message(principal.hospital_id, index),
                    metadata=auth_metadata(settings, principal),
                    timeout=60,
                )
            except grpc.aio.AioRpcError as error:
                details = error_details(error)
                if details.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert details.reason == "RATE_LIMITED"
                    assert details.retry_delay is not None and details.retry_delay > 0
                return details.code
            return grpc.StatusCode.OK

        flood = [submit(FLOODER, index) for index in range(20)]
        neighbour = [submit(NEIGHBOUR, index) for index in range(3)]
        outcomes = await asyncio.gather(*flood, *neighbour)
        flooded, served = outcomes[:20], outcomes[20:]
        assert flooded.count(grpc.StatusCode.OK) <= 5  # its burst (and a refill at most)
        assert set(flooded) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert served == [grpc.StatusCode.OK] * 3
