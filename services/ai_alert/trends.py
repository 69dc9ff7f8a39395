"""Personal lab trends: a robust trend per test and a reminder when it heads for a threshold.

Pure functions, no I/O (ADR 30). For each known LOINC test a person has at least
:data:`MIN_SAMPLES` results of, spanning at least :data:`MIN_SPAN_DAYS`, a Theil-Sen line
``value ~ time`` is fitted and a Mann-Kendall test says whether the trend is real. Only a
significant rising trend whose latest value is still below the threshold of concern gets a
projected crossing date (never further than :data:`MAX_PROJECTION_YEARS`); a reminder is
written when that date is less than :data:`REMINDER_HORIZON_YEARS` away, or when the latest
value already is at or above the threshold. A flat series has slope 0 and no crossing.

Reminders, in English and Chinese, never contain identifiers: only the test's name, the
rate, the threshold, months, and the numbers behind them (result count, period, p-value).

Thresholds (adult, commonly used cut-offs; a reminder is a nudge, not a diagnosis):

================  ==========================  ======================  ====================
LOINC             test                        threshold               source of the cut-off
================  ==========================  ======================  ====================
1558-6            fasting glucose             7.0 mmol/L, 126 mg/dL   WHO/ADA diabetes
4548-4            HbA1c                       6.5 %, 48 mmol/mol      WHO/ADA diabetes
18262-6           LDL cholesterol (direct)    4.1 mmol/L, 160 mg/dL   NCEP ATP III "high"
8480-6            systolic blood pressure     140 mm[Hg]              ESC/ESH hypertension
================  ==========================  ======================  ====================
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

LOINC_SYSTEM = "http://loinc.org"

MIN_SAMPLES = 3
MIN_SPAN_DAYS = 180
REMINDER_HORIZON_YEARS = 5.0
# A crossing further away than this is not a projection anyone should act on.
MAX_PROJECTION_YEARS = 50.0
# Mann-Kendall level below which a trend counts as real.
SIGNIFICANCE = 0.05
_DAYS_PER_YEAR = 365.2425


@dataclass(frozen=True)
class LabTest:
    """A lab test we follow: its name, threshold per unit and unit conversions."""

    loinc: str
    name: str
    name_zh: str
    display: str
    thresholds: Mapping[str, float]
    # (from unit, to unit) -> multiply by this factor.
    conversions: Mapping[tuple[str, str], float] = field(default_factory=dict)


def _both_ways(a: str, b: str, factor: float) -> dict[tuple[str, str], float]:
    return {(a, b): factor, (b, a): 1 / factor}


KNOWN_TESTS: Mapping[str, LabTest] = {
    test.loinc: test
    for test in (
        LabTest(
            "1558-6",
            "Fasting glucose",
            "空腹血糖",
            "Fasting glucose [Moles/volume] in Serum or Plasma",
            {"mmol/L": 7.0, "mg/dL": 126.0},
            # Glucose: 1 mmol/L = 18.016 mg/dL (molar mass 180.16 g/mol).
            _both_ways("mmol/L", "mg/dL", 18.016),
        ),
        LabTest(
            "4548-4",
            "HbA1c",
            "糖化血红蛋白",
            "Hemoglobin A1c/Hemoglobin.total in Blood",
            # NGSP % and IFCC mmol/mol are related affinely, not by a factor: not converted.
            {"%": 6.5, "mmol/mol": 48.0},
        ),
        LabTest(
            "18262-6",
            "LDL cholesterol",
            "低密度脂蛋白胆固醇",
            "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
            {"mmol/L": 4.1, "mg/dL": 160.0},
            # Cholesterol: 1 mmol/L = 38.67 mg/dL.
            _both_ways("mmol/L", "mg/dL", 38.67),
        ),
        LabTest(
            "8480-6",
            "Systolic blood pressure",
            "收缩压",
            "Systolic blood pressure",
            {"mm[Hg]": 140.0},
        ),
    )
}

# Spellings hospitals use, folded to the UCUM code.
_UNIT_ALIASES = {
    "mmol/l": "mmol/L",
    "mg/dl": "mg/dL",
    "%": "%",
    "percent": "%",
    "mmol/mol": "mmol/mol",
    "mm[hg]": "mm[Hg]",
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
}

# How units read in a sentence.
_UNIT_TEXT = {"mm[Hg]": " mmHg", "%": "%"}


def normalize_unit(unit: str) -> str | None:
    """The UCUM code of a unit spelling we know, or None."""
    return _UNIT_ALIASES.get(unit.strip().lower())


@dataclass(frozen=True)
class Measurement:
    """One lab result: which test, when, the value and its (normalized) unit."""

    loinc: str
    time: datetime
    value: float
    unit: str


@dataclass(frozen=True)
class Trend:
    """The fitted trend of one test."""

    test: LabTest
    unit: str
    sample_count: int
    latest_value: float
    slope_per_year: float
    threshold: float
    projected_crossing: datetime | None
    reminder: str
    reminder_zh: str = ""
    # Mann-Kendall p-value of the trend and whether it is below SIGNIFICANCE.
    p_value: float = 1.0
    significant: bool = False


def measurements_from_observation(
    document: bytes, *, record_code: str, record_time: datetime
) -> list[Measurement]:
    """The known-test values in a FHIR Observation (its own value and its components).

    ``record_code`` and ``record_time`` (the canonical record's LOINC code and effective
    time) fill in what the resource leaves out. Values that are not quantities in a known
    unit are skipped: they cannot be on a trend line.
    """
    try:
        resource: Any = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(resource, dict):
        return []
    time = _effective_time(resource) or record_time
    found: list[Measurement] = []
    own_code = _loinc_code(resource.get("code")) or record_code
    own = _quantity(resource.get("valueQuantity"))
    if own is not None and own_code in KNOWN_TESTS:
        found.append(Measurement(own_code, time, *own))
    for component in resource.get("component") or []:
        if not isinstance(component, dict):
            continue
        code = _loinc_code(component.get("code"))
        value = _quantity(component.get("valueQuantity"))
        if code in KNOWN_TESTS and value is not None:
            found.append(Measurement(code, time, *value))
    return found


def _loinc_code(concept: object) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == LOINC_SYSTEM:
            code = coding.get("code")
            if isinstance(code, str):
                return code
    return ""


def _quantity(quantity: object) -> tuple[float, str] | None:
    if not isinstance(quantity, dict):
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # UCUM code first (machine-readable), then the human unit text.
    for key in ("code", "unit"):
        spelled = quantity.get(key)
        if isinstance(spelled, str):
            unit = normalize_unit(spelled)
            if unit is not None:
                return float(value), unit
    return None


def _effective_time(resource: Mapping[str, Any]) -> datetime | None:
    candidates = [resource.get("effectiveDateTime"), resource.get("effectiveInstant")]
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        candidates.append(period.get("start"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            try:
                moment = datetime.fromisoformat(candidate.replace("Z", "+00:00"))
            except ValueError:
                continue
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class TrendFit:
    """A robust line ``value = intercept + slope * years`` and whether the trend is real."""

    intercept: float
    slope: float
    # Two-sided Mann-Kendall p-value; 1.0 when there is no ordering at all (a flat series).
    p_value: float

    @property
    def significant(self) -> bool:
        """True when the Mann-Kendall test rejects "no monotonic trend" at :data:`SIGNIFICANCE`."""
        return self.p_value < SIGNIFICANCE and self.slope != 0


def fit_trend(points: Sequence[tuple[float, float]]) -> TrendFit:
    """Theil-Sen slope (median of pairwise slopes) and Mann-Kendall significance.

    Theil-Sen shrugs off an outlier that would tilt a least-squares line, and a flat series
    gets a slope of exactly 0 (no 6.8e-17 rounding residue). Mann-Kendall is Kendall's tau
    between time and value (tie-corrected); with too few or constant values there is no
    evidence of a trend and the p-value is 1. Slopes that are not finite (values near the
    float limit) count as no trend.
    """
    if len(points) < 2:
        raise ValueError("a trend needs at least two points")
    times = np.array([x for x, _ in points], dtype=float)
    values = np.array([y for _, y in points], dtype=float)
    if np.ptp(times) == 0:
        raise ValueError("all points are at the same time")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slope, intercept, _, _ = stats.theilslopes(values, times)
        tau = stats.kendalltau(times, values)
    p_value = float(tau.pvalue)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        return TrendFit(float(values[-1]) if math.isfinite(values[-1]) else 0.0, 0.0, 1.0)
    return TrendFit(float(intercept), float(slope), p_value if math.isfinite(p_value) else 1.0)


def analyze(test: LabTest, measurements: Iterable[Measurement], now: datetime) -> Trend | None:
    """The trend of one test, or None when there is too little data to say anything.

    Values are converted to the unit of the most recent result where a conversion is known;
    the others (and values that are not finite numbers) are left out. A crossing is
    projected only for a significant rising trend, and only within
    :data:`MAX_PROJECTION_YEARS`; a reminder is written for a crossing within
    :data:`REMINDER_HORIZON_YEARS`, or when the latest value already is at or above the
    threshold.
    """
    ordered = sorted(measurements, key=lambda m: m.time)
    if not ordered:
        return None
    unit = ordered[-1].unit
    threshold = test.thresholds.get(unit)
    if threshold is None:
        return None
    samples: list[tuple[datetime, float]] = []
    for measurement in ordered:
        if measurement.unit == unit:
            value = measurement.value
        elif (measurement.unit, unit) in test.conversions:
            value = measurement.value * test.conversions[(measurement.unit, unit)]
        else:
            continue
        if math.isfinite(value):
            samples.append((measurement.time, value))
    if len(samples) < MIN_SAMPLES:
        return None
    first, last = samples[0][0], samples[-1][0]
    if (last - first) < timedelta(days=MIN_SPAN_DAYS):
        return None
    fit = fit_trend([(_years(time - first), value) for time, value in samples])
    latest = samples[-1][1]
    evidence = Evidence(len(samples), first, last, fit.p_value)
    crossing: datetime | None = None
    reminder = ReminderText("", "")
    if latest >= threshold:
        reminder = _at_or_above(test, latest, threshold, unit, evidence)
    elif fit.significant and fit.slope > 0:
        line_now = fit.intercept + fit.slope * _years(last - first)
        years_to_go = (threshold - line_now) / fit.slope
        if math.isfinite(years_to_go) and years_to_go <= MAX_PROJECTION_YEARS:
            # The line may already be past the threshold while the last reading is just
            # below: the crossing is then "now", not in the past.
            crossing = max(last + timedelta(days=max(years_to_go, 0.0) * _DAYS_PER_YEAR), now)
            if _years(crossing - now) <= REMINDER_HORIZON_YEARS:
                reminder = _heading_for(test, fit.slope, threshold, unit, crossing, evidence)
    return Trend(
        test=test,
        unit=unit,
        sample_count=len(samples),
        latest_value=latest,
        slope_per_year=fit.slope,
        threshold=threshold,
        projected_crossing=crossing,
        reminder=reminder.english,
        reminder_zh=reminder.chinese,
        p_value=fit.p_value,
        significant=fit.significant,
    )


@dataclass(frozen=True)
class Evidence:
    """The numbers behind a reminder: how many results, over which months, how sure."""

    sample_count: int
    first: datetime
    last: datetime
    p_value: float

    def english(self) -> str:
        """The evidence as an English sentence fragment."""
        return (
            f"(from {self.sample_count} results, {self.first:%Y-%m} to {self.last:%Y-%m}; "
            f"trend test p = {_p(self.p_value)})"
        )

    def chinese(self) -> str:
        """The evidence as a Chinese sentence fragment."""
        return (
            f"（依据{self.first:%Y年%m月}至{self.last:%Y年%m月}的{self.sample_count}次结果，"
            f"趋势检验 p = {_p(self.p_value)}）"
        )


@dataclass(frozen=True)
class ReminderText:
    """One reminder in English and in Chinese (both empty when there is nothing to say)."""

    english: str
    chinese: str


def _at_or_above(
    test: LabTest, latest: float, threshold: float, unit: str, evidence: Evidence
) -> ReminderText:
    return ReminderText(
        f"Your latest {_lower_first(test.name)} ({_amount(latest, unit)}, {evidence.last:%Y-%m})"
        f" is at or above {_amount(threshold, unit)}. Please discuss it with your doctor.",
        f"您最近一次{test.name_zh}为{_amount(latest, unit)}（{evidence.last:%Y年%m月}），"
        f"已达到或超过{_amount(threshold, unit)}。请与医生讨论。",
    )


def _heading_for(
    test: LabTest,
    slope: float,
    threshold: float,
    unit: str,
    crossing: datetime,
    evidence: Evidence,
) -> ReminderText:
    return ReminderText(
        f"{test.name} has risen {_amount(slope, unit)} per year; at this pace it "
        f"reaches {_amount(threshold, unit)} around {crossing:%Y-%m} {evidence.english()}. "
        f"Consider a check-up.",
        f"您的{test.name_zh}每年上升{_amount(slope, unit)}，按此速度约在{crossing:%Y年%m月}"
        f"达到{_amount(threshold, unit)}{evidence.chinese()}。建议做一次检查。",
    )


def _p(p_value: float) -> str:
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


def personal_trends(measurements: Iterable[Measurement], now: datetime) -> list[Trend]:
    """Trends of every known test with enough data, in the order of :data:`KNOWN_TESTS`."""
    by_test: dict[str, list[Measurement]] = {}
    for measurement in measurements:
        by_test.setdefault(measurement.loinc, []).append(measurement)
    trends = []
    for loinc, test in KNOWN_TESTS.items():
        trend = analyze(test, by_test.get(loinc, ()), now)
        if trend is not None:
            trends.append(trend)
    return trends


def _years(delta: timedelta) -> float:
    return delta.total_seconds() / 86_400 / _DAYS_PER_YEAR


def _amount(value: float, unit: str) -> str:
    magnitude = abs(value)
    if magnitude >= 100 or (magnitude >= 10 and value == round(value)):
        number = f"{value:.0f}"
    elif magnitude >= 0.1:
        number = f"{value:.1f}"
    else:
        number = f"{value:.2f}"
    return number + _UNIT_TEXT.get(unit, f" {unit}")


def _lower_first(name: str) -> str:
    # Abbreviations ("HbA1c", "LDL") keep their capitals; ordinary words read lower-case.
    first_word = name.split(" ", 1)[0]
    return name if any(c.isupper() for c in first_word[1:]) else name[:1].lower() + name[1:]
