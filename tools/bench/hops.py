"""Where an emergency read's time goes when nothing else runs: one call at a time, each
layer of the path beside a bare gRPC round trip measured in the same run.

    python tools/bench/hops.py [--engines real] [--calls 200] [--json]

Rows, each the median and 90th percentile of ``--calls`` sequential calls:

- ``bare aio Check``: a grpc.aio health server with nothing else in it, in its own
  process (the floor of one hop on this machine);
- ``service Check``: the health Check of the audit service (our interceptors, no work);
- ``audit AppendEvent``: one event, as record-lookup appends it (one group-commit batch);
- ``identity LookupByNationalId``: a known patient, as record-lookup asks (its own read
  and its own audit event);
- ``consent BreakGlass``: as the emergency clinician (its audit event and its session);
- ``GetEmergencySummary``: the whole read (the three calls above, record-lookup's own
  audit event, the facts).

Under concurrency the calls queue behind each other; this shows the length of the chain
each one waits on. See tools/bench/run.py for throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import SECRET, bench_stack, new_run_id

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.ids import new_ulid
from healthbank.dev import synthetic
from healthbank.dev.demo import EMERGENCY_B, DemoClient, submit
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc.clients import open_channel

RECORD_LOOKUP = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
JUSTIFICATION = "benchmark: unconscious on arrival"
WARM_UP = 10


async def serve_bare() -> None:
    """A grpc.aio server with only the health service; prints its port."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def sequential(call: Callable[[], Awaitable[object]], calls: int) -> tuple[float, float]:
    """Median and 90th percentile (ms) of ``calls`` calls made one after another."""
    for _ in range(WARM_UP):
        await call()
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.9) - 1]


async def bare_check(calls: int) -> tuple[float, float]:
    """The bare aio server's health Check, served from a process of its own."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-bare", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(await server.stdout.readline())
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return await sequential(lambda: stub.Check(health_pb2.HealthCheckRequest()), calls)
    finally:
        server.kill()
        await server.wait()


def access_event(person_token: str) -> audit_pb2.AppendEventRequest:
    """One read event, as record-lookup logs a history read."""
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_CLINICIAN,
            subject="dr-hops",
            hospital_id=synthetic.HOSPITAL_B.hospital_id,
            purpose=common_pb2.PURPOSE_OF_USE_TREATMENT,
        ),
        action=audit_pb2.ACTION_READ_HISTORY,
        person_token=person_token,
        resource_names=[f"persons/{person_token}"],
        basis="GRANT",
    )
    event.occur_time.GetCurrentTime()
    return audit_pb2.AppendEventRequest(event=event)


async def measure(addresses: dict[str, str], calls: int) -> dict[str, tuple[float, float]]:
    """Each row of the module docstring against the stack at ``addresses``."""
    rows = {"bare aio Check": await bare_check(calls)}
    client = DemoClient(addresses, SECRET.encode())
    identity_channel = open_channel(addresses["identity"])
    audit_channel = open_channel(addresses["audit"])
    try:
        patient = synthetic.fresh_patient()
        message_id = f"hops-{patient.mrn}"
        stored = await submit(
            client,
            synthetic.HOSPITAL_A,
            common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
            synthetic.emergency_history_bundle(patient, message_id),
            message_id,
        )
        if stored.outcome != ingest_pb2.OUTCOME_STORED:
            raise RuntimeError("the patient was not stored")
        token = stored.person_token
        audit_health = health_pb2_grpc.HealthStub(audit_channel)
        identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
        as_lookup, as_emergency = client.auth(RECORD_LOOKUP), client.auth(EMERGENCY_B)
        rows["service Check"] = await sequential(
            lambda: audit_health.Check(health_pb2.HealthCheckRequest()), calls
        )
        rows["audit AppendEvent"] = await sequential(
            lambda: client.audit.AppendEvent(access_event(token), metadata=as_lookup), calls
        )
        lookup = identity_pb2.LookupByNationalIdRequest(national_id=patient.national_id)
        rows["identity LookupByNationalId"] = await sequential(
            lambda: identity.LookupByNationalId(lookup, metadata=as_lookup), calls
        )
        glass = consent_pb2.BreakGlassRequest(person_token=token, justification=JUSTIFICATION)
        rows["consent BreakGlass"] = await sequential(
            lambda: client.consent.BreakGlass(glass, metadata=as_emergency), calls
        )
        summary = record_lookup_pb2.GetEmergencySummaryRequest(
            national_id=patient.national_id, justification=JUSTIFICATION
        )
        rows["GetEmergencySummary"] = await sequential(
            lambda: client.lookup.GetEmergencySummary(summary, metadata=as_emergency), calls
        )
    finally:
        await identity_channel.close()
        await audit_channel.close()
        await client.close()
    return rows


def main() -> None:
    """Start a stack, measure each row, stop it, print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    parser.add_argument("--calls", type=int, default=200, help="sequential calls per row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare())
        return
    with bench_stack(args.engines, new_run_id()) as (stack, _):
        rows = asyncio.run(measure(stack.addresses, args.calls))
    if args.json:
        print(
            json.dumps({name: {"p50_ms": p50, "p90_ms": p90} for name, (p50, p90) in rows.items()})
        )
        return
    print(f"{args.engines} engines, {args.calls} sequential calls per row")
    print(f"{'call':32s} {'p50 ms':>8s} {'p90 ms':>8s} {'x bare':>7s}")
    bare = rows["bare aio Check"][0]
    for name, (p50, p90) in rows.items():
        print(f"{name:32s} {p50:8.2f} {p90:8.2f} {p50 / bare:7.1f}")


if __name__ == "__main__":
    main()
