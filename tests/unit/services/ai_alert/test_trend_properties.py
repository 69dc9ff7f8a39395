"""Properties of personal trends over thousands of generated lab series (issue 12, DM4).

Whatever the series (flat, one point, duplicated times and values, values near the float
limit, mixed units), analysis never raises; a flat series below the threshold gets no
reminder, and no flat series ever gets a crossing date.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ai_alert import trends

NOW = datetime(2026, 1, 15, tzinfo=UTC)
GLUCOSE = trends.KNOWN_TESTS["1558-6"]

_days_ago = st.integers(min_value=0, max_value=20 * 365)
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e308, max_value=1e308),
    st.floats(min_value=3.0, max_value=9.0),
)
_unit = st.sampled_from(["mmol/L", "mg/dL", "%"])


def _measurement(days_ago: int, value: float, unit: str) -> trends.Measurement:
    return trends.Measurement("1558-6", NOW - timedelta(days=days_ago), value, unit)


@settings(max_examples=1200, deadline=None)
@given(
    st.lists(st.tuples(_days_ago, _value, _unit), min_size=0, max_size=40).map(
        lambda rows: [_measurement(*row) for row in rows]
    )
)
def test_any_series_is_analysed_without_error(series: list[trends.Measurement]) -> None:
    trend = trends.analyze(GLUCOSE, series, NOW)
    if trend is None:
        return
    assert trend.sample_count >= trends.MIN_SAMPLES
    if trend.projected_crossing is not None:
        assert trend.significant
        assert trend.slope_per_year > 0
        assert trend.projected_crossing >= NOW
    assert 0.0 <= trend.p_value <= 1.0


@settings(max_examples=1000, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=1e300),
    st.lists(_days_ago, min_size=1, max_size=60),
    st.booleans(),
)
def test_flat_series_gets_no_crossing_and_no_reminder_below_the_threshold(
    level: float, days: list[int], duplicate: bool
) -> None:
    if duplicate:
        days = days + days  # the same result sent twice
    series = [_measurement(day, level, "mmol/L") for day in days]
    trend = trends.analyze(GLUCOSE, series, NOW)
    if trend is None:
        return
    assert trend.slope_per_year == 0.0
    assert not trend.significant
    assert trend.projected_crossing is None
    if level < GLUCOSE.thresholds["mmol/L"]:
        assert (trend.reminder, trend.reminder_zh) == ("", "")
    else:
        # A fact, not a projection: the latest value is at or above the threshold.
        assert "at or above" in trend.reminder


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e300, max_value=1e300, allow_nan=False), _days_ago)
def test_one_point_is_no_trend(value: float, days_ago: int) -> None:
    assert trends.analyze(GLUCOSE, [_measurement(days_ago, value, "mmol/L")], NOW) is None
