"""Outbreak detectors over one district's daily case counts (ADR 30).

Pure numpy, no I/O. Each detector reads a series of daily counts (oldest first) and gives,
per day, a statistic and whether it alarms that day, using only that day and the days
before it (so a day's answer never changes when later days arrive):

- **EARS C1, C2, C3** (CDC's Early Aberration Reporting System, Hutwagner et al. 2003), the
  baselines every method is compared with. C1: ``(x_t - mean) / sd`` over the 7 days before
  t; C2: the same over days t-9..t-3 (a 2-day guard band); C3: the sum of
  ``max(0, C2 - 1)`` over t, t-1, t-2. Alarms: C1, C2 above 3; C3 above 2.
- **NB-CUSUM**: a one-sided CUSUM of standardised counts against a longer, lagged baseline
  (the mean of days t-35..t-8: four weeks ending a week back, so a building outbreak does
  not raise its own expectation), with negative-binomial variance ``mu + mu^2 / size``
  (``size`` from the baseline's spread by moments, at most :data:`MAX_NB_SIZE`). CUSUM adds
  up small excesses day after day, so a rising SEIR curve is flagged before any single
  day stands out the way C2 needs; after an alarm it restarts from 0.

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
MAX_NB_SIZE = 1000.0

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


def _window_trend(counts: FloatArray, lag: int, width: int) -> FloatArray:
    """The least-squares line through ``counts[t-lag-width+1 .. t-lag]`` extended to day t
    (NaN before enough days): the expectation follows the season's slope."""
    n = len(counts)
    expected = np.full(n, np.nan)
    if n >= lag + width:
        windows = np.lib.stride_tricks.sliding_window_view(counts, width)
        first_t = lag + width - 1
        used = windows[: n - first_t]
        x = np.arange(width, dtype=float) - (width - 1) / 2
        slope = used @ x / float(x @ x)
        # Day t sits ``lag + (width - 1) / 2`` days after the window's centre.
        expected[first_t:] = used.mean(axis=1) + slope * (lag + (width - 1) / 2)
    return expected


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


def nb_cusum(counts: FloatArray, k: float = 0.5, h: float = 4.0) -> Detection:
    """One-sided NB-CUSUM with reference value ``k`` (in sd) and decision interval ``h``."""
    values = np.asarray(counts, dtype=float)
    mean, sd = _window_stats(values, CUSUM_LAG_DAYS + 1, CUSUM_BASELINE_DAYS)
    with np.errstate(invalid="ignore", divide="ignore"):
        extra = np.maximum(sd**2 - mean, 1e-9)
        size = np.minimum(np.where(extra > 1e-9, mean**2 / extra, MAX_NB_SIZE), MAX_NB_SIZE)
        variance = mean + mean**2 / size
        z = (values - mean) / np.sqrt(np.maximum(variance, np.maximum(mean, 1.0)))
    statistic = np.full(len(values), np.nan)
    alarm = np.zeros(len(values), dtype=bool)
    running = 0.0
    for t, score in enumerate(z):
        if math.isnan(score):
            continue
        running = max(0.0, running + float(score) - k)
        statistic[t] = running
        if running > h:
            alarm[t] = True
            running = 0.0
    return Detection(statistic, h, mean, alarm)
