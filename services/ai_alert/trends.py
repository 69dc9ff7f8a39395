"""Personal lab trends: a least-squares line per test and a reminder when it heads for a threshold.

Pure functions, no I/O. For each known LOINC test a person has at least
:data:`MIN_SAMPLES` results of, spanning at least :data:`MIN_SPAN_DAYS`, an ordinary least
squares line ``value ~ time`` is fitted. If the line rises and the latest value is still
below the threshold of concern, the date the line reaches the threshold is projected; a
reminder is written when that date is less than :data:`REMINDER_HORIZON_YEARS` away, or when
the latest value already is at or above the threshold.

Reminders never contain identifiers: only the test's name, the rate, the threshold and a
month.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

LOINC_SYSTEM = "http://loinc.org"

MIN_SAMPLES = 3
MIN_SPAN_DAYS = 180
REMINDER_HORIZON_YEARS = 5.0
_DAYS_PER_YEAR = 365.2425


@dataclass(frozen=True)
class LabTest:
    """A lab test we follow: its name, threshold per unit and unit conversions."""

    loinc: str
    name: str
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
            "Fasting glucose [Moles/volume] in Serum or Plasma",
            {"mmol/L": 7.0, "mg/dL": 126.0},
            # Glucose: 1 mmol/L = 18.016 mg/dL (molar mass 180.16 g/mol).
            _both_ways("mmol/L", "mg/dL", 18.016),
        ),
        LabTest(
            "4548-4",
            "HbA1c",
            "Hemoglobin A1c/Hemoglobin.total in Blood",
            # NGSP % and IFCC mmol/mol are related affinely, not by a factor: not converted.
            {"%": 6.5, "mmol/mol": 48.0},
        ),
        LabTest(
            "18262-6",
            "LDL cholesterol",
            "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
            {"mmol/L": 4.1, "mg/dL": 160.0},
            # Cholesterol: 1 mmol/L = 38.67 mg/dL.
            _both_ways("mmol/L", "mg/dL", 38.67),
        ),
        LabTest(
            "8480-6",
            "Systolic blood pressure",
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


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Ordinary least squares ``y = intercept + slope * x``; returns (intercept, slope)."""
    n = len(points)
    if n < 2:
        raise ValueError("a line needs at least two points")
    x_mean = sum(x for x, _ in points) / n
    y_mean = sum(y for _, y in points) / n
    sxx = sum((x - x_mean) ** 2 for x, _ in points)
    if sxx == 0:
        raise ValueError("all points are at the same time")
    slope = sum((x - x_mean) * (y - y_mean) for x, y in points) / sxx
    return y_mean - slope * x_mean, slope


def analyze(test: LabTest, measurements: Iterable[Measurement], now: datetime) -> Trend | None:
    """The trend of one test, or None when there is too little data to say anything.

    Values are converted to the unit of the most recent result where a conversion is known;
    the others are left out.
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
            samples.append((measurement.time, measurement.value))
        elif (measurement.unit, unit) in test.conversions:
            factor = test.conversions[(measurement.unit, unit)]
            samples.append((measurement.time, measurement.value * factor))
    if len(samples) < MIN_SAMPLES:
        return None
    first, last = samples[0][0], samples[-1][0]
    if (last - first) < timedelta(days=MIN_SPAN_DAYS):
        return None
    intercept, slope = fit_line([(_years(time - first), value) for time, value in samples])
    latest = samples[-1][1]
    crossing: datetime | None = None
    if latest >= threshold:
        reminder = (
            f"Your latest {_lower_first(test.name)} is at or above "
            f"{_amount(threshold, unit)}. Please discuss it with your doctor."
        )
    elif slope > 0:
        crossing = first + timedelta(days=(threshold - intercept) / slope * _DAYS_PER_YEAR)
        # The line may already be past the threshold while the last reading is just below:
        # the crossing is then "now", not in the past.
        crossing = max(crossing, now)
        reminder = ""
        if _years(crossing - now) <= REMINDER_HORIZON_YEARS:
            reminder = (
                f"{test.name} has risen {_amount(slope, unit)} per year; at this pace it "
                f"reaches {_amount(threshold, unit)} around {crossing:%Y-%m}. "
                f"Consider a check-up."
            )
    else:
        reminder = ""
    return Trend(
        test=test,
        unit=unit,
        sample_count=len(samples),
        latest_value=latest,
        slope_per_year=slope,
        threshold=threshold,
        projected_crossing=crossing,
        reminder=reminder,
    )


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
