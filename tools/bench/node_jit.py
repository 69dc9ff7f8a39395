"""How much of a core the local Cassandra node's JIT compiler takes: whether it is warm.

The JVM compiles hot code while it serves, in threads named "C1 CompilerThread…" and
"C2 CompilerThread…". On this 2-core machine they took 0.35-0.8 of a core through the first
15 s of an identity benchmark run, on a node that had served minutes before, and 0.04-0.26
after (README, Matching). A figure measured while they work is not a warm node's (ADR 49).

Read from /proc: Linux only, and only for the node tools/engines started here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from process_cpu import parse_stat

from healthbank.dev.scripts import load_script

_ENGINES = Path(__file__).resolve().parents[1] / "engines" / "engines.py"
_COMPILER = re.compile(r"^C[12] CompilerThre")


def cassandra_pid() -> int | None:
    """The pid of the Cassandra that tools/engines runs here, or None."""
    engines = load_script(_ENGINES, "healthbank_bench_engines")
    pid: int | None = engines.status()["cassandra"]["pid"]
    return pid


def compiler_cpu_seconds(pid: int) -> float:
    """CPU seconds the JIT compiler threads of process ``pid`` have used since they started."""
    seconds = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = parse_stat((task / "stat").read_text())
        except OSError:
            continue  # the thread ended
        if _COMPILER.match(stat.name):
            seconds += stat.cpu_s
    return seconds


@dataclass
class CompilerMeter:
    """The cores the node's JIT compiler took from :meth:`start` to :meth:`cores`."""

    pid: int
    _cpu: float = 0.0
    _wall: float = 0.0

    def start(self) -> CompilerMeter:
        """Start measuring from now; this meter."""
        self._cpu = compiler_cpu_seconds(self.pid)
        self._wall = time.monotonic()
        return self

    def cores(self) -> float:
        wall = time.monotonic() - self._wall
        return (compiler_cpu_seconds(self.pid) - self._cpu) / wall if wall > 0 else 0.0
