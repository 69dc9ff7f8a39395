"""What one statement costs this machine's Cassandra node: the floor under every figure of
tools/bench/run.py on the real engines.

    python tools/bench/cassandra_floor.py [--operations 4000] [--concurrency 32]
                                          [--requests 6] [--statements 25]

Starts the engines (tools/engines), creates a scratch keyspace, and runs each statement
kind the services send, at ``--concurrency`` in flight from this process: statements per
second, the Cassandra process's CPU per statement (user + system time from
/proc/<pid>/stat, read around the run) and this client's (the driver's share). The baseline,
first row, is the cheapest round trip there is (``SELECT release_version FROM system.local``)
in the same run. Two rows compare reading stored rows one request each with reading 20 in one
``IN`` request (per row): what coalescing concurrent reads saves (ADR 53). The last line turns
the CPU per request (a plain insert) and per further row of a batch (an UNLOGGED batch's
row) into the most Submits per second the node allows for a Submit of ``--requests`` round
trips carrying ``--statements`` statements (defaults: a known patient's Submit without the
audit's share, tests/integration/test_speed_budgets.py), every core given to Cassandra: an
upper bound. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.query import BatchStatement, BatchType
from process_cpu import parse_stat

from healthbank.cli import real_engine_env
from healthbank.storage.cassandra import coordinated_by

KEYSPACE = "bench_floor"
# Rows per IN read: the stores' coalesced reads (healthbank.storage.coalesced) send up to
# 50 (ADR 53).
IN_KEYS = 20


def cassandra_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the Cassandra process has used so far."""
    return parse_stat(Path(f"/proc/{pid}/stat").read_text()).cpu_s


def engines_dir() -> Path:
    """Where tools/engines keeps its state (pid files)."""
    default = Path(__file__).resolve().parents[2] / ".engines"
    return Path(os.environ.get("HEALTHBANK_ENGINES_DIR", str(default)))


# (name, per second, Cassandra and client CPU ms per operation)
Row = tuple[str, float, float, float]


def measure(
    session: Session,
    pid: int,
    name: str,
    run: Callable[[int], None],
    operations: int,
) -> Row:
    """(name, per second, Cassandra and client CPU ms per operation) of ``run(operations)``."""
    cpu, client = cassandra_cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    run(operations)
    elapsed = time.perf_counter() - started
    spent = cassandra_cpu_seconds(pid) - cpu
    client_spent = time.process_time() - client
    return name, operations / elapsed, spent / operations * 1000, client_spent / operations * 1000


def measure_all(session: Session, pid: int, args: argparse.Namespace) -> list[Row]:
    """Every statement's figures, on a keyspace of this tool's own."""
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication ="
        " {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.rows (k text PRIMARY KEY, v blob)")
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.counts (k text, day int, n counter,"
        " PRIMARY KEY ((k), day))"
    )
    local = session.prepare("SELECT release_version FROM system.local")
    insert = session.prepare(f"INSERT INTO {KEYSPACE}.rows (k, v) VALUES (?, ?)")
    claim = session.prepare(f"INSERT INTO {KEYSPACE}.rows (k, v) VALUES (?, ?) IF NOT EXISTS")
    read = session.prepare(f"SELECT v FROM {KEYSPACE}.rows WHERE k = ?")
    bump = session.prepare(f"UPDATE {KEYSPACE}.counts SET n = n + 1 WHERE k = ? AND day = ?")
    payload = os.urandom(512)
    stored = [f"stored-{n}" for n in range(2000)]
    execute_concurrent_with_args(session, insert, [(k, payload[:200]) for k in stored], 32)
    read_in = session.prepare(
        f"SELECT k, v FROM {KEYSPACE}.rows WHERE k IN ({', '.join('?' * IN_KEYS)})"
    )

    def concurrently(statement: Any, make: Callable[[], Sequence[Any]]) -> Callable[[int], None]:
        def run(operations: int) -> None:
            execute_concurrent_with_args(
                session, statement, [make() for _ in range(operations)], args.concurrency
            )

        return run

    def stored_keys(count: int) -> Sequence[str]:
        return [stored[random.randrange(len(stored))] for _ in range(count)]

    def in_reads(operations: int) -> None:
        keys = stored_keys(operations - operations % IN_KEYS)
        groups = [keys[n : n + IN_KEYS] for n in range(0, len(keys), IN_KEYS)]
        execute_concurrent_with_args(session, read_in, groups, args.concurrency)

    def batches(batch_type: Any, rows: int) -> Callable[[int], None]:
        def run(operations: int) -> None:
            statements = []
            for _ in range(operations // rows):
                batch = BatchStatement(batch_type=batch_type)
                for _ in range(rows):
                    batch.add(insert, (uuid.uuid4().hex, payload))
                statements.append(batch)
            execute_concurrent(session, [(b, None) for b in statements], args.concurrency)

        return run

    return [
        measure(
            session, pid, "baseline: system.local read", concurrently(local, tuple), args.operations
        ),
        measure(
            session, pid, "point read", concurrently(read, lambda: ("absent",)), args.operations
        ),
        measure(
            session,
            pid,
            "point read of a stored row",
            concurrently(read, lambda: stored_keys(1)),
            args.operations,
        ),
        measure(
            session,
            pid,
            f"IN read of {IN_KEYS} stored rows (per row)",
            in_reads,
            args.operations,
        ),
        measure(
            session,
            pid,
            "insert (one partition)",
            concurrently(insert, lambda: (uuid.uuid4().hex, payload)),
            args.operations,
        ),
        measure(
            session,
            pid,
            "insert IF NOT EXISTS (LWT)",
            concurrently(claim, lambda: (uuid.uuid4().hex, payload)),
            args.operations // 2,
        ),
        measure(
            session,
            pid,
            "counter update",
            concurrently(bump, lambda: (uuid.uuid4().hex[:2], 1)),
            args.operations,
        ),
        measure(
            session,
            pid,
            "LOGGED batch, 10 partitions (per row)",
            batches(BatchType.LOGGED, 10),
            args.operations,
        ),
        measure(
            session,
            pid,
            "UNLOGGED batch, 10 partitions (per row)",
            batches(BatchType.UNLOGGED, 10),
            args.operations,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=float, default=6.0)
    parser.add_argument("--statements", type=float, default=25.0)
    args = parser.parse_args()
    env = real_engine_env()
    pid = int((engines_dir() / "cassandra.pid").read_text().split()[0])
    with coordinated_by(
        env["HEALTHBANK_CASSANDRA_HOSTS"].split(",")[0], int(env["HEALTHBANK_CASSANDRA_PORT"])
    ) as session:
        rows = measure_all(session, pid, args)
    print(
        f"Cassandra node cost per statement ({args.concurrency} in flight, {os.cpu_count()} cores)"
    )
    print(f"{'statement':<42} {'per s':>9} {'node CPU ms':>12} {'client CPU ms':>14}")
    for name, rate, cpu_ms, client_ms in rows:
        print(f"{name:<42} {rate:>9,.0f} {cpu_ms:>12.3f} {client_ms:>14.3f}")
    cost = {name: cpu_ms for name, _, cpu_ms, _ in rows}
    per_request = cost["insert (one partition)"]
    per_row = cost["UNLOGGED batch, 10 partitions (per row)"]
    submit_ms = args.requests * per_request + (args.statements - args.requests) * per_row
    ceiling = (os.cpu_count() or 1) * 1000 / submit_ms
    print(
        f"\na Submit of {args.requests:g} requests carrying {args.statements:g} statements costs"
        f" the node about {submit_ms:.1f} ms of CPU: at most {ceiling:,.0f} Submits/s with"
        " every core given to Cassandra"
    )


if __name__ == "__main__":
    main()
