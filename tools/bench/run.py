"""Every speed figure of healthbank in one run, each read beside a bare grpc.health Check on
the same service in the same run (so a figure is judged against this machine's round trip,
not against a number from elsewhere).

    python tools/bench/run.py [--engines embedded|real] [--json] [--scale 1.0] [--only audit,...]
        [--quiet-limit 90] [--warmup 1.0]

Starts a fresh local stack (``healthbank up``'s processes; on ``real`` engines a new
keyspace prefix), measures, stops it. With ``--json`` prints one JSON object (the keys of
:data:`FIGURES`); otherwise a table. Statements and lightweight transactions per Submit
are counted, not guessed: on the real engines ingest, identity and audit also run in this
process for a few messages, and the driver's per-keyspace counter
(healthbank.storage.cassandra.STATEMENT_COUNTS) is read around them. ``--scale`` shrinks or
grows every workload (the smoke test runs a tiny one); ``--only`` measures some parts
(:data:`PARTS`) beside the baseline, with what they need (emergency reads the ingest's
patients, history the bulk load's), and leaves the other figures out. The ingest part
Submits one message of each of its patients, new to the index; the known part then sends
each of them another (``ingest_known_*``: the patients a hospital's messages are mostly
about, already registered). Each part starts once the machine is quiet (quiet.py; at most
``--quiet-limit`` seconds later), so work one part leaves running (the node's flushes and
compactions) would not be charged to the next; measured so far, the machine was quiet
within 2 s after every part.

Each part also says what an operation costs: the CPU each process of the stack spent while
it ran (process_cpu.py: a service, Cassandra, OpenBao, Redis, this benchmark's client, and
all CPUs' busy time as ``machine``), per operation, printed as a second table and in the
JSON as ``cpu_ms_per_op``. A figure taken at 32 in flight on a machine its part kept busy
is bounded by that cost: 2 cores over the ``machine`` milliseconds of one operation. On the
real engines a third table (``cassandra_tables_per_op`` in the JSON) says what the node did
for one operation, table by table, by its own counts (cassandra_tables.py): the partitions a
Submit or a read reads and writes, and its lightweight transactions (``system.paxos``), in
every service at once.

The figures are those of a warm node: a warm-up pass (``--warmup`` times the workload, other
patients) runs every part first and its figures are printed beside, not counted. Cassandra
compiles its hot paths while it serves (the JVM's JIT): measured 2026-12-05 on a node just
started, two whole runs back to back gave Submit 64.6 then 77.1 messages/s, bulk 1,732 then
3,238 resources/s, history p50 34.5 then 27.1 ms; rounds of 800 Submits of the same known
patients cost the node 10.9, 8.9, then 7.5 ms of CPU each. ``--warmup 0`` measures the
cold node.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cassandra_tables
import process_cpu
import tree_heads
from cassandra_tables import TableCounter, TableWork
from percentiles import percentile
from quiet import until_quiet

from healthbank.audit.v1 import audit_pb2
from healthbank.cli import real_engine_env
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.natid import make_national_id
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import load_settings
from healthbank.core.ids import new_ulid
from healthbank.dev import synthetic
from healthbank.dev.demo import (
    CLINICIAN_B,
    EMERGENCY_B,
    DemoClient,
    engine_principal,
    patient_principal,
    submit,
)
from healthbank.dev.devstack import LocalStack
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.ingest.v1 import ingest_pb2
from healthbank.record_lookup.v1 import record_lookup_pb2
from healthbank.rpc.clients import open_channel
from healthbank.storage.cassandra import (
    StatementCounts,
    counts_now,
    counts_since,
    drop_keyspaces,
)
from services.consent.registry import INVALIDATION_MARK_SECONDS

SECRET = "bench-auth-secret"
FHIR = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON
RESOLVE_BATCH = 100  # patients per ResolveBatch call
INGEST_SERVICE = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
# Patient indices of a pass: the Submits' from 0, the bulk load's other patients from
# BULK_PATIENT_INDEX, the history patient at HISTORY_PATIENT_INDEX.
BULK_PATIENT_INDEX = 100_000
HISTORY_PATIENT_INDEX = 900_000
# The warm-up pass's patients are these indices on: other national IDs (born from 1942-09
# on, see run_patient) than any patient of the measured pass (indices below 1,000,000).
WARMUP_INDEX_OFFSET = 1_000_000

# What --only can pick, and what each part needs measured before it.
PARTS = {
    "ingest": (),
    "bulk": (),
    "history": ("bulk",),
    "emergency": ("ingest",),
    "identity": ("ingest",),
    "known": ("ingest",),
    "audit": (),
    "counts": (),
}

# The JSON keys, in table order, with their units.
FIGURES = {
    "baseline_check_rps": "/s",
    "baseline_check_p99_ms": "ms",
    "ingest_messages_per_s": "/s",
    "ingest_resources_per_s": "/s",
    "ingest_p99_ms": "ms",
    "ingest_known_messages_per_s": "/s",
    "ingest_known_p99_ms": "ms",
    "bulk_resources_per_s": "/s",
    "emergency_p50_ms": "ms",
    "emergency_p99_ms": "ms",
    "history_1000_p50_ms": "ms",
    "audit_appends_per_s": "/s",
    "audit_tree_head_lag_ms": "ms",
    "identity_known_resolves_per_s": "/s",
    "identity_known_batch_resolves_per_s": "/s",
    "cassandra_statements_per_submit": "",
    "cassandra_requests_per_submit": "",
    "lwt_per_submit": "",
    "serial_reads_per_submit": "",
    "cassandra_paxos_mib": "MiB",
    "load1": "",
}


@dataclass(frozen=True)
class Workload:
    """How much of each thing one run does (``scaled`` by --scale)."""

    concurrency: int = 32
    checks: int = 2000
    messages: int = 400
    # ~10,000 resources: 40 bundles (2,040 resources, under a second, half of them the
    # history patient's) put one pause of the node at half the figure.
    bulk_bundles: int = 200
    bulk_observations: int = 50
    history_records: int = 1000
    history_reads: int = 30
    emergency_reads: int = 400
    audit_events: int = 20000
    audit_batch: int = 1000
    resolves: int = 2000
    counted_messages: int = 20

    def scaled(self, factor: float) -> Workload:
        """Every count times ``factor`` (at least 1). Bundle sizes are kept, and so is the
        history's size unless ``factor`` is below 1: a quick run (or a warm-up pass at
        ``--warmup`` below 1) reads a shorter history than ``history_1000_p50_ms`` names."""

        def n(value: int) -> int:
            return max(1, round(value * factor))

        return Workload(
            concurrency=self.concurrency,
            checks=n(self.checks),
            messages=n(self.messages),
            bulk_bundles=n(self.bulk_bundles),
            bulk_observations=self.bulk_observations,
            history_records=self.history_records if factor >= 1 else n(self.history_records),
            history_reads=n(self.history_reads),
            emergency_reads=n(self.emergency_reads),
            audit_events=n(self.audit_events),
            audit_batch=min(self.audit_batch, n(self.audit_events)),
            resolves=n(self.resolves),
            counted_messages=n(self.counted_messages),
        )


@dataclass(frozen=True)
class Timed:
    """Latencies (ms) of calls made over ``seconds``."""

    latencies: list[float]
    seconds: float
    # CPU milliseconds each process group spent meanwhile (process_cpu.py).
    cpu_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # Cassandra's local reads and writes meanwhile, by table (cassandra_tables.py).
    tables: Mapping[str, TableWork] = dataclasses.field(default_factory=dict)

    @property
    def per_second(self) -> float:
        """Calls per second."""
        return len(self.latencies) / self.seconds

    def percentile(self, fraction: float) -> float:
        """The latency below which ``fraction`` of the calls finished (nearest rank)."""
        return percentile(self.latencies, fraction)

    @property
    def p50(self) -> float:
        """Median latency."""
        return statistics.median(self.latencies)


async def timed(
    calls: list[Callable[[], Awaitable[object]]],
    concurrency: int,
    tables: TableCounter | None = None,
) -> Timed:
    """Run ``calls`` with at most ``concurrency`` in flight (``tables``: also count what
    Cassandra's tables did meanwhile)."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with limit:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    tables_before = tables.tally() if tables else {}
    cpu_before = process_cpu.snapshot()
    started = time.perf_counter()
    await asyncio.gather(*(one(call) for call in calls))
    seconds = time.perf_counter() - started
    cpu_ms = process_cpu.spent_ms(cpu_before, process_cpu.snapshot())
    tables_done = cassandra_tables.spent(tables_before, tables.tally()) if tables else {}
    return Timed(latencies, seconds, cpu_ms, tables_done)


def bundle_resources(bundle: bytes) -> int:
    """FHIR resources in a bundle (entries)."""
    return len(json.loads(bundle)["entry"])


def observations(count: int, start: datetime) -> list[tuple[str, float]]:
    """``count`` glucose results, one a day from ``start``."""
    return [
        ((start + timedelta(days=day)).strftime("%Y-%m-%dT08:00:00Z"), 5.0 + (day % 30) / 10)
        for day in range(count)
    ]


def run_patient(run_id: str, index: int) -> synthetic.Patient:
    """The index-th patient of run ``run_id``: a distinct ID number per index (birth date
    and sequence), an MRN new in every run."""
    base = synthetic.patient(index % 6)
    birth = date(1940, 1, 1) + timedelta(days=index // 1000)
    return dataclasses.replace(
        base,
        birth_date=birth,
        national_id=make_national_id("110105", birth, index % 1000),
        mrn=f"B{run_id}{index:07d}",
    )


class Bench:
    """One run's clients and figures."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        workload: Workload,
        run_id: str,
        index_offset: int = 0,
        tables: TableCounter | None = None,
    ) -> None:
        """Measure the stack at ``addresses``; ``run_id`` keeps message ids and MRNs new,
        ``index_offset`` is added to every patient index (another pass's patients), and
        ``tables`` (real engines) counts Cassandra's work by table."""
        self.addresses = addresses
        self.workload = workload
        self.run_id = run_id
        self.index_offset = index_offset
        self.client = DemoClient(addresses, SECRET.encode())
        self.figures: dict[str, float | None] = {}
        # Each part's CPU per operation, by process group (process_cpu.py), and Cassandra's
        # local reads and writes per operation, by table (cassandra_tables.py).
        self.cpu: dict[str, dict[str, float]] = {}
        self.tables: dict[str, dict[str, TableWork]] = {}
        self._tables = tables
        self._identity_channel = open_channel(addresses["identity"])
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._identity_channel)
        self._ingest_channel = open_channel(addresses["ingest"])

    async def timed(self, calls: list[Callable[[], Awaitable[object]]], concurrency: int) -> Timed:
        """:func:`timed`, counting Cassandra's tables too when this run can."""
        return await timed(calls, concurrency, self._tables)

    def charge(self, operation: str, result: Timed, operations: int) -> None:
        """Record ``result``'s CPU and Cassandra work as ``operations`` of ``operation``."""
        self.cpu[operation] = process_cpu.per_operation(result.cpu_ms, operations)
        if self._tables is not None:
            self.tables[operation] = cassandra_tables.per_operation(result.tables, operations)

    def person(self, index: int) -> synthetic.Patient:
        """The index-th patient of this pass."""
        return run_patient(self.run_id, self.index_offset + index)

    async def close(self) -> None:
        """Close the channels."""
        await self.client.close()
        await self._identity_channel.close()
        await self._ingest_channel.close()

    async def baseline(self) -> None:
        """Bare grpc.health Check on ingest over one channel, at the same concurrency."""
        health: Any = health_pb2_grpc.HealthStub(self._ingest_channel)
        request = health_pb2.HealthCheckRequest()
        result = await self.timed(
            [lambda: health.Check(request) for _ in range(self.workload.checks)],
            self.workload.concurrency,
        )
        self.figures["baseline_check_rps"] = result.per_second
        self.charge("check", result, len(result.latencies))
        self.figures["baseline_check_p99_ms"] = result.percentile(0.99)

    async def ingest(self) -> None:
        """Single-message Submit of new patients' emergency bundles: each registers its
        patient (identity claims the national ID and links the MRN)."""
        bundles, result = await self.submit_emergency_bundles("s")
        self.figures["ingest_messages_per_s"] = result.per_second
        self.figures["ingest_resources_per_s"] = result.per_second * bundle_resources(bundles[0][0])
        self.figures["ingest_p99_ms"] = result.percentile(0.99)
        self.charge("submit", result, len(bundles))

    async def ingest_known(self) -> None:
        """The same Submits again, as new messages of the ingest part's patients (the same
        bundle, another message id): what a hospital mostly sends, messages of patients the
        index already knows. Beside ``ingest``, not instead: issue 8's Submit figure is the
        new patients'."""
        bundles, result = await self.submit_emergency_bundles("k")
        self.figures["ingest_known_messages_per_s"] = result.per_second
        self.figures["ingest_known_p99_ms"] = result.percentile(0.99)
        self.charge("submit_known", result, len(bundles))

    async def submit_emergency_bundles(self, prefix: str) -> tuple[list[tuple[bytes, str]], Timed]:
        """An emergency bundle of each of the ingest part's patients, under message ids
        ``<prefix>-<MRN>``, one Submit each with ``concurrency`` in flight."""
        people = [self.person(i) for i in range(self.workload.messages)]
        bundles = [
            (synthetic.emergency_history_bundle(p, f"{prefix}-{p.mrn}"), f"{prefix}-{p.mrn}")
            for p in people
        ]

        def call(content: bytes, message_id: str) -> Callable[[], Awaitable[object]]:
            return lambda: submit(self.client, synthetic.HOSPITAL_A, FHIR, content, message_id)

        return bundles, await self.timed([call(*b) for b in bundles], self.workload.concurrency)

    async def bulk(self, history_person: synthetic.Patient) -> None:
        """SubmitStream of ~50-resource bundles over a few streams; the first bundles are
        the history patient's records (``history_records`` of them)."""
        w = self.workload
        per_bundle = w.bulk_observations
        history_bundles = -(-w.history_records // per_bundle)
        start = datetime(2015, 1, 1, tzinfo=UTC)
        messages: list[tuple[bytes, str]] = []
        for i in range(max(w.bulk_bundles, history_bundles)):
            person = history_person if i < history_bundles else self.person(BULK_PATIENT_INDEX + i)
            count = per_bundle
            if i < history_bundles:
                count = min(per_bundle, w.history_records - i * per_bundle)
            values = observations(count, start + timedelta(days=i * per_bundle))
            message_id = f"b-{self.run_id}-{self.index_offset + i}"
            messages.append((synthetic.glucose_bundle(person, message_id, values), message_id))
        streams = 4
        auth = self.client.auth(engine_principal(synthetic.HOSPITAL_A))

        async def stream(part: list[tuple[bytes, str]]) -> None:
            async def requests() -> AsyncIterator[ingest_pb2.SubmitRequest]:
                for content, message_id in part:
                    yield ingest_pb2.SubmitRequest(
                        hospital_id=synthetic.HOSPITAL_A.hospital_id,
                        message_id=message_id,
                        format=FHIR,
                        content=content,
                    )

            async for response in self.client.ingest.SubmitStream(
                requests(), metadata=auth, timeout=600
            ):
                if response.outcome not in (
                    ingest_pb2.OUTCOME_STORED,
                    ingest_pb2.OUTCOME_DUPLICATE,
                ):
                    raise RuntimeError(f"bulk message refused: {response.rejection.reason}")

        async def streams_at_once() -> None:
            await asyncio.gather(*(stream(messages[k::streams]) for k in range(streams)))

        result = await self.timed([streams_at_once], 1)
        resources = sum(bundle_resources(content) for content, _ in messages)
        self.figures["bulk_resources_per_s"] = resources / result.seconds
        self.charge("bulk_resource", result, resources)

    async def history(self, person_token: str) -> None:
        """GetHistoryPages of the patient with ``history_records`` records, one read at a
        time (GetHistory's per-record stream is kept for older clients), once the grant is
        past consent's invalidation mark: the reads of a grant that is not brand new.

        For INVALIDATION_MARK_SECONDS after a grant changes, every Check reads the grants
        from the store (ADR 7's amendment): measured 2026-12-04, ~5 ms more a read, which
        only the first seconds of a new grant pay."""
        expire = Timestamp()
        expire.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        await self.client.consent.CreateGrant(
            consent_pb2.CreateGrantRequest(
                parent=f"persons/{person_token}",
                grant=consent_pb2.Grant(
                    grantee_hospital_id=synthetic.HOSPITAL_B.hospital_id, expire_time=expire
                ),
                request_id=new_ulid(),
            ),
            metadata=self.client.auth(patient_principal(person_token)),
            timeout=30,
        )
        await asyncio.sleep(INVALIDATION_MARK_SECONDS)
        request = record_lookup_pb2.GetHistoryRequest(parent=f"persons/{person_token}")
        auth = self.client.auth(CLINICIAN_B)
        received: list[int] = []

        async def read() -> None:
            count = 0
            pages = self.client.lookup.GetHistoryPages(request, metadata=auth, timeout=60)
            async for page in pages:
                count += len(page.items)
            received.append(count)

        result = await self.timed([read for _ in range(self.workload.history_reads)], 1)
        # Exactly: more would be another pass's records under the same person.
        if set(received) != {self.workload.history_records}:
            raise RuntimeError(f"history returned {sorted(set(received))} records")
        self.figures["history_1000_p50_ms"] = result.p50
        self.charge("history_read", result, len(received))

    async def emergency(self) -> None:
        """GetEmergencySummary of the patients ingested by :meth:`ingest`."""
        auth = self.client.auth(EMERGENCY_B)
        people = [
            self.person(i % self.workload.messages) for i in range(self.workload.emergency_reads)
        ]

        def call(person: synthetic.Patient) -> Callable[[], Awaitable[object]]:
            request = record_lookup_pb2.GetEmergencySummaryRequest(
                national_id=person.national_id, justification="benchmark: unconscious on arrival"
            )
            return lambda: self.client.lookup.GetEmergencySummary(
                request, metadata=auth, timeout=60
            )

        result = await self.timed([call(p) for p in people], self.workload.concurrency)
        self.figures["emergency_p50_ms"] = result.p50
        self.figures["emergency_p99_ms"] = result.percentile(0.99)
        self.charge("emergency_read", result, len(people))

    async def audit(self, person_token: str) -> None:
        """AppendEvents batches (the path for callers with many events), a few at once,
        while a verifier polls the signed tree head (tools/bench/tree_heads.py)."""
        w = self.workload
        auth = self.client.auth(INGEST_SERVICE)
        stub = self.client.audit
        actor = common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_SERVICE,
            subject="ingest",
            purpose=common_pb2.PURPOSE_OF_USE_OPERATIONS,
        )

        def batch(size: int) -> audit_pb2.AppendEventsRequest:
            events = []
            for _ in range(size):
                event = audit_pb2.AccessEvent(
                    event_id=new_ulid(),
                    actor=actor,
                    action=audit_pb2.ACTION_WRITE,
                    person_token=person_token,
                )
                event.occur_time.GetCurrentTime()
                events.append(event)
            return audit_pb2.AppendEventsRequest(events=events)

        acknowledged: list[tree_heads.Seen] = []

        def call(request: audit_pb2.AppendEventsRequest) -> Callable[[], Awaitable[object]]:
            async def append() -> None:
                response = await stub.AppendEvents(request, metadata=auth, timeout=120)
                size = max(result.tree_size for result in response.results)
                acknowledged.append(tree_heads.Seen(tree_heads.now_ms(), size))

            return append

        batches = [batch(w.audit_batch) for _ in range(max(1, w.audit_events // w.audit_batch))]
        appended = asyncio.Event()
        watching = asyncio.ensure_future(tree_heads.watch(stub, appended))
        try:
            result = await self.timed([call(b) for b in batches], 4)
        except BaseException:
            # The appends' error is the one to report; the watcher is stopped, not left
            # pending (its own error, if any, is dropped).
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            raise
        appended.set()
        self.figures["audit_appends_per_s"] = result.per_second * w.audit_batch
        events = len(batches) * w.audit_batch
        self.charge("audit_event", result, events)
        heads = tree_heads.verified_sizes(await watching)
        self.figures["audit_tree_head_lag_ms"] = tree_heads.coverage_lag_ms(acknowledged, heads)

    async def identity_known(self) -> None:
        """Resolve of (hospital, MRN) pairs that are already linked (the ingest patients)."""
        auth = self.client.auth(INGEST_SERVICE)
        people = [self.person(i % self.workload.messages) for i in range(self.workload.resolves)]

        def call(person: synthetic.Patient) -> Callable[[], Awaitable[object]]:
            request = identity_pb2.ResolveRequest(
                hospital_id=synthetic.HOSPITAL_A.hospital_id,
                mrn=person.mrn,
                national_id=person.national_id,
            )
            return lambda: self.identity.Resolve(request, metadata=auth, timeout=60)

        result = await self.timed([call(p) for p in people], self.workload.concurrency)
        self.figures["identity_known_resolves_per_s"] = result.per_second
        self.charge("known_resolve", result, len(people))

        # The same patients through ResolveBatch (the call for many patients at once).
        def batch(part: list[synthetic.Patient]) -> Callable[[], Awaitable[object]]:
            request = identity_pb2.ResolveBatchRequest(
                requests=[
                    identity_pb2.ResolveRequest(
                        hospital_id=synthetic.HOSPITAL_A.hospital_id,
                        mrn=person.mrn,
                        national_id=person.national_id,
                    )
                    for person in part
                ]
            )
            return lambda: self.identity.ResolveBatch(request, metadata=auth, timeout=60)

        size = RESOLVE_BATCH
        parts = [people[start : start + size] for start in range(0, len(people), size)]
        result = await self.timed([batch(part) for part in parts], 4)
        self.figures["identity_known_batch_resolves_per_s"] = (
            result.per_second * len(people) / max(1, len(parts))
        )
        self.charge("known_batch_resolve", result, len(people))


async def count_statements(
    env: Mapping[str, str], messages: int, run_id: str, *, known_patient: bool = False
) -> dict[str, StatementCounts]:
    """What ``messages`` Submits on the happy path send to Cassandra, per keyspace, counted
    by the driver in this process: identity, audit and ingest run here on ``env``'s engines,
    one warm-up message prepares the statements, then new patients are sent one by one
    (with ``known_patient``, new messages of the warm-up's patient).
    (Audit's counts include the background head signer's reads in that time; identity's
    once-a-second look for merges made elsewhere, ADR 33, is put off: it is per second, not
    per message.)"""
    from services.audit.app import open_service as open_audit
    from services.identity.app import open_service as open_identity
    from services.ingest.app import open_service as open_ingest

    data_dir = Path(tempfile.mkdtemp(prefix="healthbank-count-"))
    base = {
        **env,
        "HEALTHBANK_AUTH_SECRET": SECRET,
        "HEALTHBANK_DATA_DIR": str(data_dir),
        "HEALTHBANK_PORT": "0",
        "HEALTHBANK_LOG_LEVEL": "WARNING",
        "HEALTHBANK_IDENTITY_MERGE_POLL_SECONDS": "3600",
    }
    if base.get("HEALTHBANK_STORAGE_BACKEND") == "cassandra":
        # Schema first, as a deployment does (ADR 35): services never create it.
        from healthbank.storage.schema import concerns_of, migrate

        services = ["identity", "audit", "ingest"]
        await asyncio.to_thread(migrate, load_settings(base), concerns_of(services))
    async with AsyncExitStack() as exits:
        exits.callback(shutil.rmtree, data_dir, ignore_errors=True)  # after the services
        addresses: dict[str, str] = {}
        for name, opener in (("identity", open_identity), ("audit", open_audit)):
            host = await exits.enter_async_context(opener(load_settings(base)))
            addresses[name] = f"127.0.0.1:{await host.start(0)}"
        ingest_env = {
            **base,
            "HEALTHBANK_IDENTITY_ADDR": addresses["identity"],
            "HEALTHBANK_AUDIT_ADDR": addresses["audit"],
        }
        ingest = await exits.enter_async_context(open_ingest(load_settings(ingest_env)))
        addresses["ingest"] = f"127.0.0.1:{await ingest.start(0)}"
        # DemoClient opens a channel per service; the two not running here are never called.
        client = DemoClient(
            {**addresses, "consent": addresses["ingest"], "record-lookup": addresses["ingest"]},
            SECRET.encode(),
        )
        exits.push_async_callback(client.close)

        async def send(index: int) -> None:
            person = run_patient(run_id + "c", 0 if known_patient else index)
            message_id = f"c-{person.mrn}-{index}"
            response = await submit(
                client,
                synthetic.HOSPITAL_A,
                FHIR,
                synthetic.emergency_history_bundle(person, message_id),
                message_id,
            )
            if response.outcome != ingest_pb2.OUTCOME_STORED:
                raise RuntimeError("a counted message was not stored")

        await send(0)
        before = counts_now()
        for index in range(1, messages + 1):
            await send(index)
        return counts_since(before)


def per_submit(spent: StatementCounts, messages: int) -> dict[str, float]:
    """Counts divided by the messages sent, under the benchmark's figure names."""
    return {
        "cassandra_statements_per_submit": spent.statements / messages,
        "cassandra_requests_per_submit": spent.requests / messages,
        "lwt_per_submit": spent.lwts / messages,
        "serial_reads_per_submit": spent.serial_reads / messages,
    }


def parts_to_run(only: str | None) -> set[str]:
    """The parts named in ``only`` (comma-separated; None: all) and what they need."""
    if only is None:
        return set(PARTS)
    wanted = {part.strip() for part in only.split(",") if part.strip()}
    unknown = wanted - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {sorted(PARTS)}")
    return wanted | {need for part in wanted for need in PARTS[part]}


async def measure(
    addresses: Mapping[str, str],
    workload: Workload,
    run_id: str,
    parts: set[str],
    quiet_limit_s: float = 0.0,
    index_offset: int = 0,
    tables: TableCounter | None = None,
) -> tuple[dict[str, float | None], dict[str, dict[str, float]], dict[str, dict[str, TableWork]]]:
    """The figures of ``parts`` (and the baseline) against the stack at ``addresses``, and
    each part's CPU per operation by process group (:attr:`Bench.cpu`) and Cassandra's work
    per operation by table (:attr:`Bench.tables`, with ``tables``); each part starts once
    the machine is quiet (at most ``quiet_limit_s`` later, 0: at once).
    ``index_offset``: see :class:`Bench`."""
    bench = Bench(addresses, workload, run_id, index_offset, tables)

    async def part(name: str) -> bool:
        if name != "baseline" and name not in parts:
            return False
        if quiet_limit_s > 0:
            await until_quiet(name, limit_s=quiet_limit_s)
        return True

    try:
        if await part("baseline"):
            await bench.baseline()
        if await part("ingest"):
            await bench.ingest()
        history_person = bench.person(HISTORY_PATIENT_INDEX)
        if await part("bulk"):
            await bench.bulk(history_person)
        resolved = await bench.identity.Resolve(
            identity_pb2.ResolveRequest(
                hospital_id=synthetic.HOSPITAL_A.hospital_id,
                mrn=history_person.mrn,
                national_id=history_person.national_id,
            ),
            metadata=bench.client.auth(INGEST_SERVICE),
        )
        if await part("history"):
            await bench.history(resolved.person_token)
        if await part("emergency"):
            await bench.emergency()
        if await part("identity"):
            await bench.identity_known()
        if await part("known"):
            await bench.ingest_known()
        if await part("audit"):
            await bench.audit(resolved.person_token)
    finally:
        await bench.close()
    return bench.figures, bench.cpu, bench.tables


def table(
    figures: Mapping[str, float | None],
    header: str,
    warmup: Mapping[str, float | None] | None = None,
) -> str:
    """The figures as a plain table, the warm-up pass's (if any) in a column beside."""

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.1f}"

    beside = f" {'warm-up pass':>14}" if warmup else ""
    lines = [header, f"{'figure':<36} {'value':>12}{beside}"]
    for name, unit in FIGURES.items():
        line = f"{name:<36} {shown(figures.get(name)):>12}"
        if warmup:
            line += f" {shown(warmup[name]) if name in warmup else '':>14}"
        lines.append(f"{line} {unit}".rstrip())
    return "\n".join(lines)


def cpu_table(cpu: Mapping[str, Mapping[str, float]]) -> str:
    """Each part's CPU per operation (ms) by process group, a row per part, ``machine``
    (every CPU's busy time, whoever spent it) last."""
    groups = sorted({group for spent in cpu.values() for group in spent} - {"machine"})
    columns = [*groups, "machine"]
    lines = [
        "CPU ms per operation, by process (machine: all CPUs busy)",
        f"{'operation':<20}" + "".join(f" {group[:13]:>13}" for group in columns),
    ]
    for operation, spent in cpu.items():
        cells = "".join(
            f" {spent[group]:>13.3f}" if group in spent else f" {'':>13}" for group in columns
        )
        lines.append(f"{operation:<20}{cells}")
    return "\n".join(lines)


def drop_bench_keyspaces(env: Mapping[str, str], prefix: str) -> None:
    """Drop the run's keyspaces (``<prefix>_*``) on the real engines."""
    hosts = env["HEALTHBANK_CASSANDRA_HOSTS"].split(",")
    drop_keyspaces(hosts, int(env["HEALTHBANK_CASSANDRA_PORT"]), prefix)


def new_run_id() -> str:
    """A run's id: keeps its message ids, MRNs and keyspace prefix new."""
    return f"{int(time.time()) % 10**8:08d}"


@contextmanager
def table_counter(env: Mapping[str, str], run_id: str) -> Iterator[TableCounter | None]:
    """A counter of the run's Cassandra tables on the real engines (``env`` names them);
    None on the embedded ones."""
    if "HEALTHBANK_CASSANDRA_HOSTS" not in env:
        yield None
        return
    with TableCounter.connected(
        env["HEALTHBANK_CASSANDRA_HOSTS"].split(",")[0],
        int(env["HEALTHBANK_CASSANDRA_PORT"]),
        f"bench_{run_id}",
    ) as counter:
        yield counter


@contextmanager
def bench_stack(
    engines: str, run_id: str, *, extra_env: Mapping[str, str] | None = None
) -> Iterator[tuple[LocalStack, dict[str, str]]]:
    """A fresh stack of the seven services, started (``healthbank up``'s processes), and
    the engine settings it runs on: none on ``embedded``; on ``real``, the engines of
    tools/engines with a new keyspace prefix ``bench_<run_id>``, whose keyspaces are
    dropped when the stack stops. ``extra_env`` goes to the services only (e.g. rate
    limits), not into the engine settings returned."""
    env = real_engine_env() if engines == "real" else {}
    if engines == "real":
        env["HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX"] = f"bench_{run_id}"
    stack_dir = Path(tempfile.mkdtemp(prefix="healthbank-bench-"))
    stack = LocalStack(
        stack_dir,
        env={
            **env,
            **(extra_env or {}),
            "HEALTHBANK_AUTH_SECRET": SECRET,
            "HEALTHBANK_LOG_LEVEL": "WARNING",
        },
    )
    try:
        stack.start(timeout=180)
        yield stack, env
    except BaseException:
        print(f"[bench] the services' logs are kept in {stack_dir}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        if engines == "real":
            drop_bench_keyspaces(env, f"bench_{run_id}")
    shutil.rmtree(stack_dir, ignore_errors=True)  # only after a run that went well


def main() -> None:
    """Start a stack, measure, stop it, print."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engines", choices=["embedded", "real"], default="embedded")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--scale", type=float, default=1.0, help="workload size factor")
    parser.add_argument("--only", help=f"comma-separated parts of {', '.join(PARTS)}")
    parser.add_argument(
        "--quiet-limit",
        type=float,
        default=90.0,
        help="seconds a part waits at most for the machine to go quiet first (0: no wait)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="first a pass of this times the workload, other patients, not counted (0: none)",
    )
    args = parser.parse_args()
    parts = parts_to_run(args.only)
    workload = Workload().scaled(args.scale)
    run_id = new_run_id()
    warmup: dict[str, float | None] = {}
    with bench_stack(args.engines, run_id) as (stack, env), table_counter(env, run_id) as counter:
        # The node's Paxos state as the run starts: kept for days, it is compacted beside
        # every figure, more the larger it has grown (ADR 49's amendment of 2026-12-07).
        paxos_mib = counter.disk_mib("system", "paxos") if counter is not None else None
        if args.warmup > 0:
            warmup, _, _ = asyncio.run(
                measure(
                    stack.addresses,
                    Workload().scaled(args.scale * args.warmup),
                    run_id,
                    parts,
                    args.quiet_limit,
                    index_offset=WARMUP_INDEX_OFFSET,
                )
            )
        figures, cpu, tables = asyncio.run(
            measure(stack.addresses, workload, run_id, parts, args.quiet_limit, tables=counter)
        )
    figures.update(
        dict.fromkeys(
            (
                "cassandra_statements_per_submit",
                "cassandra_requests_per_submit",
                "lwt_per_submit",
                "serial_reads_per_submit",
            )
        )
    )
    if args.engines == "real" and "counts" in parts:
        counted_env = {**env, "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": f"bench_{run_id}_count"}
        try:
            counted = asyncio.run(count_statements(counted_env, workload.counted_messages, run_id))
        finally:
            drop_bench_keyspaces(env, f"bench_{run_id}_count")
        total = sum(counted.values(), StatementCounts())
        figures.update(per_submit(total, workload.counted_messages))
    figures["cassandra_paxos_mib"] = paxos_mib
    figures["load1"] = os.getloadavg()[0]
    if args.json:
        print(
            json.dumps(
                {
                    "engines": args.engines,
                    **figures,
                    "warmup": warmup,
                    "cpu_ms_per_op": cpu,
                    "cassandra_tables_per_op": cassandra_tables.as_json(tables),
                },
                sort_keys=False,
            )
        )
    else:
        header = (
            f"{args.engines} engines, {platform.machine()}, {os.cpu_count()} cores,"
            f" concurrency {workload.concurrency}, scale {args.scale}, warm-up {args.warmup}"
        )
        print(table(figures, header, warmup))
        print()
        print(cpu_table(cpu))
        if tables:
            print()
            print(cassandra_tables.table(tables))


if __name__ == "__main__":
    main()
