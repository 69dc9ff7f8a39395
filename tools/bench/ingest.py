"""Ingest benchmark: FHIR bundles through the full flow (identity, sealing, store, audit)
against a fresh local stack, beside a baseline of bare gRPC health checks in the same run.

    python tools/bench/ingest.py [--messages 200] [--concurrency 8] [--engines embedded|real]

Prints messages/s and latency percentiles for both, so the cost of the flow is read
against the cost of a round trip on this machine, not against a number from elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import SECRET, Timed, bench_stack, new_run_id, timed

from healthbank.common.v1 import common_pb2
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient, submit
from healthbank.dev.devstack import LocalStack, check_health


def report(label: str, result: Timed) -> str:
    """One line of figures."""
    return (
        f"{label:<28} {result.per_second:8.1f}/s   p50 {result.p50:7.1f} ms"
        f"   p95 {result.percentile(0.95):7.1f} ms   n={len(result.latencies)}"
    )


async def run(stack: LocalStack, messages: int, concurrency: int) -> None:
    """Baseline (health checks) then ingest, same stack, same concurrency."""
    ingest = stack.addresses["ingest"]
    baseline = [lambda: check_health(ingest) for _ in range(messages)]
    print(report("baseline: Check, new channel", await timed(baseline, concurrency)))

    client = DemoClient(stack.addresses, SECRET.encode())
    fhir = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
    people = [synthetic.patient(i) for i in range(messages)]

    def message(person: synthetic.Patient) -> Callable[[], Awaitable[object]]:
        bundle = synthetic.emergency_history_bundle(person, f"bench-{person.mrn}")
        return lambda: submit(client, synthetic.HOSPITAL_A, fhir, bundle, f"bench-{person.mrn}")

    flow = await timed([message(person) for person in people], concurrency)
    print(report("ingest: Submit (3 records)", flow))
    await client.close()


def main() -> None:
    """Start a stack, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    args = parser.parse_args()
    with bench_stack(args.engines, new_run_id()) as (stack, _):
        print(f"{args.engines} engines, {args.messages} messages, concurrency {args.concurrency}")
        asyncio.run(run(stack, args.messages, args.concurrency))


if __name__ == "__main__":
    main()
