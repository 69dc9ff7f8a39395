"""City "health weather": forecasting daily influenza-like-illness (ILI) diagnoses.

Pure functions, no I/O. The model is deliberately small and explainable:

**Holt's linear exponential smoothing** (level + trend, additive errors, no seasonality).
``alpha`` (level) and ``beta`` (trend) are chosen from a small grid by minimising the sum of
squared one-step-ahead errors over the history. The h-step forecast is ``level + h * trend``
(floored at 0: counts are never negative) and its 95% prediction interval uses the ETS(A,A,N)
variance ``sigma^2 * (1 + sum_{j=1}^{h-1} alpha^2 (1 + j beta)^2)`` (Hyndman et al.,
*Forecasting with Exponential Smoothing*, 2008, table 6.1), with ``sigma`` the residual
standard deviation of the one-step errors.

**Alert levels** against a baseline (mean and sd) of the *older half* of the history
window, so an outbreak building in the recent half does not raise its own threshold:

- ``WARNING`` ("outbreak expected within the horizon") on the first forecast day where the
  95% upper bound exceeds the **outbreak line**, an EARS-C2-style threshold of
  ``baseline mean + 3 sd``, *and* the point forecast itself is above ``mean + 2 sd``.
  (CDC's EARS C2 flags a day more than 3 sd above a lagged 7-day baseline; we keep its
  3-sd rule with a longer, steadier baseline and the whole recent half as the guard band.)
  The upper bound alone is not enough: Holt's interval widens with the horizon, so for a
  stable but noisy series it crosses any fixed line sooner or later (in simulation, about
  half of pure-Poisson 56-day histories at a 28-day horizon); requiring the expected count
  to leave the usual band as well keeps that false-alarm rate at a few percent, while a
  real rise still warns days before the counts reach the line.
- ``WATCH`` when the last 7 days' mean exceeds ``baseline mean + 1 sd``.
- ``NORMAL`` otherwise.

The baseline sd is floored at ``sqrt(max(mean, 1))``: counts are at least Poisson-noisy, and
a perfectly flat baseline would otherwise turn one extra case into an alarm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from statistics import fmean, stdev

DEFAULT_HISTORY_DAYS = 56
MIN_HISTORY_DAYS = 7
MAX_HISTORY_DAYS = 365
MIN_HORIZON_DAYS = 1
MAX_HORIZON_DAYS = 28

ALPHA_GRID: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BETA_GRID: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054
OUTBREAK_SD = 3.0
ALERT_SD = 2.0
WATCH_SD = 1.0
RECENT_DAYS = 7


class AlertLevel(IntEnum):
    """Warning level; the numbers are ``healthbank.ai_alert.v1.AlertLevel``."""

    NORMAL = 1
    WATCH = 2
    WARNING = 3


@dataclass(frozen=True)
class HoltFit:
    """Fitted Holt model: smoothing weights, final state and residual spread."""

    alpha: float
    beta: float
    level: float
    trend: float
    sse: float
    residual_sd: float


@dataclass(frozen=True)
class ForecastDay:
    """Expected count ``days_ahead`` days after the last observed day, with its 95%
    prediction interval (the lower bound floored at 0: counts are never negative)."""

    days_ahead: int
    count: float
    upper: float
    lower: float = 0.0


@dataclass(frozen=True)
class Baseline:
    """Mean and (floored) sd of the older half of the history, and the thresholds they give."""

    mean: float
    sd: float

    @property
    def outbreak_threshold(self) -> float:
        """The outbreak line: a forecast upper bound above it (with the alert line) warns."""
        return self.mean + OUTBREAK_SD * self.sd

    @property
    def alert_threshold(self) -> float:
        """The usual band's top: a point forecast above it (with the outbreak line) warns."""
        return self.mean + ALERT_SD * self.sd

    @property
    def watch_threshold(self) -> float:
        """Recent weekly mean above which the level is at least WATCH."""
        return self.mean + WATCH_SD * self.sd


@dataclass(frozen=True)
class Assessment:
    """The forecast, the level and a one-sentence explanation."""

    forecast: tuple[ForecastDay, ...]
    level: AlertLevel
    explanation: str
    baseline: Baseline
    fit: HoltFit
    # First forecast day (1 = the day after the history) that raises the WARNING, if any.
    first_warning_day: int | None


def _holt_errors(series: Sequence[float], alpha: float, beta: float) -> tuple[float, float, float]:
    """Run Holt over ``series``; return (sse of one-step errors, final level, final trend)."""
    level, trend = _initial_state(series)
    sse = 0.0
    for value in series[1:]:
        error = value - (level + trend)
        sse += error * error
        new_level = alpha * value + (1 - alpha) * (level + trend)
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    return sse, level, trend


def _initial_state(series: Sequence[float]) -> tuple[float, float]:
    """Initial level and trend: least-squares line through the first two weeks (or less).

    A line through several days is far less noisy than the first difference, whose noise
    would otherwise drift the level for the whole fit.
    """
    window = series[: min(len(series), 2 * RECENT_DAYS)]
    n = len(window)
    x_mean = (n - 1) / 2
    y_mean = fmean(window)
    sxx = sum((x - x_mean) ** 2 for x in range(n))
    slope = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(window)) / sxx
    # The level "before" day 0, so the first one-step forecast is the line's value at day 0.
    return y_mean - slope * x_mean, slope


def fit_holt(
    series: Sequence[float],
    alphas: Sequence[float] = ALPHA_GRID,
    betas: Sequence[float] = BETA_GRID,
) -> HoltFit:
    """Fit Holt's linear method by grid search on one-step-ahead SSE (needs >= 3 points)."""
    if len(series) < 3:
        raise ValueError("Holt's method needs at least 3 observations")
    best: HoltFit | None = None
    for alpha in alphas:
        for beta in betas:
            sse, level, trend = _holt_errors(series, alpha, beta)
            if best is None or sse < best.sse:
                best = HoltFit(alpha, beta, level, trend, sse, 0.0)
    assert best is not None
    # Degrees of freedom: one-step errors minus the two smoothing parameters.
    dof = max(len(series) - 1 - 2, 1)
    return HoltFit(
        best.alpha, best.beta, best.level, best.trend, best.sse, math.sqrt(best.sse / dof)
    )


def holt_forecast(fit: HoltFit, horizon: int) -> tuple[ForecastDay, ...]:
    """Point forecasts and 95% intervals for days 1..``horizon`` after the history."""
    days = []
    spread = 1.0  # 1 + sum_{j=1}^{h-1} alpha^2 (1 + j beta)^2, grown one term per day
    for step in range(1, horizon + 1):
        if step > 1:
            spread += (fit.alpha * (1 + (step - 1) * fit.beta)) ** 2
        mean = max(fit.level + step * fit.trend, 0.0)
        half_width = Z_95 * fit.residual_sd * math.sqrt(spread)
        days.append(ForecastDay(step, mean, mean + half_width, max(mean - half_width, 0.0)))
    return tuple(days)


def baseline_of(history: Sequence[float]) -> Baseline:
    """Baseline from the older half of ``history`` (sd floored at sqrt(mean), min 1)."""
    older = history[: max(len(history) // 2, 2)]
    mean = fmean(older)
    sd = stdev(older) if len(older) > 1 else 0.0
    return Baseline(mean, max(sd, math.sqrt(max(mean, 1.0))))


def assess(history: Sequence[float], horizon: int) -> Assessment:
    """Fit, forecast ``horizon`` days and set the alert level (see the module docstring)."""
    if not MIN_HORIZON_DAYS <= horizon <= MAX_HORIZON_DAYS:
        raise ValueError(f"horizon must be {MIN_HORIZON_DAYS}-{MAX_HORIZON_DAYS} days")
    if len(history) < MIN_HISTORY_DAYS:
        raise ValueError(f"history must have at least {MIN_HISTORY_DAYS} days")
    fit = fit_holt(history)
    forecast = holt_forecast(fit, horizon)
    baseline = baseline_of(history)
    recent_mean = fmean(history[-RECENT_DAYS:])
    first_warning = next(
        (
            day.days_ahead
            for day in forecast
            if day.upper > baseline.outbreak_threshold and day.count > baseline.alert_threshold
        ),
        None,
    )
    if first_warning is not None:
        level = AlertLevel.WARNING
        explanation = (
            f"Daily ILI diagnoses are expected to exceed {baseline.alert_threshold:.1f} "
            f"(baseline + 2 SD) {_in_days(first_warning)}, with the 95% upper bound above "
            f"the outbreak line of {baseline.outbreak_threshold:.1f}."
        )
    elif recent_mean > baseline.watch_threshold:
        level = AlertLevel.WATCH
        explanation = (
            f"The last {RECENT_DAYS} days averaged {recent_mean:.1f} daily ILI diagnoses, "
            f"above the baseline of {baseline.mean:.1f} plus one standard deviation."
        )
    else:
        level = AlertLevel.NORMAL
        explanation = (
            f"ILI activity is within its baseline of {baseline.mean:.1f} daily diagnoses "
            f"and no outbreak is expected in the next {_days(horizon)}."
        )
    return Assessment(forecast, level, explanation, baseline, fit, first_warning)


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _in_days(n: int) -> str:
    return "tomorrow" if n == 1 else f"within {_days(n)}"
