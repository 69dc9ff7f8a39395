"""Isolation benchmark (ADR 18): does one huge message stall ingest, and does its memory return?

    python tools/bench/isolation.py [--engines embedded|real] [--segments 100000]
                                    [--messages 8] [--megabytes 60]

Against a fresh local stack (ingest as its own process):

1. Health-check latency on an idle ingest (the baseline), then while a ``--segments``-segment
   HL7 v2 message is parsed: p50 / p99 / max of sequential ``grpc.health`` Checks, side by side.
2. The same while ``--messages`` FHIR bundles of ``--megabytes`` each are stored one after
   the other (parse, sealing, storage writes), and ingest's resident memory (the service
   process, and with its parse workers) before, after them, and after a short settle.

Figures are printed, never asserted (timings and RSS depend on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from percentiles import percentile
from process_cpu import parse_stat
from run import SECRET, bench_stack, new_run_id

from healthbank.common.v1 import common_pb2
from healthbank.core.memory import resident_mib
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient, engine_principal
from healthbank.dev.devstack import LocalStack
from healthbank.ingest.v1 import ingest_pb2
from healthbank.rpc.clients import open_channel

INGEST = "healthbank.ingest.v1.IngestService"
LETTER_BYTES = 96 * 1024  # base64 makes each ~128 KiB in the bundle
MAX_ATTEMPTS = 5


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the fork server and parse workers)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = parse_stat(stat.read_text()).parent
        except OSError:
            continue
        parents.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def memory(pid: int) -> tuple[float, float]:
    """(service process, service process and its workers) RSS in MiB."""
    own = resident_mib(pid)
    return own, own + sum(resident_mib(child) for child in descendants(pid))


def latency_line(latencies: list[float]) -> str:
    """p50, p99 (nearest rank), max and count of ``latencies`` (ms) on one line."""
    return (
        f"p50 {statistics.median(latencies):7.2f} ms   p99 {percentile(latencies, 0.99):7.2f} ms"
        f"   max {max(latencies):8.2f} ms   n={len(latencies)}"
    )


async def checks(
    health: health_pb2_grpc.HealthStub, until: asyncio.Future[object] | int
) -> list[float]:
    """Sequential Check latencies (ms): ``until`` calls, or until the future is done."""
    latencies = []
    while (len(latencies) < until) if isinstance(until, int) else not until.done():
        started = time.perf_counter()
        await health.Check(health_pb2.HealthCheckRequest(service=INGEST))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure(stack: LocalStack, segments: int, messages: int, megabytes: int) -> None:
    client = DemoClient(stack.addresses, SECRET.encode())
    channel = open_channel(stack.addresses["ingest"])
    health = health_pb2_grpc.HealthStub(channel)
    hospital = synthetic.HOSPITAL_A
    auth = client.auth(engine_principal(hospital))
    person = synthetic.patient(7, mrn_prefix="ISO")

    baseline = await checks(health, 500)
    huge = synthetic.oru_with_segments(person, "iso-huge", hospital, segments)
    request = ingest_pb2.SubmitRequest(
        hospital_id=hospital.hospital_id,
        message_id="iso-huge",
        format=common_pb2.SOURCE_FORMAT_HL7V2,
        content=huge,
    )
    started = time.perf_counter()
    submit = asyncio.ensure_future(client.ingest.Submit(request, metadata=auth, timeout=600))
    during = await checks(health, submit)
    parse_seconds = time.perf_counter() - started
    outcome = "STORED"
    try:
        await submit
    except grpc.aio.AioRpcError as refused:  # the last OBX has no code: refused after the parse
        outcome = refused.code().name
    print(f"Check, idle ingest (baseline)      {latency_line(baseline)}")
    print(f"Check, while {segments} segments parse  {latency_line(during)}")
    print(f"  the huge message: {len(huge) / 1e6:.1f} MB, {outcome} after {parse_seconds:.1f} s")

    pid = stack.services["ingest"].process.pid
    letters = max(1, megabytes * 1024 * 1024 // (LETTER_BYTES * 4 // 3))
    # Built first: building one holds this process's GIL for seconds, which would show as
    # slow Checks that ingest never caused.
    bundles = [
        synthetic.scanned_letters_bundle(person, f"iso-big-{n}", letters, LETTER_BYTES)
        for n in range(messages)
    ]
    before = memory(pid)
    peak = before

    retries = 0

    async def store_bundles() -> None:
        nonlocal peak, retries
        for n, bundle in enumerate(bundles):
            submit_request = ingest_pb2.SubmitRequest(
                hospital_id=hospital.hospital_id,
                message_id=f"iso-big-{n}",
                format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                content=bundle,
            )
            # As a hospital engine does: UNAVAILABLE (e.g. a Cassandra write timeout on a
            # busy machine) is retried, and the retry completes the message once.
            for attempt in range(MAX_ATTEMPTS):
                try:
                    await client.ingest.Submit(submit_request, metadata=auth, timeout=600)
                    break
                except grpc.aio.AioRpcError as failed:
                    if failed.code() != grpc.StatusCode.UNAVAILABLE or attempt + 1 == MAX_ATTEMPTS:
                        raise
                    retries += 1
            # Scanning /proc takes a while: not on the loop that times the Checks.
            now = await asyncio.to_thread(memory, pid)
            peak = (max(peak[0], now[0]), max(peak[1], now[1]))

    started = time.perf_counter()
    storing = asyncio.ensure_future(store_bundles())
    while_stored = await checks(health, storing)
    await storing  # every bundle stored (a refusal ends the run)
    store_seconds = time.perf_counter() - started
    label = f"while {messages} x {megabytes} MB bundles are stored"
    print(f"Check, {label}  {latency_line(while_stored)}")
    print(
        f"  {messages} bundles of {letters} letters stored in {store_seconds:.1f} s"
        f" ({retries} UNAVAILABLE answers retried)"
    )
    after = memory(pid)
    await asyncio.sleep(5)
    settled = memory(pid)
    print(f"ingest RSS MiB (process / with parse workers), {messages} x {megabytes} MB bundles:")
    for label, figure in (("before", before), ("peak", peak), ("after", after), ("+5 s", settled)):
        print(f"  {label:<7} {figure[0]:8.1f} / {figure[1]:8.1f}")
    await channel.close()
    await client.close()


def main() -> None:
    """Start a stack, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=60)
    args = parser.parse_args()
    with bench_stack(args.engines, new_run_id()) as (stack, _):
        print(f"{args.engines} engines")
        asyncio.run(measure(stack, args.segments, args.messages, args.megabytes))


if __name__ == "__main__":
    main()
