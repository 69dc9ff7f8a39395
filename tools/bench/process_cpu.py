"""Where a benchmark part's CPU goes: the CPU time each process of the stack spent while
the part ran, read from /proc (Linux), so a figure comes with its cost per operation.

A process counts for the first of itself and its ancestors that is one of the stack's:
a service (``healthbank.cli serve <name>``; ingest's parse workers are its children),
``cassandra`` (the JVM running CassandraDaemon), ``openbao``, ``redis``, or ``bench`` (the
benchmark's own process; the services it starts name themselves first). Anything else on
the machine is ``other``, and ``machine`` is every CPU's busy time from /proc/stat (so a
part that kept the machine near its cores' count was CPU-bound). A process that exits
while the part runs loses the CPU it spent (nothing in a run does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quiet import cpu_times

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Stat:
    """What a ``/proc/<pid>/stat`` (or a thread's ``task/<tid>/stat``) says: the command
    name, the parent pid and the CPU seconds (user + system) spent so far."""

    name: str
    parent: int
    cpu_s: float


def parse_stat(stat: str) -> Stat:
    """The fields of a stat line the benchmarks read."""
    # The command name (in parentheses) may hold spaces and ")": the fields follow the last.
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return Stat(
        head[head.index("(") + 1 :], int(fields[1]), (user_ticks + system_ticks) / _TICKS_PER_S
    )


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc says of one process: its parent, command line and CPU seconds so far."""

    parent: int
    argv: tuple[str, ...]
    cpu_s: float


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far by group, and the machine's busy seconds (all CPUs)."""

    by_group: Mapping[str, float] = field(default_factory=dict)
    machine_busy_s: float = 0.0


def group_of_argv(argv: tuple[str, ...]) -> str | None:
    """The stack's name for a process with this command line, or None."""
    if "healthbank.cli" in argv and "serve" in argv:
        position = argv.index("serve") + 1
        return argv[position] if position < len(argv) else None
    if any(arg.endswith("CassandraDaemon") for arg in argv):
        return "cassandra"
    if argv and Path(argv[0]).name == "bao" and "server" in argv:
        return "openbao"
    if argv and Path(argv[0]).name.startswith("redis-server"):
        return "redis"
    return None


def group_by_process(processes: Mapping[int, ProcessInfo], own_pid: int) -> dict[int, str]:
    """Each process's group: its own, or its nearest named ancestor's (else ``other``)."""
    named: dict[int, str] = {}
    for pid, info in processes.items():
        group = group_of_argv(info.argv)
        if group is None and pid == own_pid:
            group = "bench"
        if group is not None:
            named[pid] = group
    groups: dict[int, str] = {}
    for pid in processes:
        current, seen = pid, set()
        while current not in named and current in processes and current not in seen:
            seen.add(current)
            current = processes[current].parent
        groups[pid] = named.get(current, "other")
    return groups


def cpu_by_group(processes: Mapping[int, ProcessInfo], own_pid: int) -> dict[str, float]:
    """CPU seconds of the live processes, summed by group."""
    totals: dict[str, float] = {}
    for pid, group in group_by_process(processes, own_pid).items():
        totals[group] = totals.get(group, 0.0) + processes[pid].cpu_s
    return totals


def read_processes() -> dict[int, ProcessInfo]:
    """Every live process /proc lists (those gone meanwhile are skipped)."""
    found: dict[int, ProcessInfo] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parsed = parse_stat(stat)
        found[int(entry.name)] = ProcessInfo(
            parent=parsed.parent,
            argv=tuple(arg.decode(errors="replace") for arg in argv if arg),
            cpu_s=parsed.cpu_s,
        )
    return found


def snapshot() -> CpuSnapshot | None:
    """Now's CPU seconds by group; None where /proc is missing (not Linux)."""
    machine = cpu_times()
    if machine is None:
        return None
    return CpuSnapshot(cpu_by_group(read_processes(), os.getpid()), machine[0] / _TICKS_PER_S)


def spent_ms(before: CpuSnapshot | None, after: CpuSnapshot | None) -> dict[str, float]:
    """Milliseconds of CPU each group spent between two snapshots, ``machine`` included
    (groups that spent nothing left out); empty without snapshots."""
    if before is None or after is None:
        return {}
    spent = {
        group: seconds - before.by_group.get(group, 0.0)
        for group, seconds in after.by_group.items()
    }
    spent["machine"] = after.machine_busy_s - before.machine_busy_s
    return {group: seconds * 1000 for group, seconds in sorted(spent.items()) if seconds > 0}


def per_operation(spent: Mapping[str, float], operations: int) -> dict[str, float]:
    """``spent`` (ms by group) divided among ``operations``."""
    return {group: ms / operations for group, ms in spent.items()} if operations > 0 else {}
