"""tools/bench/quiet.py: a benchmark part waits for a quiet machine, and never for ever."""

from __future__ import annotations

import time

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script

QUIET = load_script(REPO / "tools" / "bench" / "quiet.py", "healthbank_tools_bench_quiet")


def test_the_busy_share_is_busy_time_over_all_time_between_two_readings() -> None:
    assert QUIET.busy_fraction((100, 1000), (130, 1200)) == pytest.approx(0.15)
    # No time passed (two readings in one tick): nothing was busy.
    assert QUIET.busy_fraction((100, 1000), (100, 1000)) == 0.0


def test_this_machine_reports_its_cpu_times() -> None:
    times = QUIET.cpu_times()
    assert times is not None
    busy, total = times
    assert 0 < busy < total


async def test_a_machine_under_any_threshold_counts_as_quiet_after_two_windows() -> None:
    started = time.monotonic()
    waited = await QUIET.until_quiet("part", busy_below=1.01, window_s=0.05, limit_s=30)
    assert 0.09 < waited < 5
    assert time.monotonic() - started < 5


async def test_a_machine_never_quiet_enough_waits_only_up_to_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    waited = await QUIET.until_quiet("audit", busy_below=0.0, window_s=0.05, limit_s=0.3)
    assert 0.3 <= waited < 2
    assert "[bench] audit: started after" in capsys.readouterr().err
