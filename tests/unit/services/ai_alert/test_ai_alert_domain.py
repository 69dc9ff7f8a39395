"""AI-alert domain: Holt forecast and alert levels, personal lab trends."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.ai_alert import forecast, trends
from services.ai_alert.forecast import AlertLevel

# --- forecast ---------------------------------------------------------------------------------


def poisson(rng: random.Random, mean: float) -> float:
    """Knuth's Poisson sampler (fine for the small means used here)."""
    limit, k, product = math.exp(-mean), 0, 1.0
    while True:
        product *= rng.random()
        if product < limit:
            return float(k)
        k += 1


WEEKLY = (1.2, 1.1, 1.0, 1.0, 0.95, 0.75, 0.7)  # weekday visits high, weekends low


def test_holt_follows_a_perfect_line_exactly() -> None:
    series = [5.0 + 2.0 * day for day in range(30)]
    fit = forecast.fit_holt(series)
    assert fit.residual_sd == pytest.approx(0.0, abs=1e-9)
    days = forecast.holt_forecast(fit, 3)
    assert [day.count for day in days] == pytest.approx([65.0, 67.0, 69.0])
    assert [day.upper for day in days] == pytest.approx([65.0, 67.0, 69.0])


def test_holt_prediction_interval_widens_with_the_horizon() -> None:
    rng = random.Random(7)
    fit = forecast.fit_holt([poisson(rng, 20) for _ in range(56)])
    days = forecast.holt_forecast(fit, 28)
    widths = [day.upper - day.count for day in days]
    assert all(later >= earlier for earlier, later in itertools.pairwise(widths))
    assert widths[0] == pytest.approx(forecast.Z_95 * fit.residual_sd)


def test_forecast_of_a_falling_series_never_goes_negative() -> None:
    series = [max(30.0 - 2.0 * day, 0.0) for day in range(20)]
    assessment = forecast.assess(series, 28)
    assert min(day.count for day in assessment.forecast) >= 0.0


def test_grid_search_picks_the_lowest_one_step_error() -> None:
    rng = random.Random(3)
    series = [10 + poisson(rng, 5) + (day // 10) * 3 for day in range(60)]
    fit = forecast.fit_holt(series)
    for alpha in forecast.ALPHA_GRID:
        for beta in forecast.BETA_GRID:
            other = forecast.fit_holt(series, alphas=(alpha,), betas=(beta,))
            assert fit.sse <= other.sse + 1e-9


def test_flat_series_is_normal() -> None:
    assessment = forecast.assess([10.0] * 56, 14)
    assert assessment.level == AlertLevel.NORMAL
    assert assessment.first_warning_day is None
    assert [day.count for day in assessment.forecast] == pytest.approx([10.0] * 14)
    assert "within its baseline" in assessment.explanation


@pytest.mark.parametrize("seed", range(10))
def test_flat_noisy_counts_are_normal(seed: int) -> None:
    rng = random.Random(seed)
    history = [poisson(rng, 20) for _ in range(56)]
    assert forecast.assess(history, 7).level != AlertLevel.WARNING


def test_growing_outbreak_warns_before_counts_reach_the_outbreak_line() -> None:
    # Six quiet weeks around 10 a day, then a week of steady growth.
    quiet = [9.0, 11.0] * 24
    rising = [10.0 + 1.0 * step for step in range(1, 9)]
    history = quiet + rising
    assessment = forecast.assess(history, 14)
    assert max(history) < assessment.baseline.outbreak_threshold
    assert assessment.level == AlertLevel.WARNING
    assert assessment.first_warning_day is not None
    assert 1 <= assessment.first_warning_day <= 7
    crossing = assessment.forecast[assessment.first_warning_day - 1]
    assert crossing.upper > assessment.baseline.outbreak_threshold
    assert "expected to exceed" in assessment.explanation


def test_exponential_outbreak_warns_tomorrow() -> None:
    rng = random.Random(11)
    history = [poisson(rng, 10 if day < 42 else 10 * 1.15 ** (day - 41)) for day in range(56)]
    assessment = forecast.assess(history, 14)
    assert assessment.level == AlertLevel.WARNING
    assert assessment.first_warning_day == 1


@pytest.mark.parametrize("seed", range(20))
def test_noisy_weekly_seasonality_does_not_raise_a_warning(seed: int) -> None:
    rng = random.Random(seed)
    history = [poisson(rng, 30 * WEEKLY[day % 7]) for day in range(56)]
    assert forecast.assess(history, 14).level != AlertLevel.WARNING


def test_season_rising_over_the_window_is_at_least_watch() -> None:
    # The start of a flu season: counts doubling over eight weeks, with weekday noise.
    rng = random.Random(5)
    history = [poisson(rng, 20 * 2 ** (day / 56) * WEEKLY[day % 7]) for day in range(56)]
    assert forecast.assess(history, 14).level in (AlertLevel.WATCH, AlertLevel.WARNING)


def test_season_falling_over_the_window_is_normal() -> None:
    rng = random.Random(5)
    history = [poisson(rng, 40 * 2 ** (-day / 28) * WEEKLY[day % 7]) for day in range(56)]
    assert forecast.assess(history, 14).level == AlertLevel.NORMAL


def test_recent_rise_without_forecast_crossing_is_watch() -> None:
    # Recent week clearly above the older half, but flat: no trend to extrapolate.
    history = [10.0, 12.0] * 21 + [15.0, 16.0] * 7
    assessment = forecast.assess(history, 3)
    assert assessment.level == AlertLevel.WATCH
    assert "last 7 days" in assessment.explanation


def test_baseline_sd_is_floored_at_poisson_noise() -> None:
    baseline = forecast.baseline_of([16.0] * 20)
    assert baseline.sd == pytest.approx(4.0)
    assert forecast.baseline_of([0.0] * 20).sd == pytest.approx(1.0)


@pytest.mark.parametrize(("history_days", "horizon"), [(6, 7), (56, 0), (56, 29)])
def test_assess_rejects_out_of_range_windows(history_days: int, horizon: int) -> None:
    with pytest.raises(ValueError):
        forecast.assess([1.0] * history_days, horizon)


# --- personal trends ----------------------------------------------------------------------

NOW = datetime(2025, 6, 1, tzinfo=UTC)
GLUCOSE = trends.KNOWN_TESTS["1558-6"]


def glucose(years_ago: float, value: float, unit: str = "mmol/L") -> trends.Measurement:
    return trends.Measurement("1558-6", NOW - timedelta(days=years_ago * 365.2425), value, unit)


def test_theil_sen_recovers_slope_and_ignores_an_outlier() -> None:
    points = [(0, 1.0), (1, 3.0), (2, 5.0), (3, 40.0), (4, 9.0)]
    fit = trends.fit_trend(points)
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(1.0)


def test_mann_kendall_needs_enough_monotone_points_to_call_a_trend_real() -> None:
    # Four perfectly rising points: exact p = 2/24, not significant; five: 2/120, significant.
    assert not trends.fit_trend([(x, float(x)) for x in range(4)]).significant
    five = trends.fit_trend([(x, float(x)) for x in range(5)])
    assert five.p_value == pytest.approx(1 / 60)
    assert five.significant


def test_flat_series_has_slope_zero_and_no_evidence() -> None:
    fit = trends.fit_trend([(x / 3, 6.0) for x in range(20)])
    assert (fit.slope, fit.p_value, fit.significant) == (0.0, 1.0, False)


def test_rising_glucose_projects_crossing_and_writes_reminder() -> None:
    # 5.2 -> 6.4 mmol/L over four years: 0.3 per year, reaching 7.0 two years on.
    series = [glucose(4 - year, 5.2 + 0.3 * year) for year in range(5)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.slope_per_year == pytest.approx(0.3, rel=1e-3)
    assert trend.threshold == 7.0
    assert trend.significant
    assert trend.projected_crossing is not None
    assert abs((trend.projected_crossing - (NOW + timedelta(days=730))).days) <= 2
    assert trend.reminder == (
        "Fasting glucose has risen 0.3 mmol/L per year; at this pace it reaches 7.0 mmol/L "
        f"around {trend.projected_crossing:%Y-%m} (from 5 results, 2021-06 to 2025-06; "
        "trend test p = 0.017). Consider a check-up."
    )
    assert trend.reminder_zh == (
        "您的空腹血糖每年上升0.3 mmol/L，按此速度约在"
        f"{trend.projected_crossing:%Y年%m月}达到7.0 mmol/L"
        "（依据2021年06月至2025年06月的5次结果，趋势检验 p = 0.017）。建议做一次检查。"
    )


def test_rise_that_is_not_significant_gets_no_crossing_and_no_reminder() -> None:
    # Up and down with a slight upward tilt: the least-squares line would project a crossing.
    values = [5.0, 6.2, 5.1, 6.3, 5.2, 6.4]
    series = [glucose(3 - 0.5 * k, value) for k, value in enumerate(values)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert not trend.significant
    assert trend.projected_crossing is None
    assert (trend.reminder, trend.reminder_zh) == ("", "")


def test_slope_of_rounding_residue_never_overflows() -> None:
    # The INTERNAL of issue 12: a flat series whose least-squares slope was 6.8e-17.
    series = [glucose(5 - k / 4, 6.0 + (1e-15 if k % 7 == 3 else 0.0)) for k in range(21)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.projected_crossing is None
    assert trend.reminder == ""


def test_stable_glucose_has_no_reminder() -> None:
    series = [glucose(4 - year, 5.0 + (0.1 if year % 2 else -0.1)) for year in range(5)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.projected_crossing is None or trend.reminder == ""
    assert trend.reminder == ""


def test_far_away_crossing_is_projected_without_reminder() -> None:
    series = [glucose(4 - year, 5.0 + 0.05 * year) for year in range(5)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.projected_crossing is not None
    assert trend.projected_crossing > NOW + timedelta(days=365 * 10)
    assert trend.reminder == ""


def test_value_already_above_threshold_says_so() -> None:
    series = [glucose(2, 6.8), glucose(1, 7.1), glucose(0, 7.4)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.projected_crossing is None
    assert trend.reminder.startswith(
        "Your latest fasting glucose (7.4 mmol/L, 2025-06) is at or above 7.0 mmol/L"
    )
    assert trend.reminder_zh.startswith(
        "您最近一次空腹血糖为7.4 mmol/L（2025年06月），已达到或超过"
    )


@pytest.mark.parametrize(
    "series",
    [
        [glucose(1, 5.0), glucose(0, 6.0)],  # too few samples
        [glucose(0.3, 5.0), glucose(0.2, 5.5), glucose(0, 6.0)],  # spans under 180 days
    ],
)
def test_too_little_data_gives_no_trend(series: list[trends.Measurement]) -> None:
    assert trends.analyze(GLUCOSE, series, NOW) is None


def test_units_are_converted_to_the_latest_unit() -> None:
    series = [glucose(3, 90.0, "mg/dL"), glucose(2, 99.0, "mg/dL"), glucose(0, 6.0)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.unit == "mmol/L"
    assert trend.sample_count == 3
    assert trend.threshold == 7.0


def test_mg_dl_threshold_applies_to_mg_dl_results() -> None:
    series = [glucose(4 - year, 100.0 + 5 * year, "mg/dL") for year in range(5)]
    trend = trends.analyze(GLUCOSE, series, NOW)
    assert trend is not None
    assert trend.threshold == 126.0
    assert "5.0 mg/dL per year" in trend.reminder
    assert "126 mg/dL" in trend.reminder


def test_systolic_pressure_reminder_reads_mmhg() -> None:
    test = trends.KNOWN_TESTS["8480-6"]
    series = [
        trends.Measurement(
            "8480-6", NOW - timedelta(days=365 * (4 - year)), 115 + 5 * year, "mm[Hg]"
        )
        for year in range(5)
    ]
    trend = trends.analyze(test, series, NOW)
    assert trend is not None
    assert "reaches 140 mmHg" in trend.reminder
    assert trend.reminder.startswith("Systolic blood pressure has risen 5.0 mmHg per year")


def test_personal_trends_groups_by_test() -> None:
    hba1c = [
        trends.Measurement("4548-4", NOW - timedelta(days=200 * k), 5.5 + 0.1 * (3 - k), "%")
        for k in range(4)
    ]
    glucose_series = [glucose(4 - year, 5.2 + 0.3 * year) for year in range(5)]
    found = trends.personal_trends([*hba1c, *glucose_series], NOW)
    assert [trend.test.loinc for trend in found] == ["1558-6", "4548-4"]


def observation(**fields: object) -> bytes:
    return json.dumps({"resourceType": "Observation", "status": "final", **fields}).encode()


def test_observation_value_quantity_is_read() -> None:
    document = observation(
        code={"coding": [{"system": trends.LOINC_SYSTEM, "code": "1558-6"}]},
        valueQuantity={"value": 6.1, "unit": "mmol/l", "system": "http://unitsofmeasure.org"},
        effectiveDateTime="2024-03-02T08:00:00Z",
    )
    found = trends.measurements_from_observation(document, record_code="", record_time=NOW)
    assert found == [
        trends.Measurement("1558-6", datetime(2024, 3, 2, 8, tzinfo=UTC), 6.1, "mmol/L")
    ]


def test_blood_pressure_panel_components_are_read() -> None:
    document = observation(
        code={"coding": [{"system": trends.LOINC_SYSTEM, "code": "85354-6"}]},
        component=[
            {
                "code": {"coding": [{"system": trends.LOINC_SYSTEM, "code": "8480-6"}]},
                "valueQuantity": {"value": 135, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": trends.LOINC_SYSTEM, "code": "8462-4"}]},
                "valueQuantity": {"value": 85, "code": "mm[Hg]"},
            },
        ],
    )
    found = trends.measurements_from_observation(document, record_code="85354-6", record_time=NOW)
    assert found == [trends.Measurement("8480-6", NOW, 135.0, "mm[Hg]")]


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        observation(valueString="high"),
        observation(valueQuantity={"value": "6.1", "unit": "mmol/L"}),
        observation(valueQuantity={"value": 6.1, "unit": "furlongs"}),
    ],
)
def test_unusable_observations_yield_nothing(document: bytes) -> None:
    assert (
        trends.measurements_from_observation(document, record_code="1558-6", record_time=NOW) == []
    )


def test_record_code_fills_in_a_missing_resource_code() -> None:
    document = observation(valueQuantity={"value": 6.1, "unit": "mmol/L"})
    found = trends.measurements_from_observation(document, record_code="1558-6", record_time=NOW)
    assert [m.loinc for m in found] == ["1558-6"]
