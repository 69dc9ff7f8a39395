"""What a benchmark part asked of Cassandra, table by table: the node's own count of local
reads and writes per table (``system_views.local_read_latency`` / ``local_scan_latency`` /
``local_write_latency``, Cassandra 4.1+), read before and after the part, so a figure comes
with the work behind it in every process at once, nothing instrumented. The node counts a
partition at a time: a batch writing 50 rows of one partition is one write, a read of 20
keys with ``IN`` is 20 reads.

A lightweight transaction shows as writes of ``system.paxos`` (its Paxos state, about
three each on the uncontended path) beside the write of its own table; a logged batch as
writes of ``system.batches``. Only the run's own keyspaces (``<prefix>_<concern>``, named
by their concern: ``audit.log_head``) and the system keyspaces are counted: another run's
keyspaces on the same node are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# (view, what a row of it counts)
_VIEWS = (
    ("local_read_latency", "reads"),
    ("local_scan_latency", "reads"),
    ("local_write_latency", "writes"),
)


@dataclass(frozen=True)
class TableWork:
    """Local reads (point and range) and writes of one table."""

    reads: float = 0.0
    writes: float = 0.0


def table_name(keyspace: str, table: str, prefix: str) -> str | None:
    """``<concern>.<table>`` for a keyspace of the run (``<prefix>_<concern>``),
    ``<keyspace>.<table>`` for a system keyspace, None for any other keyspace."""
    if keyspace.startswith(f"{prefix}_"):
        return f"{keyspace.removeprefix(f'{prefix}_')}.{table}"
    if keyspace.startswith("system"):
        return f"{keyspace}.{table}"
    return None


def tally(rows: Iterable[tuple[str, str, str, int]], prefix: str) -> dict[str, TableWork]:
    """Counts by table from ``(kind, keyspace, table, count)`` rows (kind: reads/writes)."""
    totals: dict[str, list[float]] = {}
    for kind, keyspace, table, count in rows:
        name = table_name(keyspace, table, prefix)
        if name is None or not count:
            continue
        cell = totals.setdefault(name, [0.0, 0.0])
        cell[0 if kind == "reads" else 1] += count
    return {name: TableWork(reads, writes) for name, (reads, writes) in totals.items()}


def spent(before: Mapping[str, TableWork], after: Mapping[str, TableWork]) -> dict[str, TableWork]:
    """What each table did between two tallies (tables that did nothing left out), busiest
    first."""
    done = {}
    for name, now in after.items():
        was = before.get(name, TableWork())
        reads, writes = now.reads - was.reads, now.writes - was.writes
        if reads > 0 or writes > 0:
            done[name] = TableWork(reads, writes)
    return dict(sorted(done.items(), key=lambda item: -(item[1].reads + item[1].writes)))


def per_operation(done: Mapping[str, TableWork], operations: int) -> dict[str, TableWork]:
    """``done`` (by table) divided among ``operations``, in its order."""
    if operations <= 0:
        return {}
    return {
        name: TableWork(cell.reads / operations, cell.writes / operations)
        for name, cell in done.items()
    }


class TableCounter:
    """Tallies of the run's tables, read over one driver session of its own."""

    def __init__(self, session: Any, prefix: str) -> None:
        self._session = session
        self._prefix = prefix

    @classmethod
    @contextmanager
    def connected(cls, host: str, port: int, prefix: str) -> Iterator[TableCounter]:
        """A counter over a session of its own to the node at ``host``:``port`` (the views
        are the node's own: a session that spread its reads over a ring would mix nodes)."""
        from healthbank.storage.cassandra import coordinated_by

        with coordinated_by(host, port, metadata=False) as session:
            yield cls(session, prefix)

    def disk_mib(self, keyspace: str, table: str) -> float:
        """``keyspace.table``'s size on the node's disk, in whole MiB (0 when it has none)."""
        row = self._session.execute(
            "SELECT mebibytes FROM system_views.disk_usage"
            " WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, table),
        ).one()
        return float(row.mebibytes) if row is not None else 0.0

    def tally(self) -> dict[str, TableWork]:
        """Every table's counts so far."""
        rows = [
            (kind, row.keyspace_name, row.table_name, row.count)
            for view, kind in _VIEWS
            for row in self._session.execute(
                f"SELECT keyspace_name, table_name, count FROM system_views.{view}"
            )
        ]
        return tally(rows, self._prefix)


def table(work: Mapping[str, Mapping[str, TableWork]], limit: int = 12) -> str:
    """Each part's busiest tables (at most ``limit``), a line per part: ``table reads/writes``."""
    lines = [
        "Cassandra's work per operation: partitions read / written, by table"
        " (system.paxos: lightweight transactions' state)"
    ]
    for operation, tables in work.items():
        # Less than one in 200 operations shows as 0.00: left out here (kept in the JSON).
        visible = [
            (name, cell) for name, cell in tables.items() if cell.reads + cell.writes >= 0.005
        ]
        shown = [f"{name} {cell.reads:.2f}/{cell.writes:.2f}" for name, cell in visible[:limit]]
        if len(visible) > limit:
            shown.append(f"+{len(visible) - limit} more")
        lines.append(f"{operation:<20} " + ", ".join(shown))
    return "\n".join(lines)


def as_json(work: Mapping[str, Mapping[str, TableWork]]) -> dict[str, dict[str, dict[str, float]]]:
    """``work`` as plain dicts for --json."""
    return {
        operation: {
            name: {"reads": cell.reads, "writes": cell.writes} for name, cell in tables.items()
        }
        for operation, tables in work.items()
    }
