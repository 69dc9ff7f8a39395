"""The health weather's evaluation harness (tools/weather.py) on a tiny configuration."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script


@pytest.fixture(scope="module")
def weather() -> ModuleType:
    return load_script(REPO / "tools" / "weather.py", "weather")


def run_json(weather: ModuleType, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert weather.main(["--json", "--seeds", "1", "--districts", "3", "--years", "2", *args]) == 0
    result: dict = json.loads(capsys.readouterr().out)
    return result


def test_json_has_c2_and_the_best_detector_with_computed_numbers(
    weather: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(weather, capsys)
    assert set(result["c2"]) >= {"name", "sensitivity", "median_delay_days", "false_alarms_per_100"}
    assert set(result["best"]) >= {
        "name",
        "sensitivity",
        "median_delay_days",
        "false_alarms_per_100",
    }
    assert result["c2"]["name"] == "EARS C2"
    assert result["best"]["name"].startswith("GLM-CUSUM")
    assert result["best"] == {**result["detectors"][-1], **result["best"]}
    assert isinstance(result["best"]["paired_days_earlier_than_c2"], float)
    assert [entry["name"] for entry in result["detectors"]][:3] == ["EARS C1", "EARS C2", "EARS C3"]
    for entry in result["detectors"]:
        assert 0.0 <= entry["sensitivity"] <= 1.0
        assert entry["false_alarms_per_100"] >= 0.0
        assert entry["outbreaks"] > 0
    # Tuning never sees the evaluation seeds.
    assert not set(result["seeds"]["training"]) & set(result["seeds"]["evaluation"])
    # Other seeds, other seasons, other numbers: nothing is a constant.
    other = run_json(weather, capsys, "--seed-base", "7")
    assert other["detectors"] != result["detectors"]


def test_the_table_lists_every_detector_beside_c2(
    weather: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert weather.main(["--seeds", "1", "--districts", "3", "--years", "2"]) == 0
    printed = capsys.readouterr().out
    for name in ("EARS C1", "EARS C2", "EARS C3", "NB-CUSUM", "GLM-CUSUM"):
        assert name in printed


def test_an_outbreak_is_scored_from_its_onset(weather: ModuleType) -> None:
    import numpy as np

    counts = np.zeros(100)
    district = weather.District(counts, ((60, 70),))
    alarm_on_63 = weather.score("x", lambda c: np.arange(len(c)) == 63, [district])
    assert (alarm_on_63.sensitivity, alarm_on_63.median_delay_days) == (1.0, 3.0)
    assert alarm_on_63.false_alarms_per_100 == 0.0
    quiet_alarm = weather.score("y", lambda c: np.arange(len(c)) == 44, [district])
    assert quiet_alarm.sensitivity == 0.0
    assert quiet_alarm.false_alarms_per_100 > 0.0


def test_forecasts_are_scored_against_a_naive_baseline(
    weather: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    scored = run_json(weather, capsys)["forecast"]
    assert scored["holt_wis"] > 0 and scored["naive_wis"] > 0
    assert scored["relative"] == pytest.approx(scored["holt_wis"] / scored["naive_wis"], rel=0.01)


def test_the_weighted_interval_score_rewards_sharp_right_forecasts(weather: ModuleType) -> None:
    assert weather.weighted_interval_score(10.0, 10.0, 0.0) == 0.0
    # Off by 4 with no spread: only the median term and the interval misses count.
    missed = weather.weighted_interval_score(14.0, 10.0, 0.0)
    expected = (0.5 * 4 + sum(alpha / 2 * (2 / alpha * 4) for alpha in weather.WIS_ALPHAS)) / 3.5
    assert missed == pytest.approx(expected)
    assert weather.weighted_interval_score(14.0, 10.0, 3.0) < missed
