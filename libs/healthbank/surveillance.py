"""Honest surveillance counts: distinct ILI patients per local day, district and age band.

Pure functions, no I/O (ADR 30). A **case** is one patient with an influenza-like-illness
diagnosis on one local day: the day of the *visit* (the encounter's start, else the
condition's recorded date; never the onset, which patients remember loosely) in the city's
time zone (:data:`DEFAULT_CITY_TIME_ZONE`, a setting), so a 07:30 Beijing-time visit counts on
its own day, not on the previous UTC day. Only diagnoses that are confirmed, provisional,
differential or unstated and clinically active (or unstated) count; ``refuted`` and
``entered-in-error`` never do. :class:`CaseCounts` keeps, per (day, district, age band), the
set of patients counted, so two ILI diagnoses of one visit and a resent message count once.

The ILI value set (the case definition), by code system:

=====================  =========================================================  =========
system                 codes (a code counts when it equals or extends one)         source
=====================  =========================================================  =========
ICD-10 (WHO)           J09, J10, J11 (influenza), J06.9 (acute upper respiratory  WHO ICD-10
                       infection, unspecified: the ILI syndrome code)
ICD-10 China (GB/T     the same stems; national extensions such as J11.100        国家临床版
14396, national        (流行性感冒) and J10.000 count by their stem                2.0
clinical edition)
ICD-10-CM              J09.X1-J09.X9, J10.*, J11.*, J06.9                          CDC/NCHS
SNOMED CT              6142004 (influenza), 195878008 (pneumonia and influenza),   SNOMED
                       95891005 (influenza-like illness), 442438000 (influenza
                       A), 24662006 (influenza B)
chief complaint        流感, 流行性感冒, influenza, flu-like, influenza-like,      keywords
(no code)              发热伴咳嗽, fever and cough
=====================  =========================================================  =========

Codes are compared without dots and case-insensitively (``J11.1``, ``J111`` and ``j11.100``
all count); a code counts when it starts with a stem (``J11`` covers ``J11.100``).

This is the one place of the case definition: ingest uses :func:`visit_cells` to write one
surveillance row per (local day, district, age band, person) with each stored message
(RecordStore.put_message), and ai-alert reads those rows (ADR 30).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

DEFAULT_CITY_TIME_ZONE = "Asia/Shanghai"

ICD10_SYSTEMS = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10-cn",
        "urn:oid:2.16.840.1.113883.6.3",  # ICD-10
        "urn:oid:2.16.840.1.113883.6.90",  # ICD-10-CM
    }
)
SNOMED_SYSTEM = "http://snomed.info/sct"

# Stems without dots: a code counts when it starts with one.
ICD10_ILI_STEMS: tuple[str, ...] = ("J09", "J10", "J11", "J069")
SNOMED_ILI_CODES = frozenset({"6142004", "195878008", "95891005", "442438000", "24662006"})
CHIEF_COMPLAINT_KEYWORDS: tuple[str, ...] = (
    "流感",
    "流行性感冒",
    "发热伴咳嗽",
    "influenza",
    "flu-like",
    "fever and cough",
)

# FHIR Condition statuses that never make a case.
_NOT_A_CASE_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_NOT_A_CASE_CLINICAL = frozenset({"inactive", "resolved", "remission"})

AGE_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (0, 4, "0-4"),
    (5, 14, "5-14"),
    (15, 24, "15-24"),
    (25, 59, "25-59"),
    (60, None, "60+"),
)
UNKNOWN = "unknown"


def is_ili_code(system: str, code: str) -> bool:
    """True if ``code`` of ``system`` is in the ILI value set (see the module table)."""
    if system in ICD10_SYSTEMS:
        folded = code.replace(".", "").strip().upper()
        return folded.startswith(ICD10_ILI_STEMS)
    if system == SNOMED_SYSTEM:
        return code.strip() in SNOMED_ILI_CODES
    return False


def is_ili_complaint(text: str) -> bool:
    """True if a free-text chief complaint names an influenza-like illness."""
    folded = text.casefold()
    return any(keyword in folded for keyword in CHIEF_COMPLAINT_KEYWORDS)


def _status(concept: object) -> str:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return ""


def is_ili_diagnosis(condition: Mapping[str, Any]) -> bool:
    """True if a FHIR Condition is a countable ILI diagnosis: an ILI code (or, without any
    code, an ILI chief complaint in its text), neither refuted nor entered in error, not
    resolved."""
    if _status(condition.get("verificationStatus")) in _NOT_A_CASE_VERIFICATION:
        return False
    if _status(condition.get("clinicalStatus")) in _NOT_A_CASE_CLINICAL:
        return False
    concept = condition.get("code")
    if not isinstance(concept, dict):
        return False
    codings = [coding for coding in concept.get("coding") or [] if isinstance(coding, dict)]
    if codings:
        return any(
            is_ili_code(str(coding.get("system", "")), str(coding.get("code", "")))
            for coding in codings
        )
    return is_ili_complaint(str(concept.get("text", "")))


def local_day(moment: datetime, time_zone: str = DEFAULT_CITY_TIME_ZONE) -> date:
    """The calendar day of ``moment`` in the city's time zone."""
    return moment.astimezone(ZoneInfo(time_zone)).date()


def age_band(birth_date: date | None, on: date) -> str:
    """The age band of a person born on ``birth_date`` on the day ``on``."""
    if birth_date is None or birth_date > on:
        return UNKNOWN
    years = on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))
    for low, high, label in AGE_BANDS:
        if years >= low and (high is None or years <= high):
            return label
    return UNKNOWN


@dataclass(frozen=True)
class Visit:
    """One visit's facts a count needs: whose (pseudonymous), when, where they live, their
    birth date, and its diagnoses (FHIR Conditions)."""

    person_token: str
    visit_time: datetime
    district: str
    birth_date: date | None
    conditions: tuple[Mapping[str, Any], ...]


def visit_time(condition: Mapping[str, Any], fallback: datetime | None) -> datetime | None:
    """When the diagnosis was made at the visit: ``recordedDate`` (a date alone means noon
    local time, so it stays on its day), else ``fallback`` (the entry's or message's time)."""
    recorded = condition.get("recordedDate")
    if isinstance(recorded, str) and recorded:
        try:
            if len(recorded) == 10:
                return datetime.fromisoformat(recorded).replace(
                    hour=12, tzinfo=ZoneInfo(DEFAULT_CITY_TIME_ZONE)
                )
            moment = datetime.fromisoformat(recorded)
        except ValueError:
            return fallback
        if moment.tzinfo is None:
            # A time without an offset is the hospital's, that is the city's, local time.
            moment = moment.replace(tzinfo=ZoneInfo(DEFAULT_CITY_TIME_ZONE))
        return moment
    return fallback


@dataclass(frozen=True)
class CellKey:
    """A cell of the counts: local day, district, age band."""

    day: date
    district: str
    age_band: str


@dataclass
class CaseCounts:
    """Distinct ILI patients per (local day, district, age band); adding is idempotent."""

    time_zone: str = DEFAULT_CITY_TIME_ZONE
    _patients: dict[CellKey, set[str]] = field(default_factory=dict)

    def add(self, visit: Visit) -> bool:
        """Count the visit's patient if it has an ILI diagnosis; True when it was one."""
        if not any(is_ili_diagnosis(condition) for condition in visit.conditions):
            return False
        day = local_day(visit.visit_time, self.time_zone)
        key = CellKey(day, visit.district or UNKNOWN, age_band(visit.birth_date, day))
        self._patients.setdefault(key, set()).add(visit.person_token)
        return True

    def count(self, day: date, district: str | None = None, band: str | None = None) -> int:
        """Patients counted on ``day`` (in ``district`` and ``band`` when given)."""
        return sum(
            len(patients)
            for key, patients in self._patients.items()
            if key.day == day
            and (district is None or key.district == district)
            and (band is None or key.age_band == band)
        )

    def daily(self, district: str, days: Iterable[date]) -> list[int]:
        """The district's daily counts over ``days`` (every band)."""
        return [self.count(day, district) for day in days]


def visit_cells(
    district: str,
    birth_date: date | None,
    diagnoses: Iterable[tuple[Mapping[str, Any], datetime | None]],
    time_zone: str = DEFAULT_CITY_TIME_ZONE,
) -> set[CellKey]:
    """The cells one message's diagnoses (each a FHIR Condition with its fallback visit
    time) make its patient a case in: one per local day with a countable ILI diagnosis."""
    cells: set[CellKey] = set()
    for condition, fallback in diagnoses:
        moment = visit_time(condition, fallback)
        if moment is None or not is_ili_diagnosis(condition):
            continue
        day = local_day(moment, time_zone)
        cells.add(CellKey(day, district or UNKNOWN, age_band(birth_date, day)))
    return cells
