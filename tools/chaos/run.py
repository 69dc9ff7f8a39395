"""A chaos run: a mixed workload against the seven services while processes are killed.

    python tools/chaos/run.py [--seconds 120] [--seed 1] [--report DIR] [--ring]
                              [--kill ingest,audit,...,cassandra,vault,redis]

Starts the seven services on the real engines of ``HEALTHBANK_ENGINES_DIR`` (Cassandra,
OpenBao, Redis; ``tools/engines/engines.py up`` first) and runs, for ``--seconds``:

- hospital engines submitting FHIR bundles (one message at a time, retried on a transient
  error as a real integration engine does, never on a permanent one);
- emergency summaries and patients' own histories;
- grants given, used by a doctor of another hospital, revoked, and tried again;

while, at seeded random moments (every 2 to 6 s), one process at a time is killed with
SIGKILL and started again: each service, and each engine (a Cassandra node, OpenBao, Redis),
every one of them at least once (the run lasts longer if that takes more than ``--seconds``).
It kills engines: point it at engines nobody else is using.

With ``--ring`` the services run on the 3-node ring of ``tools/engines/ring.py`` (RF 3,
LOCAL_QUORUM; started if it is not running) instead of the single node, and each node is a
target of its own (``cassandra1``..``cassandra3``, one down at a time). Afterwards
``nodetool repair --full -pr`` runs on every node for the run's keyspaces, and each node
must hold every acknowledged record itself (read at ONE, coordinated by that node).

Afterwards every message ever sent is sent again (each must come back stored or duplicate)
and the run checks its invariants, recomputing everything from what it sent and read:

- every acknowledged message is stored exactly once: each patient's history holds exactly
  the acknowledged records, each byte-identical (as JSON) to the resource that was sent;
- every write and every successful read is in the audit log, and the whole log verifies
  against its signed tree head with the key from the key provider;
- no doctor read a history after the revocation of the grant was acknowledged;
- no call answered INTERNAL or UNKNOWN;
- no patient's name or national ID is in the clear in any engine's files or the services'
  data directory;
- no service's memory grew more than ``--max-growth-mib`` over the run;
- with ``--ring``, every replica holds every acknowledged record after the repair.

It writes ``report.md`` and ``throughput.png`` (acknowledged messages and reads per second,
p50/p99 latency, the kills marked) to ``--report`` and exits non-zero if an invariant
fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import grpc
import grpc.aio
from cassandra import ConsistencyLevel
from google.protobuf.timestamp_pb2 import Timestamp

from healthbank.audit.v1 import audit_pb2
from healthbank.cli import real_engine_env
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.names import record_name
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import load_settings
from healthbank.core.ids import new_ulid
from healthbank.core.memory import resident_mib
from healthbank.crypto import build_key_provider
from healthbank.dev import synthetic
from healthbank.dev.demo import (
    CLINICIAN_B,
    EMERGENCY_B,
    DemoClient,
    engine_principal,
    patient_principal,
)
from healthbank.dev.devstack import LocalStack
from healthbank.dev.scripts import load_script
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc.audit_verify import verify_audit_log
from healthbank.rpc.clients import open_channel
from healthbank.storage.cassandra import coordinated_by, drop_keyspaces
from healthbank.storage.schema import KEYSPACES

REPO = Path(__file__).resolve().parents[2]
SECRET = "chaos-auth-secret"
SERVICES = ("ingest", "identity", "consent", "record-lookup", "archive", "audit", "ai-alert")
ENGINES = ("cassandra", "vault", "redis")
RING_NODES = 3
RING_ENGINES = (*(f"cassandra{node}" for node in range(1, RING_NODES + 1)), "vault", "redis")
AUDITOR = Principal(PrincipalKind.AUDITOR, "chaos-auditor", purpose=Purpose.OPERATIONS)
# What a real engine retries; everything else is an answer.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FHIR = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON

T = TypeVar("T")


def load_engines_tool(script: str = "engines") -> ModuleType:
    """tools/engines/<script>.py (engines or ring), loaded by path (they are scripts, not a
    package)."""
    return load_script(REPO / f"tools/engines/{script}.py", f"healthbank_tools_{script}")


@dataclass
class Sent:
    """One message as sent, and what became of it."""

    patient: synthetic.Patient
    content: bytes
    acked: ingest_pb2.SubmitResponse | None = None


@dataclass
class Kill:
    """One SIGKILL and the restart after it."""

    at: float
    target: str
    down_s: float
    restart_s: float


@dataclass
class Run:
    """Everything the run saw, for the checks and the report."""

    started: float = field(default_factory=time.monotonic)
    sent: dict[str, Sent] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    # (seconds since start, kind, latency s) of each successful operation.
    done: list[tuple[float, str, float]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # (action, person token, actor subject) -> successful reads.
    reads: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    memory: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def now(self) -> float:
        return time.monotonic() - self.started


async def call(run: Run, kind: str, attempt: Callable[[], Awaitable[T]], give_up: float) -> T:
    """``attempt`` until it answers, retrying transient errors with backoff until
    ``give_up`` (monotonic); INTERNAL/UNKNOWN are noted as broken and retried too."""
    delay = 0.1
    while True:
        started = time.monotonic()
        try:
            result = await attempt()
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code in BROKEN:
                run.broken.append(f"{kind}: {code.name}")
            elif code not in TRANSIENT:
                raise
            if time.monotonic() > give_up:
                raise
            run.retries[kind] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        run.done.append((run.now(), kind, time.monotonic() - started))
        return result


class Workload:
    """The clients: hospital engines, emergency rooms, patients and doctors."""

    def __init__(
        self,
        addresses: dict[str, str],
        client: DemoClient,
        run: Run,
        rng: random.Random,
        run_id: str,
    ) -> None:
        self.addresses = addresses
        self.client = client
        self.run = run
        self.rng = rng
        self.run_id = run_id
        self.patients = [synthetic.patient(i, f"X{run_id}") for i in range(24)]
        self.tokens: dict[str, str] = {}  # MRN -> person token, once acknowledged
        self.stop = asyncio.Event()

    def message(self, writer: int, index: int) -> tuple[str, Sent]:
        patient = self.patients[(writer * 7 + index) % len(self.patients)]
        message_id = f"chaos-{self.run_id}-{writer}-{index}"
        if index % 3 == 0:
            content = synthetic.emergency_history_bundle(patient, message_id)
        else:
            start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=index)
            values = [
                ((start + timedelta(hours=h)).isoformat(), 5.0 + self.rng.random())
                for h in range(self.rng.randint(1, 6))
            ]
            content = synthetic.glucose_bundle(patient, message_id, values)
        return message_id, Sent(patient, content)

    @staticmethod
    def request(message_id: str, sent: Sent) -> ingest_pb2.SubmitRequest:
        return ingest_pb2.SubmitRequest(
            hospital_id=synthetic.HOSPITAL_A.hospital_id,
            message_id=message_id,
            format=FHIR,
            content=sent.content,
        )

    async def submit(self, message_id: str, sent: Sent, give_up: float) -> None:
        request = self.request(message_id, sent)
        auth = self.client.auth(engine_principal(synthetic.HOSPITAL_A))
        response = await call(
            self.run,
            "submit",
            lambda: self.client.ingest.Submit(request, metadata=auth, timeout=10),
            give_up,
        )
        self.accept(message_id, sent, response)

    def accept(self, message_id: str, sent: Sent, response: ingest_pb2.SubmitResponse) -> None:
        """Note an answer: the first acknowledgement, or a resend's (the same records)."""
        if response.outcome not in (ingest_pb2.OUTCOME_STORED, ingest_pb2.OUTCOME_DUPLICATE):
            self.run.violations.append(
                f"message {message_id} refused: {ingest_pb2.Outcome.Name(response.outcome)}"
                f" {response.rejection.reason}"
            )
            return
        if sent.acked is None:
            sent.acked = response
        elif list(response.record_names) != list(sent.acked.record_names):
            self.run.violations.append(f"message {message_id} answered other records on resend")
        self.tokens[sent.patient.mrn] = response.person_token

    async def writer(self, number: int) -> None:
        index = 0
        while not self.stop.is_set():
            message_id, sent = self.message(number, index)
            self.run.sent[message_id] = sent
            index += 1
            try:
                await self.submit(message_id, sent, time.monotonic() + 60)
            except grpc.aio.AioRpcError as error:
                if error.code() not in TRANSIENT:
                    self.run.violations.append(f"submit refused: {error.code().name}")

    async def emergency_reader(self) -> None:
        auth = self.client.auth(EMERGENCY_B)
        while not self.stop.is_set():
            known = [p for p in self.patients if p.mrn in self.tokens]
            if not known:
                await asyncio.sleep(0.2)
                continue
            patient = self.rng.choice(known)
            request = record_lookup_pb2.GetEmergencySummaryRequest(
                national_id=patient.national_id, justification="chaos: unconscious on arrival"
            )
            try:
                await call(
                    self.run,
                    "emergency",
                    partial(
                        self.client.lookup.GetEmergencySummary, request, metadata=auth, timeout=10
                    ),
                    time.monotonic() + 30,
                )
            except grpc.aio.AioRpcError:
                continue
            token = self.tokens[patient.mrn]
            self.run.reads[(audit_pb2.ACTION_READ_EMERGENCY, token, EMERGENCY_B.subject)] += 1

    async def history(self, token: str, principal: Principal) -> list[common_pb2.Record]:
        request = record_lookup_pb2.GetHistoryRequest(parent=f"persons/{token}")

        async def read() -> list[common_pb2.Record]:
            return [
                item.record
                async for item in self.client.lookup.GetHistory(
                    request, metadata=self.client.auth(principal), timeout=30
                )
            ]

        records = await call(self.run, "history", read, time.monotonic() + 60)
        self.run.reads[(audit_pb2.ACTION_READ_HISTORY, token, principal.subject)] += 1
        return records

    async def consent_cycle(self) -> None:
        """Grant, read as the grantee, revoke, and check the grantee is refused at once."""
        while not self.stop.is_set():
            known = [p for p in self.patients if p.mrn in self.tokens]
            if not known:
                await asyncio.sleep(0.2)
                continue
            token = self.tokens[self.rng.choice(known).mrn]
            owner = self.client.auth(patient_principal(token))
            expire = Timestamp()
            expire.FromDatetime(datetime.now(UTC) + timedelta(days=1))
            create = consent_pb2.CreateGrantRequest(
                parent=f"persons/{token}",
                grant=consent_pb2.Grant(
                    grantee_hospital_id=synthetic.HOSPITAL_B.hospital_id, expire_time=expire
                ),
                request_id=new_ulid(),
            )
            try:
                grant = await call(
                    self.run,
                    "grant",
                    partial(self.client.consent.CreateGrant, create, metadata=owner, timeout=10),
                    time.monotonic() + 60,
                )
                await self.history(token, CLINICIAN_B)
                revoke = consent_pb2.RevokeGrantRequest(name=grant.name)
                await call(
                    self.run,
                    "revoke",
                    partial(self.client.consent.RevokeGrant, revoke, metadata=owner, timeout=10),
                    time.monotonic() + 60,
                )
            except grpc.aio.AioRpcError:
                continue
            try:
                await self.history(token, CLINICIAN_B)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                    continue
                if error.code() in TRANSIENT:
                    continue
                raise
            # A grant of another cycle may still be open for this patient; only a read
            # with no open grant at all is a violation.
            listing = consent_pb2.ListGrantsRequest(parent=f"persons/{token}")
            grants = await call(
                self.run,
                "list grants",
                partial(self.client.consent.ListGrants, listing, metadata=owner, timeout=10),
                time.monotonic() + 60,
            )
            if not any(not g.HasField("revoke_time") for g in grants.grants):
                self.run.violations.append("a history was read after its grant was revoked")


class Faults:
    """Kills one process at a time at seeded random moments and starts it again."""

    def __init__(
        self,
        stack: LocalStack,
        engines: ModuleType,
        run: Run,
        rng: random.Random,
        targets: list[str],
        ring: ModuleType | None = None,
    ) -> None:
        self.stack = stack
        self.engines = engines
        self.run = run
        self.rng = rng
        self.targets = targets
        self.ring = ring

    async def loop(self, until: float) -> None:
        order = list(self.targets)
        self.rng.shuffle(order)
        turn = 0
        # The run lasts until ``until`` and until every target was killed once.
        while time.monotonic() < until or turn < len(order):
            await asyncio.sleep(self.rng.uniform(2.0, 6.0))
            # Every target once before any twice, then at random.
            target = order[turn] if turn < len(order) else self.rng.choice(self.targets)
            turn += 1
            await asyncio.to_thread(self.kill_and_restart, target)

    def kill_and_restart(self, target: str) -> None:
        at = self.run.now()
        node = ring_node(target) if self.ring is not None else None
        if target in SERVICES:
            self.stack.kill(target)
        elif node is not None:
            assert self.ring is not None
            self.ring.kill_node(self.ring.RingConfig.load(RING_NODES), node)
        else:
            pid = int(self.engines.Config.load().pidfile(target).read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        down = self.rng.uniform(0.5, 3.0)
        time.sleep(down)
        started = time.monotonic()
        if target in SERVICES:
            self.stack.restart(target)
        elif node is not None:
            assert self.ring is not None
            self.ring.start_node(self.ring.RingConfig.load(RING_NODES), node)
        else:
            self.engines.up(only=target)
        self.run.kills.append(Kill(at, target, down, time.monotonic() - started))


def ring_node(target: str) -> int | None:
    """The ring node a target names (``cassandra2`` -> 2), or None."""
    number = target.removeprefix("cassandra")
    return int(number) if number != target and number.isdigit() else None


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    """Wait until ``pid`` is gone. An engine this process restarted is its child: killed, it
    stays a zombie (and looks alive) until reaped here."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def service_pids(stack: LocalStack) -> dict[str, int]:
    """The pid of each of ``stack``'s services that is running now (a killed one is not,
    until it is started again under a new pid)."""
    return {
        name: service.process.pid
        for name, service in stack.services.items()
        if service.process.poll() is None
    }


async def sample_memory(
    pids: Callable[[], Mapping[str, int]], run: Run, stop: asyncio.Event
) -> None:
    """Every second until ``stop``, the RSS of each process ``pids()`` names at that tick
    into ``run.memory`` by name. ``pids`` is asked again each tick: this run restarts
    services under new pids (``lambda: service_pids(stack)``); tools/bench/load.py passes
    processes that keep theirs. A process gone between the two reads (0 MiB) is skipped."""
    while not stop.is_set():
        for name, pid in pids().items():
            mib = resident_mib(pid)
            if mib > 0:
                run.memory[name].append((run.now(), mib))
        await asyncio.sleep(1.0)


async def check(
    workload: Workload, run: Run, env: dict[str, str], data_dirs: list[Path]
) -> dict[str, str]:
    """Every invariant: name -> "ok" or what broke it."""
    client = workload.client
    results: dict[str, str] = {}

    # Everything sent is sent again: each comes back stored or duplicate, the same records.
    # Sixteen at a time, as a hospital engine catching up would.
    resending = asyncio.Semaphore(16)

    async def resend(message_id: str, sent: Sent) -> None:
        async with resending:
            await workload.submit(message_id, sent, time.monotonic() + 120)

    await asyncio.gather(*(resend(m, s) for m, s in list(run.sent.items())))
    unacked = [m for m, s in run.sent.items() if s.acked is None]
    results["every message stored after resending"] = (
        "ok" if not unacked else f"{len(unacked)} never acknowledged"
    )

    # Exactly once and byte-identical, from each patient's own history.
    expected: dict[str, dict[str, Any]] = {}
    acknowledged = acknowledged_records(run)
    for sent in run.sent.values():
        if sent.acked is None:
            continue
        # The outcomes follow the entries' order (the Patient has none).
        entries = iter(e["resource"] for e in json.loads(sent.content).get("entry", []))
        for outcome in sent.acked.resources:
            resource = next(r for r in entries if r["resourceType"] == outcome.resource_type)
            if outcome.record_name:
                expected[outcome.record_name] = resource
    problems: list[str] = []
    for token in sorted(set(workload.tokens.values())):
        records = await workload.history(token, patient_principal(token))
        names = Counter(r.name for r in records)
        problems += [f"{n} stored {c} times" for n, c in names.items() if c > 1]
        mine = {n for n in acknowledged if n.startswith(f"persons/{token}/")}
        problems += [f"{n} missing" for n in sorted(mine - set(names))]
        problems += [f"{n} not acknowledged" for n in sorted(set(names) - mine)]
        for record in records:
            if record.name in expected and json.loads(record.fhir_json) != expected[record.name]:
                problems.append(f"{record.name} differs from what was sent")
    if not expected:
        problems.append("no record was acknowledged")
    results[
        f"acknowledged records stored exactly once ({len(acknowledged)}), byte-identical"
        f" ({len(expected)} compared)"
    ] = "ok" if not problems else "; ".join(problems[:5]) + f" ({len(problems)} in all)"

    # The audit log: it verifies, and holds every write and every successful read.
    public_key = await build_key_provider(load_settings(env)).public_key()
    auditor = client.auth(AUDITOR)
    async with open_channel(workload.addresses["audit"]) as channel:
        # verify_audit_log sets no deadline: a call never answered is a finding, not a hang.
        for _ in range(3):
            events: list[audit_pb2.AccessEvent] = []
            try:
                verdict = await asyncio.wait_for(
                    verify_audit_log(channel, public_key, auditor, events), timeout=120
                )
                break
            except TimeoutError:
                run.violations.append("audit did not answer a verification within 120 s")
        else:
            raise RuntimeError("the audit log could not be read")
    results["audit log verifies against its signed head"] = "ok" if verdict.ok else verdict.line()
    written = {n for e in events if e.action == audit_pb2.ACTION_WRITE for n in e.resource_names}
    unaudited = [n for n in acknowledged if n not in written]
    results["every acknowledged write audited"] = (
        "ok" if not unaudited else f"{len(unaudited)} records without a write event"
    )
    logged: Counter[tuple[int, str, str]] = Counter(
        (e.action, e.person_token, e.actor.subject) for e in events
    )
    short = [key for key, reads in run.reads.items() if logged[key] < reads]
    results["every successful read audited"] = (
        "ok" if not short else f"{len(short)} (action, person, actor) with fewer events than reads"
    )

    results["no grant honoured after its revocation"] = (
        "ok"
        if not [v for v in run.violations if "revoked" in v]
        else "; ".join(v for v in run.violations if "revoked" in v)
    )
    other = [v for v in run.violations if "revoked" not in v]
    results["no message refused or answered differently"] = (
        "ok" if not other else "; ".join(other[:5])
    )
    results["no INTERNAL or UNKNOWN"] = (
        "ok" if not run.broken else f"{len(run.broken)}: {Counter(run.broken).most_common(3)}"
    )
    results["no identifier in the clear at rest"] = plaintext_at_rest(workload.patients, data_dirs)
    return results


def acknowledged_records(run: Run) -> set[str]:
    """The names of every record an acknowledgement of the run named."""
    return {n for s in run.sent.values() if s.acked for n in s.acked.record_names}


def replicas_complete(ring: ModuleType, keyspace_prefix: str, acknowledged: set[str]) -> str:
    """Repair the run's keyspaces on every node, then ask each node what it holds itself:
    each must hold every acknowledged record. The read goes at ONE through the node, whose
    static snitch reads its own replica; the records table stops speculating first, so the
    answer cannot come from another node."""
    cfg = ring.RingConfig.load(RING_NODES)
    ring.settle(cfg)  # every node up and on one schema: repair and the ALTER below need it
    keyspaces = [f"{keyspace_prefix}_{concern}" for concern in KEYSPACES]
    for node in range(1, RING_NODES + 1):
        for keyspace in keyspaces:
            ring.nodetool(cfg, node, "repair", "--full", "-pr", keyspace)
    table = f"{keyspace_prefix}_records.records"
    missing: list[str] = []
    for node in range(1, RING_NODES + 1):
        with coordinated_by(cfg.address(node), cfg.native_port, ConsistencyLevel.ONE) as session:
            if node == 1:
                session.execute(f"ALTER TABLE {table} WITH speculative_retry = 'NONE'")
            held = {
                record_name(row.person_token, row.record_id)
                for row in session.execute(f"SELECT person_token, record_id FROM {table}")
            }
        lacking = acknowledged - held
        if lacking:
            missing.append(f"node {node} lacks {len(lacking)}")
    return "ok" if not missing else "; ".join(missing)


def plaintext_at_rest(patients: list[synthetic.Patient], dirs: list[Path]) -> str:
    needles = sorted(
        {p.national_id.encode() for p in patients}
        | {p.family_name.encode() for p in patients if len(p.family_name) > 3}
    )
    found = []
    for directory in dirs:
        for path in directory.rglob("*"):
            if not path.is_file() or path.suffix in (".log", ".out") or path.name.endswith(".md"):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}" for needle in needles if needle in data]
    return "ok" if not found else f"found in {sorted(set(found))[:5]}"


def memory_growth(run: Run, limit_mib: float) -> str:
    grown = []
    for name, samples in run.memory.items():
        # Compare the run's second half with the warm process of the first quarter.
        # Not tools/bench/load.py's rule (a least-squares rise over the second half and a
        # last-quarter median step): this run kills and restarts services, and each restart
        # drops a process back to a fresh RSS, so a line fitted across restarts says nothing.
        if len(samples) < 8:
            continue
        early = max(m for _, m in samples[len(samples) // 8 : len(samples) // 4 or 1])
        late = max(m for _, m in samples[len(samples) // 2 :])
        if late - early > limit_mib:
            grown.append(f"{name} {early:.0f} -> {late:.0f} MiB")
    return "ok" if not grown else "; ".join(grown)


def per_second(done: Sequence[tuple[float, str, float]], seconds: float) -> dict[str, list[int]]:
    """Calls answered OK in each whole second of the load, per operation. The partial last
    second (``seconds`` is rarely whole: the calls in flight at the deadline end after it)
    is left out, with the calls that ended in it: counted, it would dip the throughput chart
    at the end though the rate did not fall."""
    width = int(seconds)
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * width)
    for at, kind, _ in done:
        second = int(at)
        if second < width:
            counts[kind][second] += 1
    return dict(counts)


def chart(run: Run, path: Path, rates: Mapping[str, Sequence[int]]) -> None:
    """Acknowledged operations per second (``rates``: :func:`per_second`) and latency over
    time, kills marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, latency_axis) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for kind in sorted({k for _, k, _ in run.done}):
        counts = rates.get(kind, [])
        rate_axis.plot(range(len(counts)), counts, label=kind, linewidth=1)
    buckets: dict[int, list[float]] = defaultdict(list)
    for at, _, latency in run.done:
        buckets[int(at) // 5 * 5].append(latency * 1000)
    xs = sorted(buckets)
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        latency_axis.plot(
            xs, [sorted(buckets[x])[int(q * (len(buckets[x]) - 1))] for x in xs], label=label
        )
    for kill in run.kills:
        for axis in (rate_axis, latency_axis):
            axis.axvline(kill.at, color="red", alpha=0.3)
        rate_axis.annotate(kill.target, (kill.at, 0), rotation=90, fontsize=7, color="red")
    rate_axis.set_ylabel("acknowledged per s")
    latency_axis.set_ylabel("latency ms (5 s buckets)")
    latency_axis.set_yscale("log")
    killed = " (red: a process killed)" if run.kills else ""
    latency_axis.set_xlabel(f"seconds since start{killed}")
    rate_axis.legend(fontsize=7)
    latency_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def report(run: Run, results: dict[str, str], args: argparse.Namespace) -> str:
    acked = sum(1 for s in run.sent.values() if s.acked is not None)
    kinds = Counter(k.target for k in run.kills)
    lines = [
        f"# Chaos run, seed {args.seed}, {args.seconds:.0f} s",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {len(run.sent)} messages sent, {acked}"
        f" acknowledged; {sum(run.retries.values())} retries"
        f" ({', '.join(f'{k} {n}' for k, n in sorted(run.retries.items())) or 'none'}).",
        "",
        "| invariant | result |",
        "|---|---|",
        *(f"| {name} | {result} |" for name, result in results.items()),
        "",
        "| killed (SIGKILL) | times | mean down s | mean restart s |",
        "|---|---|---|---|",
    ]
    for target, count in sorted(kinds.items()):
        mine = [k for k in run.kills if k.target == target]
        lines.append(
            f"| {target} | {count} | {sum(k.down_s for k in mine) / count:.1f}"
            f" | {sum(k.restart_s for k in mine) / count:.1f} |"
        )
    done = Counter(k for _, k, _ in run.done)
    lines += ["", "| operation | succeeded |", "|---|---|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(done.items())]
    lines += ["", "![throughput and latency](throughput.png)", ""]
    return "\n".join(lines)


def dump_tasks() -> None:
    """Print where every task of the run waits (``kill -USR1``: a run that seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def chaos(args: argparse.Namespace) -> int:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    engines = load_engines_tool()
    ring = load_engines_tool("ring") if args.ring else None
    if ring is None:
        engine_env = real_engine_env()
    else:
        # OpenBao and Redis of the single engines, Cassandra from the ring.
        engine_env = {
            **real_engine_env(only="vault,redis"),
            **await asyncio.to_thread(ring.up, RING_NODES),
        }
    run_id = f"{int(time.time()) % 10**6:06d}"
    env = {
        **engine_env,
        "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": f"chaos_{run_id}",
        "HEALTHBANK_AUTH_SECRET": SECRET,
        "HEALTHBANK_LOG_LEVEL": "WARNING",
    }
    data_dir = Path(tempfile.mkdtemp(prefix="healthbank-chaos-"))
    stack = LocalStack(data_dir, env=env)
    await asyncio.to_thread(stack.start, 180 if ring is None else 600)
    run = Run()
    rng = random.Random(args.seed)
    client = DemoClient(stack.addresses, SECRET.encode())
    workload = Workload(stack.addresses, client, run, rng, run_id)
    targets = args.kill or ",".join((*SERVICES, *(ENGINES if ring is None else RING_ENGINES)))
    faults = Faults(stack, engines, run, rng, targets.split(","), ring)
    memory_stop = asyncio.Event()
    try:
        tasks = [
            *(asyncio.create_task(workload.writer(n)) for n in range(args.writers)),
            asyncio.create_task(workload.emergency_reader()),
            asyncio.create_task(workload.consent_cycle()),
        ]
        sampler = asyncio.create_task(sample_memory(lambda: service_pids(stack), run, memory_stop))
        await faults.loop(time.monotonic() + args.seconds)
        workload.stop.set()
        await asyncio.gather(*tasks)
        memory_stop.set()
        await sampler
        await asyncio.to_thread(stack.wait_serving, 120)
        cfg = engines.Config.load()
        results = await check(workload, run, env, [cfg.state, data_dir])
        results["no service's memory grows without bound"] = memory_growth(run, args.max_growth_mib)
        if run.broken:
            # The services log an unhandled error's type and stack ("unhandled ..."): say where.
            results["no INTERNAL or UNKNOWN"] += f" (the services' logs: {data_dir / 'logs'})"
        if ring is not None:
            results[
                "every replica holds every acknowledged record after repair"
            ] = await asyncio.to_thread(
                replicas_complete, ring, f"chaos_{run_id}", acknowledged_records(run)
            )
    finally:
        await client.close()
        await asyncio.to_thread(stack.stop)
        drop_keyspaces(
            env["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
            int(env["HEALTHBANK_CASSANDRA_PORT"]),
            f"chaos_{run_id}",
        )
    await asyncio.to_thread(write_report, Path(args.report), run, results, args)
    return 0 if all(r == "ok" for r in results.values()) else 1


def write_report(out: Path, run: Run, results: dict[str, str], args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Every call counted, the resends after the load too.
    drawn = int(max([args.seconds, *(at for at, _, _ in run.done)])) + 1
    chart(run, out / "throughput.png", per_second(run.done, drawn))
    (out / "report.md").write_text(report(run, results, args))
    print((out / "report.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--report", default="chaos-report")
    parser.add_argument(
        "--kill", help="comma-separated targets (default: every service and every engine)"
    )
    parser.add_argument(
        "--ring", action="store_true", help="run on the 3-node ring of tools/engines/ring.py"
    )
    parser.add_argument("--max-growth-mib", type=float, default=150.0)
    sys.exit(asyncio.run(chaos(parser.parse_args())))


if __name__ == "__main__":
    main()
