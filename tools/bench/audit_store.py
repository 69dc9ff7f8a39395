"""The audit log's append path straight on its Cassandra store, without gRPC or the service.

    python tools/bench/audit_store.py [--batches 20] [--events 1000] [--json]

Starts the engines (tools/engines), creates a scratch keyspace, and appends ``--batches``
batches of ``--events`` events, all at once, through ``CassandraAuditStore.append_many``
(the path ``AppendEvents`` takes), then reads the size (which finishes the last batch).
The baseline, in the same run on the same node: the same leaves written once each into a
table of their own, in the unlogged batches the store uses, which is the least any log of
these events has to write. For each: appends per second, statements per event (the
driver's count), this process's CPU per event and the Cassandra process's CPU per event
(/proc/<pid>/stat). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cassandra_floor import cassandra_cpu_seconds, engines_dir

from healthbank.cli import real_engine_env
from healthbank.core.ids import new_ulid
from healthbank.ledger import merkle
from healthbank.storage.cassandra import (
    STATEMENT_COUNTS,
    CassandraDatabase,
    StatementCounts,
    counts_now,
    drop_keyspaces,
)
from healthbank.storage.schema import migrate_keyspaces
from services.audit.store import LeafEntry
from services.audit.store_cassandra import MIGRATIONS, CassandraAuditStore

PERSONS = 300  # a batch's events spread over this many persons, as a busy hour's are
LEAF_BYTES = 200  # about an encoded AuditEvent's size
FLOOR_MIGRATIONS = ["CREATE TABLE IF NOT EXISTS leaves (event_id text PRIMARY KEY, leaf blob)"]


def new_batch(events: int) -> list[LeafEntry]:
    """``events`` events made now, with random leaves."""
    now = datetime.now(UTC)
    batch = []
    for i in range(events):
        leaf = os.urandom(LEAF_BYTES)
        person = f"{i % PERSONS:064x}"
        batch.append(LeafEntry(new_ulid(now), person, now, leaf, merkle.leaf_hash(leaf)))
    return batch


async def measure(
    name: str, keyspace: str, pid: int, events: int, work: Callable[[], Awaitable[None]]
) -> dict[str, float | str]:
    """Run ``work`` (which writes ``events`` events); its rates and costs per event."""
    before = counts_now().get(keyspace, StatementCounts())
    cassandra_cpu, own_cpu = cassandra_cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    sent = STATEMENT_COUNTS[keyspace].since(before)
    return {
        "name": name,
        "appends_per_s": events / elapsed,
        "statements_per_event": sent.statements / events,
        "client_cpu_ms_per_event": (time.process_time() - own_cpu) / events * 1000,
        "cassandra_cpu_ms_per_event": (cassandra_cpu_seconds(pid) - cassandra_cpu) / events * 1000,
    }


async def run(batches: int, events: int) -> list[dict[str, float | str]]:
    """The baseline's figures, then the store's."""
    env = real_engine_env(only="cassandra")
    hosts = env["HEALTHBANK_CASSANDRA_HOSTS"].split(",")
    port = int(env["HEALTHBANK_CASSANDRA_PORT"])
    pid = int((engines_dir() / "cassandra.pid").read_text().split()[0])
    prefix = f"bench_audit_{uuid.uuid4().hex[:8]}"
    keyspaces = {f"{prefix}_audit": MIGRATIONS, f"{prefix}_floor": FLOOR_MIGRATIONS}
    migrate_keyspaces(hosts, port, keyspaces, replication_factor=1, consistency="ONE")
    log, floor = (
        CassandraDatabase(
            hosts=hosts, port=port, keyspace=name, migrations=migrations, consistency="ONE"
        )
        for name, migrations in keyspaces.items()
    )
    store = await CassandraAuditStore(log).open()
    await floor.open()
    try:
        await store.append_many(new_batch(events))  # prepares the statements; not counted
        floor_batches = [new_batch(events) for _ in range(batches)]

        async def leaves_alone() -> None:
            await asyncio.gather(
                *(
                    floor.execute_unlogged(
                        [
                            (
                                "INSERT INTO leaves (event_id, leaf) VALUES (?, ?)",
                                (e.event_id, e.leaf),
                            )
                            for e in batch
                        ]
                    )
                    for batch in floor_batches
                )
            )

        log_batches = [new_batch(events) for _ in range(batches)]

        async def appended() -> None:
            await asyncio.gather(*(store.append_many(batch) for batch in log_batches))
            await store.tree_size()

        total = batches * events
        return [
            await measure(
                "baseline: the leaves alone", f"{prefix}_floor", pid, total, leaves_alone
            ),
            await measure("append_many", f"{prefix}_audit", pid, total, appended),
        ]
    finally:
        await store.close()
        await floor.close()
        drop_keyspaces(hosts, port, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = asyncio.run(run(args.batches, args.events))
    if args.json:
        print(json.dumps({"rows": rows, "load1": os.getloadavg()[0]}))
        return
    print(f"{args.batches} batches of {args.events} events at once, {os.cpu_count()} cores")
    print(f"{'':<28} {'per s':>9} {'statements':>11} {'client CPU ms':>14} {'node CPU ms':>12}")
    for row in rows:
        print(
            f"{row['name']:<28} {row['appends_per_s']:>9,.0f} {row['statements_per_event']:>11.2f}"
            f" {row['client_cpu_ms_per_event']:>14.3f} {row['cassandra_cpu_ms_per_event']:>12.3f}"
        )


if __name__ == "__main__":
    main()
