"""tools/bench/cassandra_tables.py: the node's per-table counts become a part's work per
operation, the run's own keyspaces and the system ones only."""

from __future__ import annotations

from repo_paths import REPO

from healthbank.dev.scripts import load_script

RUN = load_script(REPO / "tools" / "bench" / "run.py", "healthbank_tools_bench_run")
TABLES = RUN.cassandra_tables
Work = TABLES.TableWork


def test_a_runs_keyspaces_are_named_by_concern_and_other_runs_are_left_out() -> None:
    assert TABLES.table_name("bench_123_audit", "log_head", "bench_123") == "audit.log_head"
    assert TABLES.table_name("system", "paxos", "bench_123") == "system.paxos"
    assert TABLES.table_name("system_schema", "tables", "bench_123") == "system_schema.tables"
    # Another run's keyspaces, and one whose prefix merely starts the same, are not ours.
    assert TABLES.table_name("bench_456_audit", "log_head", "bench_123") is None
    assert TABLES.table_name("bench_1234_audit", "log_head", "bench_123") is None


def test_point_reads_and_scans_add_up_as_reads_and_idle_tables_are_left_out() -> None:
    rows = [
        ("reads", "bench_1_records", "records", 5),
        ("reads", "bench_1_records", "records", 2),  # the scan view's row of the same table
        ("writes", "bench_1_records", "records", 3),
        ("writes", "system", "paxos", 9),
        ("writes", "bench_2_records", "records", 100),
        ("reads", "bench_1_audit", "leaves", 0),
    ]
    assert TABLES.tally(rows, "bench_1") == {
        "records.records": Work(reads=7, writes=3),
        "system.paxos": Work(reads=0, writes=9),
    }


def test_what_tables_did_between_two_tallies_is_divided_among_the_operations() -> None:
    before = {"records.records": Work(10, 4), "audit.leaves": Work(0, 8)}
    after = {
        "records.records": Work(40, 4),
        "audit.leaves": Work(0, 8),
        "system.paxos": Work(0, 90),
    }
    done = TABLES.spent(before, after)
    # Busiest first; a table that did nothing meanwhile is left out.
    assert list(done) == ["system.paxos", "records.records"]
    assert done["system.paxos"] == Work(0, 90) and done["records.records"] == Work(30, 0)
    spent = TABLES.per_operation(done, 30)
    assert list(spent) == ["system.paxos", "records.records"]
    assert spent["system.paxos"] == Work(0, 3) and spent["records.records"] == Work(1, 0)
    assert TABLES.per_operation(done, 0) == {}


def test_the_table_has_a_line_per_operation_with_its_busiest_tables() -> None:
    work = {
        "history_read": {f"audit.t{i}": Work(1, 0) for i in range(14)},
        "check": {"system.local": Work(0.001, 0), "audit.log_head": Work(0.5, 0.25)},
    }
    lines = TABLES.table(work, limit=12).splitlines()
    history = next(line for line in lines if line.startswith("history_read"))
    assert "audit.t0 1.00/0.00" in history and history.endswith("+2 more")
    check = next(line for line in lines if line.startswith("check"))
    # Less than one in 200 operations would print as 0.00: the text leaves it to the JSON.
    assert "audit.log_head 0.50/0.25" in check and "system.local" not in check
    assert TABLES.as_json(work)["check"]["system.local"] == {"reads": 0.001, "writes": 0}
