"""tools/bench/run.py: the warm-up pass is kept apart from the measured one."""

from __future__ import annotations

import asyncio

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script

RUN = load_script(REPO / "tools" / "bench" / "run.py", "healthbank_tools_bench_run")


def test_the_warm_up_pass_registers_other_national_ids_than_the_measured_pass() -> None:
    # Every patient index a pass uses: the Submits', the bulk load's and the history's.
    workload = RUN.Workload().scaled(10)
    indices = [
        *range(workload.messages),
        *(RUN.BULK_PATIENT_INDEX + i for i in range(workload.bulk_bundles)),
        RUN.HISTORY_PATIENT_INDEX,
    ]
    measured = {RUN.run_patient("r", i).national_id for i in indices}
    warm_up = {RUN.run_patient("r", RUN.WARMUP_INDEX_OFFSET + i).national_id for i in indices}
    assert len(measured) == len(warm_up) == len(indices)
    # A shared ID would make one person of two passes' patients (twice the history).
    assert not measured & warm_up


def test_the_table_shows_the_warm_up_pass_beside_the_measured_figures() -> None:
    printed = RUN.table(
        {"ingest_messages_per_s": 120.0, "lwt_per_submit": 1.0},
        "header",
        {"ingest_messages_per_s": 80.5},
    ).splitlines()
    assert "warm-up pass" in printed[1]
    (submit,) = [line for line in printed if line.startswith("ingest_messages_per_s")]
    assert submit.split()[1:3] == ["120.0", "80.5"]
    (counted,) = [line for line in printed if line.startswith("lwt_per_submit")]
    assert counted.split()[1] == "1.0" and "80.5" not in counted


def test_without_a_warm_up_the_table_has_one_column() -> None:
    printed = RUN.table({"ingest_messages_per_s": 120.0}, "header")
    assert "warm-up pass" not in printed


class _FailingAudit:
    """An audit stub whose appends fail and whose tree head is always there."""

    async def AppendEvents(self, request: object, **_: object) -> object:
        raise RuntimeError("append refused")

    async def GetTreeHead(self, request: object, **_: object) -> object:
        await asyncio.sleep(0)
        return RUN.audit_pb2.SignedTreeHead()


class _Client:
    audit = _FailingAudit()

    def auth(self, principal: object) -> tuple[()]:
        return ()


async def test_a_failed_audit_part_raises_the_appends_error_and_stops_its_watcher() -> None:
    bench = object.__new__(RUN.Bench)
    bench.workload = RUN.Workload(audit_events=2, audit_batch=1)
    bench.client = _Client()
    bench.figures = {}
    bench._tables = None  # the embedded engines: no Cassandra to count
    with pytest.raises(RuntimeError, match="append refused"):
        await bench.audit("person")
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert all(task.done() for task in others)
    assert "audit_appends_per_s" not in bench.figures


def test_the_cpu_table_has_a_row_per_operation_and_the_machine_last() -> None:
    printed = RUN.cpu_table(
        {
            "check": {"ingest": 0.25, "bench": 0.5, "machine": 0.8},
            "emergency_read": {"cassandra": 4.5, "record-lookup": 2.5, "machine": 12.0},
        }
    ).splitlines()
    header = printed[1].split()
    assert header == ["operation", "bench", "cassandra", "ingest", "record-lookup", "machine"]

    def cells(line: str) -> list[str]:  # fixed columns: 20 wide, then 14 each
        return [line[20 + 14 * k : 34 + 14 * k].strip() for k in range(len(header) - 1)]

    assert printed[2].startswith("check")
    assert cells(printed[2]) == ["0.500", "", "0.250", "", "0.800"]
    assert printed[3].startswith("emergency_read")
    assert cells(printed[3]) == ["", "4.500", "", "2.500", "12.000"]
