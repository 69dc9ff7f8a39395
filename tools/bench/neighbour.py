"""Noisy-neighbour benchmark (issue 15, done-means 5): does one flooding hospital engine
slow another one down?

    python tools/bench/neighbour.py [--engines embedded|real] [--seconds 15]
                                    [--flood 32] [--pace 5] [--rate 10] [--burst 10]

Hospital B's engine sends one message every ``1/--pace`` s throughout; its Submit latency
is measured three ways, each on a fresh local stack (ingest as its own process):

1. alone, with per-caller rate limits of ``--rate`` messages/s (``--burst`` at once) per
   hospital engine: B's baseline;
2. while hospital A's engine floods ingest with ``--flood`` calls in flight, never pausing
   and never honouring RetryInfo (the worst engine), limits as in 1: A's RESOURCE_EXHAUSTED
   answers are counted;
3. the same flood with rate limits off: what the limits are protecting B from.

Every message is new content for a known patient (a 4-resource FHIR bundle). Figures are
printed, never asserted; the done-means bar is B's p99 under the flood within 2x of its
p99 alone, printed as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from percentiles import percentile
from run import SECRET, bench_stack, new_run_id

from healthbank.common.v1 import common_pb2
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient, submit
from healthbank.dev.devstack import LocalStack

FHIR = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
SPAWN_SECONDS = 5.0  # time for the flood process to start and import
STEADY_AFTER_SECONDS = 2.0  # the burst the limit admits at a flood's start is over by then


@dataclass
class Phase:
    """What one phase measured."""

    # (seconds into the phase when sent, ms) of each of B's messages answered OK
    neighbour_sent: list[tuple[float, float]] = field(default_factory=list)
    neighbour_errors: Counter[str] = field(default_factory=Counter)
    flood_answers: Counter[str] = field(default_factory=Counter)
    flood_seconds: float = 0.0

    @property
    def neighbour_ms(self) -> list[float]:
        """B's latencies (ms), in the order sent."""
        return [ms for _, ms in self.neighbour_sent]


def p99(values: list[float]) -> float:
    return percentile(values, 0.99)


async def neighbour(
    client: DemoClient, person: synthetic.Patient, pace: float, until: float, phase: Phase
) -> None:
    """Hospital B: one message every 1/pace s, on its own schedule (a late answer does not
    push the next send back, as a real engine's queue would not wait)."""
    sends: list[asyncio.Task[None]] = []
    counter = itertools.count()

    async def one(message_id: str) -> None:
        content = synthetic.emergency_history_bundle(person, message_id)
        started = time.perf_counter()
        try:
            await submit(client, synthetic.HOSPITAL_B, FHIR, content, message_id)
        except grpc.aio.AioRpcError as error:
            phase.neighbour_errors[error.code().name] += 1
            return
        phase.neighbour_sent.append((started - first_send, (time.perf_counter() - started) * 1000))

    next_send = time.monotonic()
    first_send = time.perf_counter()
    while next_send < until:
        sends.append(asyncio.ensure_future(one(f"nb-{time.time_ns()}-{next(counter)}")))
        next_send += 1 / pace
        await asyncio.sleep(max(0.0, next_send - time.monotonic()))
    await asyncio.gather(*sends)


async def flooder(
    addresses: dict[str, str], start_at: float, seconds: float, in_flight: int
) -> Counter[str]:
    """Hospital A at its worst: each of ``in_flight`` callers sends the next message the
    moment an answer arrives, whatever it was. The answers by status, and the CPU seconds
    this client itself used (under "client_cpu_ms": on this machine it shares the cores)."""
    client = DemoClient(addresses, SECRET.encode())
    person = synthetic.patient(1, "NBA")
    answers: Counter[str] = Counter()
    counter = itertools.count()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    until = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < until:
            message_id = f"fl-{time.time_ns()}-{next(counter)}"
            content = synthetic.emergency_history_bundle(person, message_id)
            try:
                await submit(client, synthetic.HOSPITAL_A, FHIR, content, message_id)
                answers["OK"] += 1
            except grpc.aio.AioRpcError as error:
                answers[error.code().name] += 1

    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(caller() for _ in range(in_flight)))
    finally:
        await client.close()
    answers["client_cpu_ms"] = round((time.process_time() - cpu_before) * 1000)
    return answers


def flood_process(
    addresses: dict[str, str], start_at: float, seconds: float, in_flight: int
) -> Counter[str]:
    """The flood in a process of its own (its client must not slow B's), from ``start_at``
    (wall clock) on."""
    return asyncio.run(flooder(addresses, start_at, seconds, in_flight))


async def run_phase(stack: LocalStack, seconds: float, pace: float, flood: int) -> Phase:
    client = DemoClient(stack.addresses, SECRET.encode())
    person_b = synthetic.patient(2, "NBB")
    try:
        # Both patients known and B's connections open before anything is timed.
        for hospital, person in (
            (synthetic.HOSPITAL_A, synthetic.patient(1, "NBA")),
            (synthetic.HOSPITAL_B, person_b),
        ):
            message_id = f"warm-{hospital.hospital_id}-{time.time_ns()}"
            content = synthetic.emergency_history_bundle(person, message_id)
            await submit(client, hospital, FHIR, content, message_id)
        phase = Phase()
        loop = asyncio.get_running_loop()
        # Both start together (the flood process takes a while to spawn): B sees the burst
        # the limit lets through at the flood's start as well as the steady state after it.
        start_at = time.time() + SPAWN_SECONDS
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            flooding = (
                loop.run_in_executor(pool, flood_process, stack.addresses, start_at, seconds, flood)
                if flood
                else None
            )
            await asyncio.sleep(max(0.0, start_at - time.time()))
            await neighbour(client, person_b, pace, time.monotonic() + seconds, phase)
            phase.flood_seconds = seconds
            if flooding is not None:
                phase.flood_answers = await flooding
        return phase
    finally:
        await client.close()


def limits(rate: float, burst: float) -> dict[str, str]:
    """The services' per-hospital-engine rate limit settings (0: off)."""
    return {
        "HEALTHBANK_RATE_LIMIT_HOSPITAL_ENGINE_PER_SECOND": str(rate),
        "HEALTHBANK_RATE_LIMIT_HOSPITAL_ENGINE_BURST": str(burst),
    }


def report(label: str, phase: Phase, alone: Phase | None) -> None:
    times, alone_times = phase.neighbour_ms, alone.neighbour_ms if alone is not None else []
    line = f"{label:<38}"
    if times:
        line += (
            f" B p50 {statistics.median(times):8.1f} ms  p99 {p99(times):8.1f} ms  n={len(times)}"
        )
    if phase.neighbour_errors:
        line += f"  B errors {dict(phase.neighbour_errors)}"
    if alone_times and times:
        line += f"  p99 x{p99(times) / p99(alone_times):.2f} of alone"
    print(line)
    steady = [ms for at, ms in phase.neighbour_sent if at >= STEADY_AFTER_SECONDS]
    if alone_times and steady:
        print(
            f"{'':<38} sent {STEADY_AFTER_SECONDS:g} s on: p99 {p99(steady):8.1f} ms"
            f"  x{p99(steady) / p99(alone_times):.2f} of alone"
        )
    slowest = sorted(phase.neighbour_sent, key=lambda sent: -sent[1])[:3]
    print(
        f"{'':<38} B's slowest (s into the phase: ms) "
        + ", ".join(f"{at:.1f}: {ms:.0f}" for at, ms in slowest)
    )
    if phase.flood_answers:
        answers = Counter(phase.flood_answers)
        cores = answers.pop("client_cpu_ms") / 1000 / phase.flood_seconds
        rates = {code: round(count / phase.flood_seconds, 1) for code, count in answers.items()}
        print(f"{'':<38} A answers/s {rates}; A's own client used {cores:.2f} cores")


def main() -> None:
    """Start a stack per phase, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--flood", type=int, default=32, help="A's calls in flight")
    parser.add_argument("--pace", type=float, default=5.0, help="B's messages a second")
    parser.add_argument("--rate", type=float, default=10.0, help="limit per engine, a second")
    parser.add_argument("--burst", type=float, default=10.0)
    args = parser.parse_args()
    run_id = new_run_id()
    print(
        f"{args.engines} engines; B sends {args.pace:g}/s; A floods with {args.flood} in flight;"
        f" {args.seconds:g} s a phase"
    )
    phases = (
        ("B alone (limits on)", args.rate, 0),
        ("B while A floods (limits on)", args.rate, args.flood),
        ("B while A floods (limits off)", 0.0, args.flood),
    )
    alone: Phase | None = None
    for number, (label, rate, flood) in enumerate(phases):
        # A run id per phase: each phase starts on empty keyspaces, as before.
        extra = limits(rate, args.burst if rate else 0.0)
        with bench_stack(args.engines, f"{run_id}_{number}", extra_env=extra) as (stack, _):
            phase = asyncio.run(run_phase(stack, args.seconds, args.pace, flood))
        report(label, phase, alone)
        alone = alone or phase


if __name__ == "__main__":
    main()
