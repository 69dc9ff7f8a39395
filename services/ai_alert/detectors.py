"""Outbreak detectors over one district's daily case counts (ADR 30).

Pure numpy, no I/O. Each detector reads a series of daily counts (oldest first) and gives,
per day, a statistic and whether it alarms that day, using only that day and the days
before it (so a day's answer never changes when later days arrive):

- **EARS C1, C2, C3** (CDC's Early Aberration Reporting System, Hutwagner et al. 2003), the
  baselines every method is compared with. C1: ``(x_t - mean) / sd`` over the 7 days before
  t; C2: the same over days t-9..t-3 (a 2-day guard band); C3: the sum of
  ``max(0, C2 - 1)`` over t, t-1, t-2. Alarms: C1, C2 above 3; C3 above 2.
- **NB-CUSUM**: a one-sided CUSUM of standardised counts against a seasonal baseline, with
  negative-binomial variance ``mu + mu^2 / size`` (:data:`NB_SIZE`). The expectation is
  Farrington-like: the *median* of the counts within :data:`SEASON_HALF_WIDTH` days of the
  same day in the previous years (a median, so past outbreaks in those windows barely move
  it); before a year of history, the mean of days t-35..t-8 (four weeks ending a week
  back, so a building outbreak does not raise its own expectation). CUSUM adds up small
  excesses day after day; after an alarm it restarts from 0.
- **GLM-CUSUM** (the harness's best, ADR 30): the same CUSUM against a better expectation,
  a log-linear Poisson regression on annual harmonics (``cos``, ``sin`` of the day of the
  year) fitted to all of the district's history up to :data:`GLM_GUARD_DAYS` before the
  day (at most :data:`GLM_YEARS` years), refitted every :data:`GLM_REFIT_DAYS` days.
  Farrington-style reweighting (Noufaily et al. 2013): days more than
  :data:`GLM_REWEIGHT_Z` sd above the first fit (past outbreaks) are down-weighted by
  ``(z0 / z)^2`` in a second fit. Before :data:`GLM_MIN_HISTORY_DAYS` of history the
  expectation is the mean of the :data:`GLM_SHORT_DAYS` days before the guard band. A
  regression over the whole history has far less noise than a four-week mean or three
  earlier seasons' medians, so a small excess stands out days earlier (the harness: a
  median of about 10 days from onset against C2's 12.5).

Every sd is floored at ``sqrt(max(mean, 1))`` (Poisson noise): a flat baseline would
otherwise turn one extra case into an alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

EARS_THRESHOLD = 3.0
C3_THRESHOLD = 2.0
CUSUM_BASELINE_DAYS = 28
CUSUM_LAG_DAYS = 7
NB_SIZE = 25.0
SEASON_DAYS = 365
SEASON_HALF_WIDTH = 7
SEASON_YEARS = 3

GLM_GUARD_DAYS = 7
GLM_REFIT_DAYS = 7
GLM_YEARS = 3
GLM_MIN_HISTORY_DAYS = 120
GLM_SHORT_DAYS = 56
GLM_REWEIGHT_Z = 2.0
GLM_ITERATIONS = 25

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Detection:
    """Per day: the detector's statistic, its threshold, the expected count and the alarm."""

    statistic: FloatArray
    threshold: float
    expected: FloatArray
    alarm: BoolArray


def _window_stats(counts: FloatArray, lag: int, width: int) -> tuple[FloatArray, FloatArray]:
    """Mean and sd of ``counts[t-lag-width+1 .. t-lag]`` for each t (NaN before enough days)."""
    n = len(counts)
    mean = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    if n >= lag + width:
        windows = np.lib.stride_tricks.sliding_window_view(counts, width)
        # windows[i] covers days i..i+width-1; day t uses i = t - lag - width + 1.
        first_t = lag + width - 1
        mean[first_t:] = windows[: n - first_t].mean(axis=1)
        sd[first_t:] = windows[: n - first_t].std(axis=1, ddof=1)
    return mean, sd


def _floored(mean: FloatArray, sd: FloatArray) -> FloatArray:
    return np.maximum(sd, np.sqrt(np.maximum(mean, 1.0)))


def ears(counts: FloatArray, variant: str, threshold: float | None = None) -> Detection:
    """EARS ``variant`` ("C1", "C2" or "C3") with its standard threshold unless given."""
    values = np.asarray(counts, dtype=float)
    if variant == "C1":
        mean, sd = _window_stats(values, 1, 7)
    elif variant in ("C2", "C3"):
        mean, sd = _window_stats(values, 3, 7)
    else:
        raise ValueError(f"unknown EARS variant {variant!r}")
    with np.errstate(invalid="ignore"):
        statistic = (values - mean) / _floored(mean, sd)
    if variant == "C3":
        excess = np.maximum(np.nan_to_num(statistic, nan=0.0) - 1.0, 0.0)
        summed = (
            excess
            + np.concatenate([[0.0], excess[:-1]])
            + np.concatenate([[0.0, 0.0], excess[:-2]])
        )
        statistic = np.where(np.isnan(statistic), np.nan, summed)
        limit = C3_THRESHOLD if threshold is None else threshold
    else:
        limit = EARS_THRESHOLD if threshold is None else threshold
    alarm = np.nan_to_num(statistic, nan=-math.inf) > limit
    return Detection(statistic, limit, mean, alarm)


def seasonal_expectation(counts: FloatArray) -> FloatArray:
    """Per day: the median of the same season's days in up to :data:`SEASON_YEARS` previous
    years, else (less than a year of history) the lagged four-week mean; NaN before that."""
    values = np.asarray(counts, dtype=float)
    expected, _ = _window_stats(values, CUSUM_LAG_DAYS + 1, CUSUM_BASELINE_DAYS)
    for t in range(SEASON_DAYS + SEASON_HALF_WIDTH, len(values)):
        same_season = [
            values[centre - SEASON_HALF_WIDTH : centre + SEASON_HALF_WIDTH + 1]
            for years in range(1, SEASON_YEARS + 1)
            if (centre := t - years * SEASON_DAYS) - SEASON_HALF_WIDTH >= 0
        ]
        expected[t] = float(np.median(np.concatenate(same_season)))
    return expected


def nb_scores(counts: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per day: the seasonal expectation and the count standardised against it (NB variance)."""
    values = np.asarray(counts, dtype=float)
    mean = seasonal_expectation(values)
    return mean, standardised(values, mean)


def cusum(scores: FloatArray, k: float, h: float) -> tuple[FloatArray, BoolArray]:
    """One-sided CUSUM of ``scores``: the running sums and the alarms (reset after each)."""
    statistic = np.full(len(scores), np.nan)
    alarm = np.zeros(len(scores), dtype=bool)
    running = 0.0
    for t, score in enumerate(scores):
        if math.isnan(score):
            continue
        running = max(0.0, running + float(score) - k)
        statistic[t] = running
        if running > h:
            alarm[t] = True
            running = 0.0
    return statistic, alarm


def nb_cusum(counts: FloatArray, k: float = 0.5, h: float = 4.25) -> Detection:
    """One-sided NB-CUSUM with reference value ``k`` (in sd) and decision interval ``h``."""
    mean, scores = nb_scores(counts)
    statistic, alarm = cusum(scores, k, h)
    return Detection(statistic, h, mean, alarm)


def _harmonics(days: FloatArray) -> FloatArray:
    """The regression's design: intercept, cos and sin of the annual cycle."""
    angle = 2 * np.pi * days / SEASON_DAYS
    return np.column_stack([np.ones_like(days), np.cos(angle), np.sin(angle)])


def _poisson_fit(design: FloatArray, counts: FloatArray, weights: FloatArray) -> FloatArray:
    """Coefficients of a weighted log-linear Poisson regression (IRLS)."""
    mean: FloatArray = np.maximum(counts, 0.5)
    eta: FloatArray = np.log(mean)
    coefficients: FloatArray = np.zeros(design.shape[1])
    ridge = 1e-8 * np.eye(design.shape[1])  # keeps an all-zero history solvable
    for _ in range(GLM_ITERATIONS):
        working = eta + (counts - mean) / mean
        weighted = design.T * (weights * mean)
        updated: FloatArray = np.linalg.solve(weighted @ design + ridge, weighted @ working).astype(
            np.float64
        )
        converged = np.max(np.abs(updated - coefficients)) < 1e-6
        coefficients = updated
        eta = np.clip(design @ coefficients, -20.0, 20.0).astype(np.float64)
        mean = np.exp(eta)
        if converged:
            break
    return coefficients


def glm_expectation(counts: FloatArray, from_day: int = 0) -> FloatArray:
    """Per day from ``from_day`` on: the harmonic regression's expected count from the
    history before the guard band (see the module docstring); NaN before
    :data:`GLM_SHORT_DAYS` of history and before ``from_day``."""
    values = np.asarray(counts, dtype=float)
    days = np.arange(len(values), dtype=float)
    expected = np.full(len(values), np.nan)
    first_fit = GLM_SHORT_DAYS + GLM_GUARD_DAYS
    # Refit days stay on the same grid whatever from_day is: a day's expectation is one.
    skipped = max(0, (from_day - first_fit) // GLM_REFIT_DAYS)
    for start in range(first_fit + skipped * GLM_REFIT_DAYS, len(values), GLM_REFIT_DAYS):
        last = start - GLM_GUARD_DAYS  # the fit reads days before this one
        stop = min(start + GLM_REFIT_DAYS, len(values))
        if last < GLM_MIN_HISTORY_DAYS:
            expected[start:stop] = values[last - GLM_SHORT_DAYS : last].mean()
            continue
        first = max(0, last - GLM_YEARS * SEASON_DAYS)
        design = _harmonics(days[first:last])
        history = values[first:last]
        if not history.any():
            expected[start:stop] = 0.0  # nothing counted yet: the fit would chase log(0)
            continue
        coefficients = _poisson_fit(design, history, np.ones(len(history)))
        fitted = np.exp(design @ coefficients)
        z = (history - fitted) / np.sqrt(fitted + fitted**2 / NB_SIZE)
        weights = (GLM_REWEIGHT_Z / np.maximum(z, GLM_REWEIGHT_Z)) ** 2
        coefficients = _poisson_fit(design, history, weights)
        expected[start:stop] = np.exp(_harmonics(days[start:stop]) @ coefficients)
    expected[:from_day] = np.nan
    return expected


def standardised(counts: FloatArray, mean: FloatArray) -> FloatArray:
    """``counts`` standardised against ``mean`` with negative-binomial variance (NaN where
    there is no expectation yet)."""
    with np.errstate(invalid="ignore"):
        variance = np.maximum(mean + mean**2 / NB_SIZE, np.maximum(mean, 1.0))
        return (np.asarray(counts, dtype=float) - mean) / np.sqrt(variance)


def cusum_grid(scores: FloatArray, k: float, hs: FloatArray) -> BoolArray:
    """The alarms of :func:`cusum` for every decision interval in ``hs`` at once (rows)."""
    thresholds = np.asarray(hs, dtype=float)
    alarm = np.zeros((len(thresholds), len(scores)), dtype=bool)
    running = np.zeros(len(thresholds))
    for t, score in enumerate(scores):
        if math.isnan(score):
            continue
        running = np.maximum(running + float(score) - k, 0.0)
        fired = running > thresholds
        alarm[:, t] = fired
        running[fired] = 0.0
    return alarm


def glm_cusum(counts: FloatArray, k: float = 0.1, h: float = 6.25, from_day: int = 0) -> Detection:
    """CUSUM (``k``, ``h``) of counts standardised against :func:`glm_expectation`,
    starting at 0 on ``from_day``."""
    mean = glm_expectation(counts, from_day)
    statistic, alarm = cusum(standardised(counts, mean), k, h)
    return Detection(statistic, h, mean, alarm)


# The GLM-CUSUM's (k, h) as tools/weather.py tunes them on its training seeds (ADR 30).
SERVICE_GLM_K = 0.1
SERVICE_GLM_H = 6.25
# Days of counts the detectors read: the GLM's years of history and its guard band.
DETECTOR_HISTORY_DAYS = GLM_YEARS * SEASON_DAYS + GLM_GUARD_DAYS
# The service's CUSUM starts at 0 this many days back (13 refits, not 150, per answer);
# a CUSUM that has not alarmed for weeks sits near 0 anyway.
SERVICE_CUSUM_DAYS = 91
# A verdict warns while the detector alarmed on any of this many last days: a CUSUM
# restarts after each alarm, so one day's statistic alone would forget an ongoing rise.
ALARM_MEMORY_DAYS = 7


@dataclass(frozen=True)
class Verdict:
    """One detector's answer on the last day of a series, with the numbers behind it
    (0 where the detector has too little history yet); ``alarm`` when it alarmed within the
    last :data:`ALARM_MEMORY_DAYS` days, ``days_since_alarm`` days ago (0: that day)."""

    detector: str
    alarm: bool
    days_since_alarm: int | None
    observed: float
    expected: float
    statistic: float
    threshold: float

    @property
    def evidence(self) -> str:
        """The verdict in one sentence."""
        if self.expected == 0.0 and self.statistic == 0.0:
            return f"{self.detector}: too little history to judge yet."
        if self.days_since_alarm is None:
            verdict = "no alarm"
        elif self.days_since_alarm == 0:
            verdict = "alarms"
        else:
            verdict = f"alarmed {self.days_since_alarm} days ago"
        return (
            f"{self.detector} {verdict}: {self.observed:g} cases observed against "
            f"{self.expected:.1f} expected; statistic {self.statistic:.2f}, "
            f"threshold {self.threshold:g}."
        )


def latest_verdicts(counts: FloatArray) -> tuple[Verdict, ...]:
    """The GLM-CUSUM's and EARS C2's verdicts on the last day of ``counts``. Days before
    the first count are not zeros but days before counting began: they are left out."""
    values = np.asarray(counts, dtype=float)
    counted = np.flatnonzero(values)
    values = values[counted[0] :] if len(counted) else values[-1:]
    verdicts = []
    for name, detection in (
        (
            "GLM-CUSUM",
            glm_cusum(
                values, SERVICE_GLM_K, SERVICE_GLM_H, max(len(values) - SERVICE_CUSUM_DAYS, 0)
            ),
        ),
        ("EARS C2", ears(values, "C2")),
    ):
        expected, statistic = float(detection.expected[-1]), float(detection.statistic[-1])
        known = not (math.isnan(expected) or math.isnan(statistic))
        recent = np.flatnonzero(detection.alarm[-ALARM_MEMORY_DAYS:][::-1])
        days_since = int(recent[0]) if len(recent) else None
        verdicts.append(
            Verdict(
                detector=name,
                alarm=days_since is not None,
                days_since_alarm=days_since,
                observed=float(values[-1]),
                expected=expected if known else 0.0,
                statistic=statistic if known else 0.0,
                threshold=detection.threshold,
            )
        )
    return tuple(verdicts)
