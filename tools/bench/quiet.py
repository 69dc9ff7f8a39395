"""Waiting for the machine to go quiet between the parts of a benchmark.

The engines run on the benchmark's own machine, and what one part leaves behind (the node
compacting and flushing after a bulk load), if still running, would be charged to the next
part's figure. Each part therefore starts once the machine's CPUs, read from /proc/stat, have been
mostly idle for two windows in a row, or after ``limit_s`` whatever they do.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

_STAT = Path("/proc/stat")


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat is missing."""
    try:
        first = _STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time spent busy between two ``cpu_times`` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


async def until_quiet(
    label: str, *, busy_below: float = 0.25, window_s: float = 1.0, limit_s: float = 90.0
) -> float:
    """Wait until the machine was less than ``busy_below`` busy for two windows in a row
    (or ``limit_s`` passed); says on stderr how long it waited. Returns the seconds waited."""
    started = time.monotonic()
    quiet_windows = 0
    busy = 0.0
    before = cpu_times()
    while before is not None and quiet_windows < 2 and time.monotonic() - started < limit_s:
        await asyncio.sleep(window_s)
        after = cpu_times()
        assert after is not None
        busy = busy_fraction(before, after)
        quiet_windows = quiet_windows + 1 if busy < busy_below else 0
        before = after
    waited = time.monotonic() - started
    print(f"[bench] {label}: started after {waited:.0f} s ({busy:.0%} busy)", file=sys.stderr)
    return waited
