"""A sustained mixed load on the seven services, read beside a bare health Check of the same
run, with each service's memory sampled every second.

    python tools/bench/load.py [--seconds 60] [--clients 8] [--mix ingest=70,history=25,emergency=5]
                               [--seed 1] [--engines embedded|real] [--max-growth-mib 64]
                               [--report DIR] [--json]

Starts a fresh stack as tools/bench/run.py does (:func:`run.bench_stack`: embedded engines by
default; on ``real``, tools/engines' engines with a new keyspace prefix, dropped afterwards),
stores a few patients (``--seed-patients``, before anything is measured), then:

1. the baseline: ``--checks`` bare grpc.health Checks on ingest, one after the other;
2. for ``--seconds``, ``--clients`` closed-loop clients: each picks its next operation by the
   weighted ``--mix`` with a random generator of its own (seeded from ``--seed`` and its
   number) and calls again as soon as the answer is in:

   - ``ingest``: a Submit of a FHIR bundle by hospital A's engine, a new message id each
     time; one time in four a new patient's emergency bundle (the patient, an allergy, a
     surgery, a condition), otherwise three glucose results for a patient already stored;
   - ``history``: a patient's own GetHistory (the patient's token), the stream read to its
     end;
   - ``emergency``: GetEmergencySummary by hospital B's emergency room for a patient already
     stored;

   reads pick among the patients whose messages were acknowledged. A call that does not
   answer OK is counted by operation and status code (an ingest answered OK but not
   STORED by its outcome, ``OUTCOME_...``) and not retried: the client pauses 0.1 s and
   picks again. Latencies are of the calls that answered OK;
3. the baseline again.

Each service process's resident memory (healthbank.core.memory.resident_mib) is sampled
every second during the load; on ``real`` engines also Cassandra's, OpenBao's and Redis's
when tools/engines' pidfiles name them.

A process's memory *grows* (see :func:`memory_growth`) when, over the second half of the
load, both hold:

- the least-squares line through that half's samples rises by more than
  ``--max-growth-mib`` from the half's first sample time to its last (it kept rising, not
  one spike), and
- the median of the last quarter is above the median of the third quarter by more than a
  quarter of ``--max-growth-mib`` (it was still rising at the end: a step that levelled off
  in the third quarter, or a warm-up that ended, is not growth).

A steady leak of r MiB/s over a second half of H seconds passes both once r·H exceeds the
limit (the medians then differ by about r·H/2); a process that settled before the end does
not. Fewer than four samples in the second half give ``too short``. So a slow leak may
need a longer run to show: the limit is on what one run's last half added.

Prints a table (per operation: calls, calls/s, p50/p99/p999 latency, errors by code; the
baseline's p50/p99 before and after; each process's RSS at the start, middle and end, the
second half's fitted rise and the verdict). ``--json`` prints one JSON object instead.
``--report DIR`` also writes ``report.md`` (the tables, the settings, the machine),
``result.json`` (what ``--json`` prints) and, when
matplotlib is installed, ``throughput.png`` (calls per second and p50/p99 latency over time,
drawn by tools/chaos/run.py's chart) and ``memory.png``.

Exits 1 if a service's memory grows or any call answered INTERNAL or UNKNOWN (the engines'
verdicts are shown, not judged: a JVM's heap filling toward its maximum is not a leak of
ours).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from percentiles import percentile
from run import FHIR, SECRET, bench_stack, new_run_id, run_patient, timed

from healthbank.dev import synthetic
from healthbank.dev.demo import EMERGENCY_B, DemoClient, patient_principal, submit
from healthbank.dev.devstack import LocalStack
from healthbank.dev.scripts import load_script
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc.clients import open_channel

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = ("ingest", "history", "emergency")
DEFAULT_MIX = "ingest=70,history=25,emergency=5"
NEW_PATIENT_SHARE = 0.25  # of ingest messages; the others add results to a stored patient
GLUCOSE_RESULTS = 3
ERROR_PAUSE_S = 0.1
CALL_TIMEOUT_S = 30.0
ENGINE_PROCESSES = ("cassandra", "vault", "redis")
BROKEN = ("INTERNAL", "UNKNOWN")


# tools/chaos/run.py (a script, not a package), loaded by path once: its run record, memory
# sampler and chart are this benchmark's too.
CHAOS_RUN = "healthbank_tools_chaos_run"
CHAOS = sys.modules.get(CHAOS_RUN) or load_script(REPO / "tools" / "chaos" / "run.py", CHAOS_RUN)


# --- the mix -------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``ingest=70,history=25,emergency=5`` -> weights by operation (every operation named;
    one left out weighs 0). Raises ValueError on an unknown operation, a repeated one, a
    weight that is not a non-negative number, or weights that are all zero."""
    weights = dict.fromkeys(OPERATIONS, 0.0)
    seen: set[str] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name = name.strip()
        if not equals:
            raise ValueError(f"{part.strip()!r}: write operation=weight")
        if name not in weights:
            raise ValueError(f"unknown operation {name!r}; choose from {', '.join(OPERATIONS)}")
        if name in seen:
            raise ValueError(f"{name} named twice")
        seen.add(name)
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{name}: weight {value.strip()!r} is not a number") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"{name}: weight {value.strip()} must be a finite number >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("every weight is zero: nothing to run")
    return weights


def mix_argument(text: str) -> dict[str, float]:
    """parse_mix for argparse (its errors as usage errors)."""
    try:
        return parse_mix(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def client_rng(seed: int, client: int) -> random.Random:
    """The random generator of one client: the same seed and number, the same choices."""
    return random.Random(f"{seed}/{client}")


def pick(mix: Mapping[str, float], rng: random.Random) -> str:
    """One operation, drawn with ``mix``'s weights (a weight of 0 is never drawn)."""
    names = [name for name, weight in mix.items() if weight > 0]
    return rng.choices(names, weights=[mix[name] for name in names])[0]


# --- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    """One process's RSS over the load and the verdict on it (MiB)."""

    start: float
    middle: float
    end: float
    rise: float  # the least-squares line's rise across the second half
    tail_step: float  # median of the last quarter minus median of the third
    verdict: str  # "grows", "steady" or "too short"


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (time, value) samples (0 for fewer than two distinct times)."""
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    mean_t = statistics.fmean(times)
    mean_v = statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread


def memory_growth(samples: Sequence[tuple[float, float]], limit_mib: float) -> Growth:
    """The verdict of the module docstring on (seconds, MiB) samples."""
    # Not tools/chaos/run.py's rule (latest max against the first quarter's, 150 MiB): no
    # process restarts here, so a line fitted through the second half can tell a process
    # still rising from one that took a step or a warm-up and then held.
    if not samples:
        return Growth(0.0, 0.0, 0.0, 0.0, 0.0, "too short")
    ordered = sorted(samples)
    first, last = ordered[0][0], ordered[-1][0]
    half = (first + last) / 2
    quarter = (half + last) / 2
    late = [s for s in ordered if s[0] >= half]
    middle = min(ordered, key=lambda s: abs(s[0] - half))[1]
    start, end = ordered[0][1], ordered[-1][1]
    third = [v for t, v in late if t < quarter]
    fourth = [v for t, v in late if t >= quarter]
    if len(late) < 4 or not third or not fourth:
        return Growth(start, middle, end, 0.0, 0.0, "too short")
    rise = slope(late) * (late[-1][0] - late[0][0])
    tail_step = statistics.median(fourth) - statistics.median(third)
    grows = rise > limit_mib and tail_step > limit_mib / 4
    return Growth(start, middle, end, rise, tail_step, "grows" if grows else "steady")


def engine_pids() -> dict[str, int]:
    """The real engines' pids from tools/engines' pidfiles (those it can read)."""
    config = CHAOS.load_engines_tool().Config.load()
    pids = {}
    for name in ENGINE_PROCESSES:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids[name] = int(config.pidfile(name).read_text().split()[0])
    return pids


# --- the load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What one run does."""

    seconds: float = 60.0
    clients: int = 8
    mix: Mapping[str, float] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    seed: int = 1
    engines: str = "embedded"
    checks: int = 300
    seed_patients: int = 8
    max_growth_mib: float = 64.0


@dataclass
class Stored:
    """A patient whose message was acknowledged, and the token it was stored under."""

    patient: synthetic.Patient
    token: str


class Load:
    """The clients of one run and what they saw."""

    def __init__(self, client: DemoClient, settings: Settings, run_id: str) -> None:
        self.client = client
        self.settings = settings
        self.run_id = run_id
        # done: (seconds since the load started, operation, latency s); memory: per process
        # (seconds, MiB). Made anew when the load starts (after the seeding and baseline).
        self.run = CHAOS.Run()
        self.errors: dict[str, Counter[str]] = {name: Counter() for name in OPERATIONS}
        self.stored: list[Stored] = []
        self.history_records = 0
        self._next_patient = 0
        self._messages = 0

    def new_patient(self) -> synthetic.Patient:
        """A patient no message named yet."""
        self._next_patient += 1
        return run_patient(self.run_id, self._next_patient)

    def message_id(self, client: int) -> str:
        """A message id never sent before."""
        self._messages += 1
        return f"load-{self.run_id}-{client}-{self._messages}"

    async def store_new_patient(self, client: int) -> ingest_pb2.SubmitResponse:
        """Submit a new patient's emergency bundle; remember the patient once STORED."""
        person = self.new_patient()
        message_id = self.message_id(client)
        content = synthetic.emergency_history_bundle(person, message_id)
        response = await submit(self.client, synthetic.HOSPITAL_A, FHIR, content, message_id)
        if response.outcome == ingest_pb2.OUTCOME_STORED:
            self.stored.append(Stored(person, response.person_token))
        return response

    async def ingest(self, rng: random.Random, client: int) -> str | None:
        """One Submit; the outcome's name when it was not STORED."""
        if not self.stored or rng.random() < NEW_PATIENT_SHARE:
            response = await self.store_new_patient(client)
        else:
            person = rng.choice(self.stored).patient
            message_id = self.message_id(client)
            start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=self._messages)
            values = [
                ((start + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ"), 4.5 + rng.random())
                for k in range(GLUCOSE_RESULTS)
            ]
            content = synthetic.glucose_bundle(person, message_id, values)
            response = await submit(self.client, synthetic.HOSPITAL_A, FHIR, content, message_id)
        if response.outcome == ingest_pb2.OUTCOME_STORED:
            return None
        return str(ingest_pb2.Outcome.Name(response.outcome))

    async def history(self, rng: random.Random, client: int) -> str | None:
        """A stored patient's own history, read to the end of the stream."""
        stored = rng.choice(self.stored)
        request = record_lookup_pb2.GetHistoryRequest(parent=f"persons/{stored.token}")
        auth = self.client.auth(patient_principal(stored.token))
        async for _ in self.client.lookup.GetHistory(
            request, metadata=auth, timeout=CALL_TIMEOUT_S
        ):
            self.history_records += 1
        return None

    async def emergency(self, rng: random.Random, client: int) -> str | None:
        """An emergency room's summary of a stored patient."""
        person = rng.choice(self.stored).patient
        request = record_lookup_pb2.GetEmergencySummaryRequest(
            national_id=person.national_id, justification="load benchmark: unconscious on arrival"
        )
        await self.client.lookup.GetEmergencySummary(
            request, metadata=self.client.auth(EMERGENCY_B), timeout=CALL_TIMEOUT_S
        )
        return None

    async def seed(self) -> None:
        """Store ``seed_patients`` patients before anything is measured (reads need them)."""
        responses = await asyncio.gather(
            *(self.store_new_patient(-1) for _ in range(self.settings.seed_patients))
        )
        refused = [r for r in responses if r.outcome != ingest_pb2.OUTCOME_STORED]
        if refused:
            raise RuntimeError(f"{len(refused)} seed patients were not stored")

    async def client_loop(self, number: int, deadline: float) -> None:
        """One closed-loop client until ``deadline`` (monotonic)."""
        rng = client_rng(self.settings.seed, number)
        calls: dict[str, Callable[[random.Random, int], Awaitable[str | None]]] = {
            "ingest": self.ingest,
            "history": self.history,
            "emergency": self.emergency,
        }
        while time.monotonic() < deadline:
            operation = pick(self.settings.mix, rng)
            started = time.monotonic()
            try:
                refused = await calls[operation](rng, number)
            except grpc.aio.AioRpcError as error:
                self.errors[operation][error.code().name] += 1
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            if refused is not None:
                self.errors[operation][refused] += 1
                continue
            self.run.done.append((self.run.now(), operation, time.monotonic() - started))


async def baseline(address: str, calls: int) -> dict[str, float]:
    """``calls`` bare grpc.health Checks on one channel, one after the other."""
    async with open_channel(address) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        await health.Check(request, timeout=10)  # the connection, not measured
        checks = await timed([lambda: health.Check(request, timeout=10)] * calls, 1)
    return {
        "count": calls,
        "per_s": checks.per_second,
        "p50_ms": checks.percentile(0.5),
        "p99_ms": checks.percentile(0.99),
    }


def operation_figures(
    done: Sequence[tuple[float, str, float]],
    errors: Mapping[str, Counter[str]],
    seconds: float,
    mix: Mapping[str, float],
) -> dict[str, dict[str, Any]]:
    """Per operation of the mix: calls answered OK, per second, p50/p99/p999 (ms), errors
    by code (None for a latency with no call)."""
    figures: dict[str, dict[str, Any]] = {}
    for name in OPERATIONS:
        if mix.get(name, 0) <= 0 and not errors.get(name):
            continue
        latencies = [latency * 1000 for _, kind, latency in done if kind == name]
        figures[name] = {
            "count": len(latencies),
            "per_s": len(latencies) / seconds if seconds > 0 else 0.0,
            **{
                key: percentile(latencies, fraction) if latencies else None
                for key, fraction in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999))
            },
            "errors": dict(sorted(errors.get(name, Counter()).items())),
        }
    return figures


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


async def measure(stack: LocalStack, settings: Settings, run_id: str) -> tuple[dict[str, Any], Any]:
    """Seed, baseline, load with memory sampled, baseline: the figures of one run, and its
    record (a tools/chaos/run.py ``Run``: the calls and memory samples over time)."""
    client = DemoClient(stack.addresses, SECRET.encode())
    load = Load(client, settings, run_id)
    ingest_address = stack.addresses["ingest"]
    try:
        await load.seed()
        before = await baseline(ingest_address, settings.checks)
        load1_before = os.getloadavg()[0]
        started_utc = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        load.run = CHAOS.Run()
        stop = asyncio.Event()
        engines = engine_pids() if settings.engines == "real" else {}
        # tools/chaos/run.py's sampler: the services running at each tick, then the engines.
        sampler = asyncio.create_task(
            CHAOS.sample_memory(lambda: {**CHAOS.service_pids(stack), **engines}, load.run, stop)
        )
        deadline = time.monotonic() + settings.seconds
        await asyncio.gather(*(load.client_loop(n, deadline) for n in range(settings.clients)))
        seconds = load.run.now()
        stop.set()
        await sampler
        load1_after = os.getloadavg()[0]
        after = await baseline(ingest_address, settings.checks)
    finally:
        await client.close()
    memory: dict[str, dict[str, Any]] = {}
    for name, samples in load.run.memory.items():
        growth = memory_growth(samples, settings.max_growth_mib)
        memory[name] = {
            "kind": "engine" if name in ENGINE_PROCESSES else "service",
            "start_mib": growth.start,
            "middle_mib": growth.middle,
            "end_mib": growth.end,
            "rise_last_half_mib": growth.rise,
            "last_quarter_step_mib": growth.tail_step,
            "verdict": growth.verdict,
            "samples": [[round(t, 2), round(m, 1)] for t, m in samples],
        }
    operations = operation_figures(load.run.done, load.errors, seconds, settings.mix)
    if "history" in operations:
        operations["history"]["records_read"] = load.history_records
    result = {
        "engines": settings.engines,
        "started_utc": started_utc,  # when the load started
        "settings": {
            "seconds": settings.seconds,
            "clients": settings.clients,
            "mix": dict(settings.mix),
            "seed": settings.seed,
            "checks": settings.checks,
            "seed_patients": settings.seed_patients,
            "max_growth_mib": settings.max_growth_mib,
        },
        "machine": machine(),
        "seconds": seconds,
        "operations": operations,
        "per_second": CHAOS.per_second(load.run.done, seconds),
        "baseline": {"before": before, "after": after},
        "patients_stored": len(load.stored),
        "memory": memory,
        "load1": {"before": load1_before, "after": load1_after},
    }
    result["failures"] = failures(result)
    return result, load.run


def failures(result: Mapping[str, Any]) -> list[str]:
    """Why the run fails: a service whose memory grows, a call answered INTERNAL/UNKNOWN."""
    found = [
        f"{name}: memory grows ({figures['rise_last_half_mib']:+.0f} MiB over the last half)"
        for name, figures in result["memory"].items()
        if figures["kind"] == "service" and figures["verdict"] == "grows"
    ]
    for name, figures in result["operations"].items():
        broken = {code: n for code, n in figures["errors"].items() if code in BROKEN}
        found += [f"{name}: {n} answered {code}" for code, n in broken.items()]
    return found


# --- output ---------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    """A latency for the table."""
    return "n/a" if value is None else f"{value:,.1f}"


def operations_table(operations: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The per-operation table (markdown)."""
    lines = [
        "| operation | calls OK | per s | p50 ms | p99 ms | p999 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, f in operations.items():
        errors = ", ".join(f"{code} {n}" for code, n in f["errors"].items()) or "none"
        lines.append(
            f"| {name} | {f['count']:,} | {f['per_s']:,.1f} | {ms(f['p50_ms'])}"
            f" | {ms(f['p99_ms'])} | {ms(f['p999_ms'])} | {errors} |"
        )
    return lines


def baseline_table(base: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The baseline's rows (markdown)."""
    lines = [
        "| baseline: health Check on ingest, one at a time | calls | per s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for when, f in base.items():
        lines.append(
            f"| {when} the load | {f['count']:,} | {f['per_s']:,.0f} | {ms(f['p50_ms'])}"
            f" | {ms(f['p99_ms'])} |"
        )
    return lines


def memory_table(memory: Mapping[str, Mapping[str, Any]], limit: float) -> list[str]:
    """The per-process memory table (markdown)."""
    lines = [
        f"| process | RSS start MiB | middle | end | last half's rise (fit) | verdict"
        f" (limit {limit:g} MiB) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, f in memory.items():
        label = name if f["kind"] == "service" else f"{name} (engine)"
        lines.append(
            f"| {label} | {f['start_mib']:.0f} | {f['middle_mib']:.0f} | {f['end_mib']:.0f}"
            f" | {f['rise_last_half_mib']:+.1f} | {f['verdict']} |"
        )
    return lines


def text_report(result: Mapping[str, Any]) -> str:
    """Every table of the run, with what it ran on (markdown: a terminal reads it too)."""
    s = result["settings"]
    m = result["machine"]
    mix = ",".join(f"{k}={v:g}" for k, v in s["mix"].items())
    lines = [
        f"# Load, {result['engines']} engines, {s['seconds']:g} s, {s['clients']} clients",
        "",
        f"Load started {result['started_utc']} UTC; {m['machine']}, {m['cores']} cores,"
        f" {m['memory_gib']} GiB, {m['system']}, Python {m['python']};"
        f" load1 {result['load1']['before']:.1f} before, {result['load1']['after']:.1f} after.",
        f"Mix {mix}, seed {s['seed']}; measured {result['seconds']:.1f} s;"
        f" {result['patients_stored']} patients stored ({s['seed_patients']} before the load).",
        "",
        *operations_table(result["operations"]),
        "",
        *baseline_table(result["baseline"]),
        "",
        *memory_table(result["memory"], s["max_growth_mib"]),
        "",
    ]
    if "history" in result["operations"]:
        h = result["operations"]["history"]
        if h["count"]:
            lines += [
                f"Histories held {h['records_read'] / h['count']:.1f} records on average.",
                "",
            ]
    lines.append(
        "Failures: " + "; ".join(result["failures"]) if result["failures"] else "Failures: none."
    )
    return "\n".join(lines) + "\n"


def memory_chart(memory: Mapping[str, Mapping[str, Any]], path: Path, seconds: float) -> None:
    """Each process's RSS over the load; the second half (what the verdict reads) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Services and engines on panels of their own: a JVM's gigabytes would flatten the
    # services' lines, and theirs are the ones judged.
    kinds = [
        kind for kind in ("service", "engine") if any(f["kind"] == kind for f in memory.values())
    ]
    figure, axes = plt.subplots(
        len(kinds), 1, figsize=(10, 3.2 * len(kinds)), sharex=True, squeeze=False
    )
    for axis, kind in zip(axes[:, 0], kinds, strict=True):
        for name, figures in memory.items():
            if figures["kind"] != kind:
                continue
            samples = figures["samples"]
            label = f"{name} ({figures['verdict']})"
            axis.plot([t for t, _ in samples], [m for _, m in samples], label=label, linewidth=1)
        axis.axvspan(seconds / 2, seconds, color="grey", alpha=0.1)
        axis.set_ylabel(f"{kind}s: resident MiB")
        axis.legend(fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("seconds since the load started (shaded: the half the verdict reads)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def report_json(value: Any, depth: int = 0) -> str:
    """``value`` as JSON for result.json: an object a key a line, indented by one, and every
    array on one line with no spaces (the memory samples, a pair a second per process, are
    most of a report: 235 KB at indent=1 for ten minutes, 96 KB like this)."""
    if isinstance(value, dict) and value:
        inner = " " * (depth + 1)
        items = (
            f"{inner}{json.dumps(str(key))}: {report_json(item, depth + 1)}"
            for key, item in value.items()
        )
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    return json.dumps(value, separators=(",", ":"))


def write_report(out: Path, result: Mapping[str, Any], run: Any) -> list[str]:
    """report.md and, with matplotlib, the two charts (``run``: :func:`measure`'s record);
    the files written."""
    out.mkdir(parents=True, exist_ok=True)
    text = text_report(result)
    written = []
    if importlib.util.find_spec("matplotlib") is not None:
        CHAOS.chart(run, out / "throughput.png", result["per_second"])
        memory_chart(result["memory"], out / "memory.png", result["seconds"])
        text += "\n![calls per second and latency](throughput.png)\n"
        text += "\n![resident memory](memory.png)\n"
        written += ["throughput.png", "memory.png"]
    else:
        text += "\n(No charts: matplotlib is not installed.)\n"
    (out / "report.md").write_text(text)
    # Every figure and memory sample, so the charts can be read again or redrawn.
    (out / "result.json").write_text(report_json(result) + "\n")
    return ["report.md", "result.json", *written]


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's settings from its arguments."""
    return Settings(
        seconds=args.seconds,
        clients=args.clients,
        mix=args.mix,
        seed=args.seed,
        engines=args.engines,
        checks=args.checks,
        seed_patients=args.seed_patients,
        max_growth_mib=args.max_growth_mib,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Start a stack, load it, stop it, print; 1 if the run failed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--mix", type=mix_argument, default=parse_mix(DEFAULT_MIX))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    parser.add_argument("--checks", type=int, default=300, help="baseline Checks before/after")
    parser.add_argument("--seed-patients", type=int, default=8)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    parser.add_argument("--report", help="write report.md and charts to this directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.checks < 1 or args.seed_patients < 1:
        parser.error("--clients, --seconds, --checks and --seed-patients must be positive")
    settings = settings_from(args)
    run_id = new_run_id()
    with bench_stack(settings.engines, run_id) as (stack, _):
        result, run = asyncio.run(measure(stack, settings, run_id))
    if args.report:
        write_report(Path(args.report), result, run)
    print(json.dumps(result) if args.json else text_report(result))
    for failure in result["failures"]:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
