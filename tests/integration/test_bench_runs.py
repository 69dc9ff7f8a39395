"""The benchmarks keep working: tiny runs print their figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from repo_paths import REPO

from healthbank.dev.devstack import SERVICES
from healthbank.dev.scripts import load_script
from healthbank.storage.cassandra import coordinated_by

TABLES = load_script(REPO / "tools" / "bench" / "cassandra_tables.py", "healthbank_tools_tables")


def run_tool(script: str, *args: str, timeout: int) -> list[str]:
    """Run tools/bench/<script> with ``args``; its output lines (it must succeed)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_ingest_benchmark_prints_baseline_and_flow() -> None:
    lines = run_tool("ingest.py", "--messages", "4", timeout=180)
    assert any(line.startswith("baseline:") and "/s" in line for line in lines)
    assert any(line.startswith("ingest: Submit") and "n=4" in line for line in lines)


def test_isolation_benchmark_prints_check_latencies_beside_a_baseline_and_rss() -> None:
    lines = run_tool(
        "isolation.py", "--segments", "2000", "--messages", "2", "--megabytes", "2", timeout=240
    )
    assert any(line.startswith("Check, idle ingest (baseline)") and "p99" in line for line in lines)
    assert any(line.startswith("Check, while 2000 segments parse") for line in lines)
    assert any("INVALID_ARGUMENT" in line for line in lines)
    assert [line.split()[0] for line in lines[-4:]] == ["before", "peak", "after", "+5"]


def test_neighbour_benchmark_prints_the_neighbour_beside_its_baseline_and_the_floods_answers() -> (
    None
):
    # 32 in flight: more than the burst (10) and the tokens queued calls may wait for (10).
    lines = run_tool("neighbour.py", "--seconds", "3", "--flood", "32", timeout=300)
    labels = [
        "B alone (limits on)",
        "B while A floods (limits on)",
        "B while A floods (limits off)",
    ]
    for label in labels:
        assert any(line.startswith(label) and "p99" in line for line in lines), label
    answers = [line for line in lines if "A answers/s" in line]
    # With limits on, the flood is refused; with them off, nothing is.
    assert "RESOURCE_EXHAUSTED" in answers[0] and "RESOURCE_EXHAUSTED" not in answers[1]


def test_full_benchmark_prints_every_figure_as_json_on_embedded_engines() -> None:
    # A part waits at most 3 s for a quiet machine here: tests/unit/tools/test_bench_quiet.py
    # holds the waiting itself.
    lines = run_tool("run.py", "--json", "--scale", "0.01", "--quiet-limit", "3", timeout=300)
    figures = json.loads(lines[-1])
    assert figures["engines"] == "embedded"
    measured = [
        "baseline_check_rps",
        "baseline_check_p99_ms",
        "ingest_messages_per_s",
        "ingest_resources_per_s",
        "ingest_p99_ms",
        "ingest_known_messages_per_s",
        "ingest_known_p99_ms",
        "bulk_resources_per_s",
        "emergency_p50_ms",
        "emergency_p99_ms",
        "history_1000_p50_ms",
        "audit_appends_per_s",
        "audit_tree_head_lag_ms",
        "identity_known_resolves_per_s",
        "identity_known_batch_resolves_per_s",
        "load1",
    ]
    for name in measured:
        assert isinstance(figures[name], float) and figures[name] >= 0, name
    # Three records and the patient per emergency bundle: resources are 4 per message.
    assert figures["ingest_resources_per_s"] == pytest.approx(4 * figures["ingest_messages_per_s"])
    # Without Cassandra there is nothing to count.
    assert figures["cassandra_statements_per_submit"] is None
    assert figures["lwt_per_submit"] is None
    assert figures["cassandra_paxos_mib"] is None
    # The warm-up pass (on by default) ran every part first, its figures apart.
    for name in measured[:-1]:
        assert isinstance(figures["warmup"][name], float), name
    # Each part's CPU per operation, by process: every operation measured has its row (a
    # tiny run may spend under a clock tick in some), and the whole run kept the machine
    # and the services busy.
    cpu = figures["cpu_ms_per_op"]
    assert set(cpu) == {
        "check",
        "submit",
        "submit_known",
        "bulk_resource",
        "history_read",
        "emergency_read",
        "known_resolve",
        "known_batch_resolve",
        "audit_event",
    }
    assert all(ms >= 0 for spent in cpu.values() for ms in spent.values())
    assert sum(spent.get("machine", 0) for spent in cpu.values()) > 0
    assert sum(spent.get("ingest", 0) for spent in cpu.values()) > 0
    # No Cassandra, no tables to count.
    assert figures["cassandra_tables_per_op"] == {}


def test_full_benchmark_measures_only_the_parts_asked_for_and_what_they_need() -> None:
    lines = run_tool(
        "run.py",
        "--json",
        "--scale",
        "0.01",
        "--only",
        "emergency",
        "--quiet-limit",
        "0",
        timeout=300,
    )
    figures = json.loads(lines[-1])
    # Emergency reads the patients the ingest part stored; the baseline is always measured.
    for name in ("baseline_check_p99_ms", "ingest_messages_per_s", "emergency_p99_ms"):
        assert isinstance(figures[name], float), name
    for name in ("bulk_resources_per_s", "history_1000_p50_ms", "audit_appends_per_s"):
        assert name not in figures, name
        assert name not in figures["warmup"], name
    assert isinstance(figures["warmup"]["emergency_p99_ms"], float)


def test_cassandra_floor_prints_each_statement_cost_beside_the_cheapest_round_trip() -> None:
    lines = run_tool("cassandra_floor.py", "--operations", "200", timeout=300)
    table = lines[lines.index(next(line for line in lines if line.startswith("statement"))) + 1 :]
    names = [line[:42].strip() for line in table[:9]]
    assert names[0] == "baseline: system.local read"
    assert "insert IF NOT EXISTS (LWT)" in names and "counter update" in names
    assert "IN read of 20 stored rows (per row)" in names
    # Rates are positive; node CPU is counted in clock ticks, so a tiny run may read zero.
    assert all(float(line.split()[-3].replace(",", "")) > 0 for line in table[:9])
    assert all(float(line.split()[-2]) >= 0 for line in table[:9])
    assert all(float(line.split()[-1]) > 0 for line in table[:9])
    assert "Submits/s" in lines[-1]


def test_the_table_counter_sees_a_runs_writes_reads_and_lightweight_transactions(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    hosts = engines["HEALTHBANK_CASSANDRA_HOSTS"].split(",")
    port = int(engines["HEALTHBANK_CASSANDRA_PORT"])
    with (
        TABLES.TableCounter.connected(hosts[0], port, keyspace_prefix) as counter,
        coordinated_by(hosts[0], port, metadata=False) as session,
    ):
        session.execute(
            f"CREATE KEYSPACE {keyspace_prefix}_probe WITH replication ="
            " {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE {keyspace_prefix}_probe.t (k int PRIMARY KEY, v int)")
        before = counter.tally()
        for key in range(3):  # three partitions written
            session.execute(f"INSERT INTO {keyspace_prefix}_probe.t (k, v) VALUES ({key}, 0)")
        session.execute(f"SELECT v FROM {keyspace_prefix}_probe.t WHERE k = 0")
        claimed = session.execute(
            f"INSERT INTO {keyspace_prefix}_probe.t (k, v) VALUES (9, 0) IF NOT EXISTS"
        )
        assert claimed.one().applied
        spent = TABLES.spent(before, counter.tally())
        # The node's own disk usage, table by table: the largest as the view lists it, and
        # none for a table it does not have.
        largest = max(
            session.execute(
                "SELECT keyspace_name, table_name, mebibytes FROM system_views.disk_usage"
            ),
            key=lambda row: row.mebibytes,
        )
        assert counter.disk_mib(largest.keyspace_name, largest.table_name) == largest.mebibytes
        assert counter.disk_mib("system", f"{keyspace_prefix}_absent") == 0
    # Three inserts and the transaction's own write; the read and the transaction's read of
    # its partition; its Paxos state in system.paxos.
    assert spent["probe.t"].writes == 4
    assert spent["probe.t"].reads >= 2
    assert spent["system.paxos"].writes >= 1


def test_audit_store_benchmark_prints_the_log_beside_its_leaves_alone_as_json() -> None:
    lines = run_tool("audit_store.py", "--batches", "2", "--events", "50", "--json", timeout=300)
    baseline, appended = json.loads(lines[-1])["rows"]
    assert baseline["name"].startswith("baseline") and appended["name"] == "append_many"
    assert baseline["statements_per_event"] == 1.0
    # A leaf, its person's row, its id's row and the nodes it completes (level 1 and up, ADR
    # 42: about one per event); person_years once per person.
    assert 3.5 < appended["statements_per_event"] < 4.5
    assert appended["appends_per_s"] > 0 and baseline["appends_per_s"] > 0


def test_identity_benchmark_prints_its_quality_beside_splinks_as_json() -> None:
    # 200 resolves: the 100 Checks beside them cost identity some 30 ms of CPU, above /proc's
    # 10 ms tick (25 Checks were read as no CPU at all now and then).
    lines = run_tool("identity.py", "--persons", "400", "--resolves", "200", "--json", timeout=240)
    figures = json.loads(lines[-1])
    qualities = ("precision", "recall", "f1", "splink_precision", "splink_recall", "splink_f1")
    for name in (*qualities, "service_precision", "service_recall"):
        assert 0 < figures[name] <= 1, name
    rates = ["known_resolves_per_s", "new_resolves_per_s", "matcher_new_decisions_per_s"]
    assert all(figures[name] > 0 for name in rates)
    # Beside the resolves, the bare Check of the same service in the same run.
    assert figures["baseline_check_rps"] > 0 and figures["baseline_check_p99_ms"] > 0
    assert figures["check_cpu_ms"]["identity"] > 0
    assert figures["true_pairs"] > 0
    # The warm-up (on by default) resolved another population first, its rates apart.
    assert figures["warmup"]["new_resolves_per_s"] > 0
    assert figures["warmup"]["service_recall"] > 0


def test_node_jit_reads_the_compiler_threads_of_the_running_cassandra(
    engines: dict[str, str],
) -> None:
    sys.path.insert(0, str(REPO / "tools" / "bench"))
    import node_jit

    pid = node_jit.cassandra_pid()
    assert pid is not None
    # A node that has started has compiled code; this test process has no compiler threads.
    assert node_jit.compiler_cpu_seconds(pid) > 0
    assert node_jit.compiler_cpu_seconds(os.getpid()) == 0
    assert node_jit.CompilerMeter(pid).start().cores() >= 0


def test_identity_blocks_prints_how_the_candidate_search_grows_with_the_index() -> None:
    lines = run_tool("identity_blocks.py", "--persons", "300,3000", "--json", timeout=120)
    figures = json.loads(lines[-1])
    assert figures["candidates_per_key"] == 20
    small, large = figures["sizes"]
    assert (small["persons"], large["persons"]) == (300, 3000)
    assert 0 < small["candidates_per_registration"] < large["candidates_per_registration"]
    for size in (small, large):
        assert size["findable"] >= size["findable_capped"] > 0
        assert size["hidden_by_cap"] == size["findable"] - size["findable_capped"]
        assert {"birth_date", "full_name", "phone"} <= set(size["blocks"])
    # One person a key hides some of the matches that twenty find.
    lines = run_tool(
        "identity_blocks.py", "--persons", "3000", "--per-key", "1", "--json", timeout=120
    )
    (one,) = json.loads(lines[-1])["sizes"]
    assert one["hidden_by_cap"] > 0
    assert one["candidates_per_registration"] < large["candidates_per_registration"]


@pytest.mark.parametrize("objects", ["local", "s3"])
def test_archive_benchmark_prints_tiering_compression_and_cold_fetches(objects: str) -> None:
    lines = run_tool(
        "archive.py", "--persons", "4", "--fetches", "2", "--objects", objects, timeout=240
    )
    assert lines[0].startswith(f"objects: {objects}")
    assert lines[1].startswith("tiering: 480 records in") and "records/s" in lines[1]
    assert lines[2].startswith("compression:") and "ratio" in lines[2]
    assert lines[3].startswith("cold fetch, one record: p50")
    assert lines[4].startswith("cold fetch, 5-year history (120 records): p50")
    assert lines[5].startswith("event loop held at most") and "while fetching" in lines[5]
    assert "(baseline, idle:" in lines[5]


def test_hops_prints_each_layer_of_an_emergency_read_beside_a_bare_round_trip() -> None:
    lines = run_tool("hops.py", "--json", "--calls", "5", timeout=240)
    figures = json.loads(lines[-1])
    assert list(figures) == [
        "bare aio Check",
        "service Check",
        "audit AppendEvent",
        "identity LookupByNationalId",
        "consent BreakGlass",
        "GetEmergencySummary",
    ]
    for name, row in figures.items():
        assert 0 < row["p50_ms"] <= row["p90_ms"], name


def test_a_short_run_on_the_embedded_stack_exercises_every_operation(tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "bench" / "load.py"),
            "--seconds",
            "4",
            "--clients",
            "2",
            "--checks",
            "50",
            "--json",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["engines"] == "embedded"
    assert set(result["operations"]) == {"ingest", "history", "emergency"}
    for name, figures in result["operations"].items():
        assert figures["count"] > 0, name
        assert figures["per_s"] > 0, name
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["p999_ms"], name
        assert not set(figures["errors"]) & {"INTERNAL", "UNKNOWN"}, name
    # Histories are the patients' own and hold what was stored: an emergency bundle's three
    # records at least.
    assert (
        result["operations"]["history"]["records_read"]
        >= 3 * (result["operations"]["history"]["count"])
    )
    assert result["patients_stored"] > 8
    for when in ("before", "after"):
        assert result["baseline"][when]["count"] == 50
        assert 0 < result["baseline"][when]["p50_ms"] <= result["baseline"][when]["p99_ms"]
    assert set(result["memory"]) == set(SERVICES)
    for name, memory in result["memory"].items():
        assert len(memory["samples"]) >= 3, name
        assert all(mib > 20 for _, mib in memory["samples"]), name
        assert memory["verdict"] in ("steady", "too short"), name
    assert result["failures"] == []
    assert json.loads((report / "result.json").read_text()) == result
    text = (report / "report.md").read_text()
    assert "| operation | calls OK | per s | p50 ms | p99 ms | p999 ms | errors |" in text
    assert all(f"| {name} |" in text for name in SERVICES)
    # matplotlib is a test dependency (pyproject's dev extra): the charts are always drawn.
    assert (report / "throughput.png").stat().st_size > 0
    assert (report / "memory.png").stat().st_size > 0
