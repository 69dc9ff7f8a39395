"""tools/bench/load.py: its mix, its memory verdict and its table, and a short real run on
the embedded stack."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script

LOAD = load_script(REPO / "tools" / "bench" / "load.py", "healthbank_tools_bench_load")


def test_the_mix_is_read_into_a_weight_per_operation() -> None:
    assert LOAD.parse_mix("ingest=70,history=25,emergency=5") == {
        "ingest": 70.0,
        "history": 25.0,
        "emergency": 5.0,
    }
    # An operation left out weighs nothing; spaces and a trailing comma are forgiven.
    assert LOAD.parse_mix(" history = 1.5 ,") == {"ingest": 0.0, "history": 1.5, "emergency": 0.0}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("ingest=70,upload=5", "unknown operation 'upload'"),
        ("ingest", "operation=weight"),
        ("ingest=-1", "must be a finite number >= 0"),
        ("ingest=nan", "must be a finite number >= 0"),
        ("ingest=lots", "not a number"),
        ("ingest=1,ingest=2", "named twice"),
        ("ingest=0,history=0", "every weight is zero"),
    ],
)
def test_a_mix_that_cannot_be_run_is_refused_saying_why(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        LOAD.parse_mix(text)


def test_picks_follow_the_weights_and_the_seed() -> None:
    mix = LOAD.parse_mix("ingest=70,history=25,emergency=5")
    rng = LOAD.client_rng(1, 0)
    picks = Counter(LOAD.pick(mix, rng) for _ in range(20_000))
    assert picks["ingest"] / 20_000 == pytest.approx(0.70, abs=0.015)
    assert picks["history"] / 20_000 == pytest.approx(0.25, abs=0.015)
    assert picks["emergency"] / 20_000 == pytest.approx(0.05, abs=0.008)

    def sequence(seed: int, client: int) -> list[str]:
        rng = LOAD.client_rng(seed, client)
        return [LOAD.pick(mix, rng) for _ in range(200)]

    assert sequence(1, 3) == sequence(1, 3)  # the same seed and client: the same run
    assert sequence(1, 3) != sequence(1, 4)  # clients do not move in lockstep
    assert sequence(1, 3) != sequence(2, 3)
    only = LOAD.parse_mix("history=1,emergency=0")
    assert {LOAD.pick(only, random.Random(5)) for _ in range(500)} == {"history"}


def series(values: list[float]) -> list[tuple[float, float]]:
    """One sample a second."""
    return [(float(t), v) for t, v in enumerate(values)]


def test_memory_that_keeps_rising_grows_and_one_that_levelled_off_does_not() -> None:
    # 1.5 MiB a second for two minutes: ~90 MiB through the last half.
    leak = LOAD.memory_growth(series([100 + 1.5 * t for t in range(121)]), 64.0)
    assert leak.verdict == "grows"
    assert leak.rise == pytest.approx(90.0)
    assert (leak.start, leak.middle, leak.end) == (100.0, 190.0, 280.0)

    # A warm-up of 150 MiB in the first 50 s, then flat with noise.
    noise = [0.0, 3.0, -2.0, 4.0, -1.0]
    warm = [100 + 3 * min(t, 50) + noise[t % 5] for t in range(121)]
    assert LOAD.memory_growth(series(warm), 64.0).verdict == "steady"

    # A garbage collector's saw-tooth: up 36 MiB, back down, again and again.
    saw = [200 + 4 * (t % 10) for t in range(121)]
    assert LOAD.memory_growth(series(saw), 64.0).verdict == "steady"


def test_a_step_counts_as_growth_only_while_it_is_still_rising_at_the_end() -> None:
    # 100 MiB taken at 70 s (third quarter: 60-90 s) and kept: it levelled off.
    settled = [100 + (100 if t >= 70 else 0) for t in range(121)]
    assert LOAD.memory_growth(series(settled), 64.0).verdict == "steady"
    # The same step at 100 s, in the last quarter: nothing says it stopped there.
    late = [100 + (100 if t >= 100 else 0) for t in range(121)]
    assert LOAD.memory_growth(series(late), 64.0).verdict == "grows"


def test_the_limit_decides_how_much_a_slow_leak_must_add() -> None:
    slow = series([100 + 0.5 * t for t in range(121)])  # 30 MiB through the last half
    assert LOAD.memory_growth(slow, 64.0).verdict == "steady"
    assert LOAD.memory_growth(slow, 16.0).verdict == "grows"


def test_too_few_samples_give_no_verdict() -> None:
    assert LOAD.memory_growth(series([100, 400, 900]), 64.0).verdict == "too short"
    assert LOAD.memory_growth([], 64.0).verdict == "too short"


def test_the_table_gives_nearest_rank_percentiles_rates_and_errors_by_code() -> None:
    mix = LOAD.parse_mix("ingest=1,history=1")
    done = [(i / 100, "ingest", ms / 1000) for i, ms in enumerate(range(1000, 0, -1))]
    done += [(1.0, "history", 0.004), (2.0, "history", 0.002)]
    errors = {
        "ingest": Counter({"UNAVAILABLE": 2, "OUTCOME_REJECTED": 1}),
        "history": Counter(),
        "emergency": Counter(),
    }
    figures = LOAD.operation_figures(done, errors, 10.0, mix)
    assert list(figures) == ["ingest", "history"]  # emergency weighs 0 and saw nothing
    ingest = figures["ingest"]
    assert ingest["count"] == 1000 and ingest["per_s"] == pytest.approx(100.0)
    assert (ingest["p50_ms"], ingest["p99_ms"], ingest["p999_ms"]) == pytest.approx(
        (501.0, 991.0, 1000.0)
    )
    assert ingest["errors"] == {"OUTCOME_REJECTED": 1, "UNAVAILABLE": 2}
    table = LOAD.operations_table(figures)
    assert (
        "| ingest | 1,000 | 100.0 | 501.0 | 991.0 | 1,000.0 | OUTCOME_REJECTED 1, UNAVAILABLE 2 |"
        in table
    )
    assert "| history | 2 | 0.2 | 4.0 | 4.0 | 4.0 | none |" in table


def test_a_growing_service_or_an_internal_answer_fails_the_run_and_an_engine_does_not() -> None:
    def memory(kind: str, verdict: str) -> dict[str, object]:
        return {"kind": kind, "verdict": verdict, "rise_last_half_mib": 99.0}

    ok = {"ingest": {"errors": {"UNAVAILABLE": 3}}}
    result = {
        "operations": ok,
        "memory": {"audit": memory("service", "steady"), "cassandra": memory("engine", "grows")},
    }
    assert LOAD.failures(result) == []
    result["memory"]["audit"] = memory("service", "grows")
    assert LOAD.failures(result) == ["audit: memory grows (+99 MiB over the last half)"]
    result["memory"]["audit"] = memory("service", "too short")
    result["operations"] = {"history": {"errors": {"INTERNAL": 1, "UNKNOWN": 2}}}
    assert LOAD.failures(result) == ["history: 1 answered INTERNAL", "history: 2 answered UNKNOWN"]


def test_a_run_of_a_whole_number_and_a_half_seconds_ends_without_a_dip() -> None:
    # 10 ingest calls a second, evenly, for 5.5 s: the half second at the end is left out,
    # not drawn as a second of 5 calls.
    done = [(i / 10, "ingest", 0.01) for i in range(55)]
    assert LOAD.CHAOS.per_second(done, 5.5) == {"ingest": [10, 10, 10, 10, 10]}
    # A call that ended exactly at a whole last second is in no whole second either.
    assert LOAD.CHAOS.per_second([(0.5, "history", 0.01), (2.0, "history", 0.01)], 2.0) == {
        "history": [1, 0]
    }


def test_result_json_is_compact_and_reads_back_the_same() -> None:
    result = {
        "seconds": 600.16,
        "mix": {"ingest": 70.0},
        "errors": {},
        "per_second": {"ingest": [10, 11]},
        "memory": {"audit": {"samples": [[0.0, 101.5], [1.0, 102.25]], "verdict": "steady"}},
        "failures": [],
    }
    text = LOAD.report_json(result)
    assert json.loads(text) == result
    assert list(json.loads(text)) == list(result)
    assert '"samples": [[0.0,101.5],[1.0,102.25]]' in text  # an array on one line
    assert '\n "memory": {\n  "audit": {\n' in text  # an object a key a line
