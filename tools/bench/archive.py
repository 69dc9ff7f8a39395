"""The cold tier's figures: tiering records/s, compression ratio, cold fetch latency of one
record and of a 5-year history.

    python tools/bench/archive.py [--persons 200] [--years 5] [--per-year 24]
                                  [--payload-bytes 600] [--objects local|s3] [--fetches 50]

Runs the archive's domain (services.archive.archive.Archive) in process on the embedded
stores (SQLite hot store and index) over the chosen object store: a local directory, or a
real S3-compatible server (S3Proxy, tools/objectstore/s3proxy.py, started here on a free
port and stopped afterwards). ``--persons`` persons get ``--per-year`` records in each of
``--years`` past years, with payloads of random bytes (sealed payloads are AES-GCM
ciphertext, so random bytes compress as they would); everything is tiered, then
``--fetches`` persons' single records and whole histories are fetched. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from healthbank.common.v1 import common_pb2
from healthbank.core.ids import new_ulid
from healthbank.dev.scripts import load_script
from healthbank.records import MessageReceipt, StoredRecord
from healthbank.records.sqlite import SqliteRecordStore
from services.archive.archive import Archive, cold_record
from services.archive.objects import LocalObjectStore, ObjectStore, S3ObjectStore, s3_client
from services.archive.store import SqliteArchiveStore

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def person_records(person: str, years: int, per_year: int, payload: int) -> list[StoredRecord]:
    records = []
    for year in range(years):
        for index in range(per_year):
            effective = NOW - timedelta(days=400 + 365 * year, hours=index * (360 * 24 // per_year))
            records.append(
                StoredRecord(
                    record_id=new_ulid(effective),
                    person_token=person,
                    source_hospital=f"hospital-{index % 7}",
                    source_format=common_pb2.SOURCE_FORMAT_FHIR_R4_JSON,
                    message_id=f"{person[:8]}-{year}-{index}",
                    source_version="1",
                    content_hash=hashlib.sha256(f"{person}{year}{index}".encode()).hexdigest(),
                    category=common_pb2.RECORD_CATEGORY_OBSERVATION,
                    code_system="http://loinc.org",
                    code="4548-4",
                    code_display="Hemoglobin A1c",
                    effective_time=effective,
                    status="final",
                    sealed_payload=os.urandom(payload),
                )
            )
    return records


def millis(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


class LoopWatch:
    """The longest the event loop went without running a 1 ms heartbeat: how long the
    archive's work held it (every other RPC of the service waits that long)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopWatch:
        async def beat() -> None:
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                self.longest = max(self.longest, time.perf_counter() - before - 0.001)

        self._task = asyncio.create_task(beat())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def run(args: argparse.Namespace, work: Path, objects: ObjectStore) -> None:
    records = await SqliteRecordStore(work / "records.db").open()
    index = await SqliteArchiveStore(work / "archive.db").open()
    try:
        persons = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(args.persons)]
        raw_bytes = 0
        for person in persons:
            batch = person_records(person, args.years, args.per_year, args.payload_bytes)
            raw_bytes += sum(
                len(cold_record(r).SerializeToString()) + len(r.sealed_payload) for r in batch
            )
            await records.put_message(
                MessageReceipt(
                    hospital_id="hospital-0",
                    message_id=new_ulid(),
                    content_hash=hashlib.sha256(person.encode()).hexdigest(),
                    person_token=person,
                    record_ids=tuple(r.record_id for r in batch),
                ),
                batch,
                [],
            )
        total = args.persons * args.years * args.per_year
        archive = Archive(index, objects, records, lambda: NOW)
        started = time.perf_counter()
        moved = 0
        async with LoopWatch() as tiering_watch:
            while moved < total:
                result = await archive.tier(NOW - timedelta(days=365), 10_000)
                if not result.records_moved:
                    break
                moved += result.records_moved
        elapsed = time.perf_counter() - started
        stored = sum(segment.size_bytes for segment in await index.list_segments())
        print(f"tiering: {moved} records in {elapsed:.2f} s, {moved / elapsed:,.0f} records/s")
        print(
            f"compression: {raw_bytes:,} bytes of records in {stored:,} bytes of segments,"
            f" ratio {raw_bytes / stored:.2f} (payloads are ciphertext)"
        )
        one: list[float] = []
        history: list[float] = []
        async with LoopWatch() as fetch_watch:
            for person in persons[: args.fetches]:
                cold = await index.list_cold(person, None, None)
                moment = cold[len(cold) // 2].effective_time
                started = time.perf_counter()
                found = await archive.fetch(person, moment, moment + timedelta(microseconds=1))
                one.append(time.perf_counter() - started)
                assert len(found) == 1
                started = time.perf_counter()
                found = await archive.fetch(
                    person, NOW - timedelta(days=365 * (args.years + 2)), None
                )
                history.append(time.perf_counter() - started)
                assert len(found) == args.years * args.per_year
        print(f"cold fetch, one record: {millis(one)} (n={len(one)})")
        print(
            f"cold fetch, {args.years}-year history ({args.years * args.per_year} records):"
            f" {millis(history)} (n={len(history)})"
        )
        # The baseline: the same heartbeat on a loop with nothing else to do.
        async with LoopWatch() as idle_watch:
            await asyncio.sleep(0.5)
        print(
            f"event loop held at most {tiering_watch.longest * 1000:.1f} ms while tiering,"
            f" {fetch_watch.longest * 1000:.1f} ms while fetching"
            f" (baseline, idle: {idle_watch.longest * 1000:.1f} ms)"
        )
    finally:
        await records.close()
        await index.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=200)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--per-year", type=int, default=24)
    parser.add_argument("--payload-bytes", type=int, default=600)
    parser.add_argument("--objects", choices=["local", "s3"], default="local")
    parser.add_argument("--fetches", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hb-bench-archive-") as temporary:
        work = Path(temporary)
        print(f"objects: {args.objects}; load1 {os.getloadavg()[0]:.1f}")
        if args.objects == "local":
            asyncio.run(run(args, work, LocalObjectStore(work / "objects")))
            return 0
        tool = load_script(REPO / "tools/objectstore/s3proxy.py", "healthbank_tools_s3proxy")
        server = tool.start(work / "s3", free_port())
        try:
            client = s3_client(
                server.endpoint_url, "us-east-1", tool.ACCESS_KEY_ID, tool.SECRET_ACCESS_KEY
            )
            client.create_bucket(Bucket="bench")
            asyncio.run(run(args, work, S3ObjectStore(client, "bench", "archive/")))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
