"""EARS C1/C2/C3 and the NB-CUSUM on hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from services.ai_alert import detectors


def flat_then(value: float, days: int = 40, level: float = 10.0) -> np.ndarray:
    return np.array([level + (1 if day % 2 else -1) for day in range(days)] + [value])


def test_c1_and_c2_flag_a_spike_three_sd_above_their_baseline() -> None:
    for variant in ("C1", "C2"):
        spike = detectors.ears(flat_then(30.0), variant)
        assert spike.alarm[-1]
        # Baseline sd of 10 +- 1 is below Poisson noise: floored at sqrt(10).
        assert spike.statistic[-1] == pytest.approx(
            (30.0 - spike.expected[-1]) / np.sqrt(10.0), rel=0.05
        )
        assert not detectors.ears(flat_then(14.0), variant).alarm[-1]


def test_c2_leaves_a_two_day_guard_band() -> None:
    counts = flat_then(30.0)
    counts = np.append(counts, [30.0, 30.0])
    c1, c2 = detectors.ears(counts, "C1"), detectors.ears(counts, "C2")
    # Two days on, C1's baseline already holds the rise; C2's does not.
    assert c2.expected[-1] < c1.expected[-1]
    assert c2.alarm[-1]


def test_c3_sums_three_days_of_excess() -> None:
    counts = np.append(flat_then(17.0), [17.0, 17.0])
    c3 = detectors.ears(counts, "C3")
    assert c3.threshold == 2.0
    assert c3.statistic[-1] > c3.statistic[-3]


def test_nothing_alarms_before_a_baseline_exists() -> None:
    counts = np.full(10, 50.0)
    for detection in (detectors.ears(counts, "C2"), detectors.nb_cusum(counts)):
        assert not detection.alarm.any()


def test_cusum_adds_up_a_small_sustained_rise_that_c2_misses() -> None:
    rng = np.random.default_rng(3)
    counts = rng.poisson(10.0, 80).astype(float)
    counts[60:] += 5.0  # about 1.5 sd a day, never 3 sd
    cusum = detectors.nb_cusum(counts, k=0.5, h=4.0)
    assert cusum.alarm[60:].any()
    assert not cusum.alarm[:60].any()


def test_a_days_answer_never_depends_on_later_days() -> None:
    rng = np.random.default_rng(4)
    counts = rng.poisson(12.0, 120).astype(float)
    for name, run in (
        ("C2", lambda c: detectors.ears(c, "C2")),
        ("CUSUM", lambda c: detectors.nb_cusum(c)),
    ):
        whole, head = run(counts), run(counts[:90])
        assert np.array_equal(whole.alarm[:90], head.alarm), name


def test_the_seasonal_expectation_is_last_seasons_median_not_its_outbreak() -> None:
    rng = np.random.default_rng(5)
    days = np.arange(2 * 365)
    season = 10.0 * (1.0 + 0.4 * np.cos(2 * np.pi * days / 365))
    counts = rng.poisson(season).astype(float)
    counts[361:364] += 40.0  # last winter's three-day outbreak
    expected = detectors.seasonal_expectation(counts)
    winter = 365 + 363
    assert expected[winter] == pytest.approx(season[winter], rel=0.25)


def seasonal(days: int, base: float = 10.0) -> np.ndarray:
    t = np.arange(days)
    return base * (1.0 + 0.35 * np.cos(2 * np.pi * t / 365))


def test_the_glm_expectation_follows_the_season_and_ignores_a_past_outbreak() -> None:
    truth = seasonal(3 * 365)
    later = slice(2 * 365, 3 * 365)
    quiet = detectors.glm_expectation(truth)
    # A log-linear harmonic is not exactly 1 + 0.35 cos: a few per cent at most.
    assert np.max(np.abs(quiet[later] - truth[later]) / truth[later]) < 0.05
    counts = truth.copy()
    counts[400:430] += 25.0  # last year's outbreak: 750 extra cases, +150 % for a month
    expected = detectors.glm_expectation(counts)
    # Down-weighted, it lifts this year's expectation by a few per cent only.
    assert np.max(np.abs(expected[later] - truth[later]) / truth[later]) < 0.1
    # Before GLM_SHORT_DAYS + the guard band there is no expectation yet.
    assert np.isnan(expected[: detectors.GLM_SHORT_DAYS + detectors.GLM_GUARD_DAYS]).all()


def test_the_glm_expectation_of_a_day_reads_no_later_day() -> None:
    rng = np.random.default_rng(3)
    counts = rng.poisson(seasonal(500)).astype(float)
    whole = detectors.glm_expectation(counts)
    for day in (100, 200, 480):
        assert detectors.glm_expectation(counts[: day + 1])[day] == pytest.approx(whole[day])


def test_the_glm_cusum_alarms_on_a_slow_rise_that_c2_misses() -> None:
    counts = seasonal(2 * 365)
    counts[600:620] += np.linspace(1.0, 4.0, 20)  # a rise of a few cases a day
    glm = detectors.glm_cusum(counts)
    assert glm.alarm[600:620].any()
    assert not glm.alarm[100:590].any()
    assert not detectors.ears(counts, "C2").alarm[600:620].any()


def test_cusum_grid_equals_one_cusum_per_threshold() -> None:
    scores = np.random.default_rng(5).normal(0.2, 1.0, 300)
    thresholds = np.array([1.0, 2.5, 4.0])
    grid = detectors.cusum_grid(scores, 0.25, thresholds)
    for row, h in enumerate(thresholds):
        assert (grid[row] == detectors.cusum(scores, 0.25, h)[1]).all()


def test_the_glm_expectation_from_a_day_on_equals_the_whole_runs() -> None:
    counts = np.random.default_rng(4).poisson(seasonal(800)).astype(float)
    whole = detectors.glm_expectation(counts)
    later = detectors.glm_expectation(counts, from_day=700)
    assert np.isnan(later[:700]).all()
    assert later[700:] == pytest.approx(whole[700:])


def test_latest_verdicts_give_both_detectors_with_their_evidence() -> None:
    counts = seasonal(2 * 365)
    counts[-12:] += np.linspace(2.0, 12.0, 12)
    glm, c2 = detectors.latest_verdicts(counts)
    assert (glm.detector, c2.detector) == ("GLM-CUSUM", "EARS C2")
    assert glm.alarm and glm.days_since_alarm == 0
    assert glm.observed == counts[-1] and glm.expected > 0
    assert glm.statistic > glm.threshold == detectors.SERVICE_GLM_H
    assert "GLM-CUSUM alarms" in glm.evidence
    quiet = detectors.latest_verdicts(np.zeros(30))
    assert not any(verdict.alarm for verdict in quiet)
    assert all("too little history" in verdict.evidence for verdict in quiet)
