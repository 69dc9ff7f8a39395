"""tools/chaos/run.py's own checks can fail: each finds what it looks for."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
from repo_paths import REPO

from healthbank.dev import synthetic
from healthbank.dev.scripts import load_script

CHAOS = load_script(REPO / "tools" / "chaos" / "run.py", "healthbank_tools_chaos_run")


def test_a_national_id_in_the_clear_in_an_engine_file_is_found(tmp_path: Path) -> None:
    patient = synthetic.patient(3, "C")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nb-1-big-Data.db").write_bytes(b"\x00sealed\x00")
    assert CHAOS.plaintext_at_rest([patient], [tmp_path]) == "ok"
    (tmp_path / "data" / "CommitLog-7-1.log.bin").write_bytes(
        b"\x01" + patient.national_id.encode() + b"\x02"
    )
    assert "CommitLog-7-1.log.bin" in CHAOS.plaintext_at_rest([patient], [tmp_path])


def test_memory_that_keeps_growing_is_reported_and_a_plateau_is_not() -> None:
    run = CHAOS.Run()
    run.memory["ingest"] = [(float(t), 100.0 + 2.0 * t) for t in range(200)]
    run.memory["audit"] = [(float(t), 120.0 + (5.0 if t % 2 else 0.0)) for t in range(200)]
    verdict = CHAOS.memory_growth(run, 150.0)
    assert verdict.startswith("ingest ")
    assert "audit" not in verdict
    run.memory.pop("ingest")
    assert CHAOS.memory_growth(run, 150.0) == "ok"


def test_the_report_names_every_kill_and_every_invariant() -> None:
    run = CHAOS.Run()
    run.kills += [CHAOS.Kill(3.0, "cassandra", 1.0, 30.0), CHAOS.Kill(9.0, "ingest", 2.0, 5.0)]
    run.done.append((1.0, "submit", 0.01))

    class Args:
        seed = 4
        seconds = 10.0

    text = CHAOS.report(run, {"audit log verifies": "ok", "no INTERNAL": "2: INTERNAL"}, Args())
    assert "| cassandra | 1 | 1.0 | 30.0 |" in text
    assert "| ingest | 1 | 2.0 | 5.0 |" in text
    assert "| no INTERNAL | 2: INTERNAL |" in text
    assert "| submit | 1 |" in text


def test_ring_targets_name_their_node_and_nothing_else_does() -> None:
    assert [CHAOS.ring_node(t) for t in CHAOS.RING_ENGINES] == [1, 2, 3, None, None]
    assert CHAOS.ring_node("cassandra") is None  # the single node of tools/engines
    assert CHAOS.ring_node("ingest") is None


def test_a_killed_child_is_reaped_not_waited_for_as_if_alive() -> None:
    """An engine the run restarted is its child; killed, it must not look alive (a zombie)
    for wait_gone's whole timeout while the engine stays down (a ring run, 2026-12-03:
    OpenBao down 32 s instead of 2)."""
    child = subprocess.Popen(["sleep", "60"])
    os.kill(child.pid, signal.SIGKILL)
    CHAOS.wait_gone(child.pid, timeout=10.0)
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)


def test_the_memory_sampler_asks_for_the_pids_at_every_tick() -> None:
    """One sampler for both tools: chaos's services change pids when restarted, the load
    benchmark's keep theirs. A process gone (0 MiB) gives no sample."""
    run = CHAOS.Run()
    stop = asyncio.Event()
    ticks: list[dict[str, int]] = [
        {"ingest": os.getpid()},
        {"ingest": os.getpid(), "gone": 2**22 + 1},
    ]

    def pids() -> dict[str, int]:
        current = ticks.pop(0)
        if not ticks:
            stop.set()
        return current

    asyncio.run(asyncio.wait_for(CHAOS.sample_memory(pids, run, stop), timeout=10))
    assert list(run.memory) == ["ingest"]
    assert len(run.memory["ingest"]) == 2
    assert all(mib > 0 for _, mib in run.memory["ingest"])
