"""Record-lookup rules: the emergency traffic light, summary facts and history assembly.

Pure functions and value types: no gRPC, no storage, no keys. Categories are the
``healthbank.common.v1.RecordCategory`` enum numbers (as in ``healthbank.records``).

The traffic light, most severe first:

- RED when any (current) allergy has criticality ``high``, or any active condition has
  severity ``severe`` or an ICD-10 code in :data:`CRITICAL_CONDITION_CODES` (prefix match).
- YELLOW when there is any current allergy, any procedure (a past surgery matters for
  anaesthesia and imaging) or any active condition.
- GREEN otherwise.

Facts entered in error, refuted or resolved do not colour the light: an emergency room
needs what is true now. A fact without a status counts as current, because in an emergency
a missing warning is worse than a superfluous one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from healthbank.records import StoredRecord

# healthbank.common.v1.RecordCategory numbers used here.
CATEGORY_ALLERGY = 1
CATEGORY_CONDITION = 2
CATEGORY_PROCEDURE = 3
KNOWN_CATEGORIES = frozenset(range(1, 9))

MIN_JUSTIFICATION_LENGTH = 10

# ICD-10 codes (WHO edition; ICD-10-CM uses the same stems) whose presence alone makes the
# light red, matched as prefixes of the recorded code with dots ignored. Each changes what
# an emergency team does in the first minutes:
CRITICAL_CONDITION_CODES: Mapping[str, str] = {
    "I21": "acute myocardial infarction",
    "I22": "subsequent myocardial infarction",
    "E10": "type 1 diabetes mellitus (insulin dependent)",
    "G40": "epilepsy",
    "D66": "haemophilia A",
    "D67": "haemophilia B",
    "Z95.0": "cardiac pacemaker in place",
}

# Code systems treated as ICD-10 (FHIR URIs and the HL7 v2 table 0396 mnemonics); ingest
# records the system as the hospital sent it.
ICD10_SYSTEMS = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10-nl",
        "I10",
        "I10C",
        "ICD10",
        "ICD-10",
    }
)

# Statuses (FHIR clinicalStatus / verificationStatus values) that mean "not true now".
_ALLERGY_NOT_CURRENT = frozenset({"inactive", "resolved", "refuted", "entered-in-error"})
_CONDITION_NOT_ACTIVE = frozenset(
    {"inactive", "resolved", "remission", "refuted", "entered-in-error"}
)
_ERRONEOUS = frozenset({"entered-in-error", "refuted"})

_PERSON_TOKEN = re.compile(r"^[0-9a-f]{64}$")
_PERSON_NAME = re.compile(r"^persons/([^/]+)$")

# Category names a fact document may use instead of the enum number.
_CATEGORY_NAMES = {
    "allergy": CATEGORY_ALLERGY,
    "allergyintolerance": CATEGORY_ALLERGY,
    "condition": CATEGORY_CONDITION,
    "procedure": CATEGORY_PROCEDURE,
}


class Light(IntEnum):
    """Traffic-light colour; the numbers are ``healthbank.record_lookup.v1.Light``."""

    GREEN = 1
    YELLOW = 2
    RED = 3


def parse_person_name(name: str) -> str | None:
    """The person token in ``persons/{person_token}``, or None when ``name`` is malformed."""
    match = _PERSON_NAME.match(name)
    if match is None or not _PERSON_TOKEN.match(match.group(1)):
        return None
    return match.group(1)


def person_name(person_token: str) -> str:
    """Resource name of a person: ``persons/{person_token}``."""
    return f"persons/{person_token}"


def summary_aad(person_token: str) -> bytes:
    """Associated data binding a sealed cached summary to its person."""
    return f"summary:{person_token}".encode()


@dataclass(frozen=True)
class SummaryFact:
    """One emergency fact (allergy, procedure, condition) as ingest wrote it, opened."""

    category: int
    system: str
    code: str
    display: str
    severity: str
    status: str
    effective_time: datetime | None
    source_hospital: str
    record_name: str

    @property
    def is_erroneous(self) -> bool:
        """True for facts the source marked as entered in error or refuted."""
        return self.status in _ERRONEOUS

    @property
    def is_current_allergy(self) -> bool:
        """An allergy that still applies."""
        return self.category == CATEGORY_ALLERGY and self.status not in _ALLERGY_NOT_CURRENT

    @property
    def is_active_condition(self) -> bool:
        """A condition that is active (or of unknown status)."""
        return self.category == CATEGORY_CONDITION and self.status not in _CONDITION_NOT_ACTIVE

    @property
    def is_high_criticality_allergy(self) -> bool:
        """A current allergy the source rated of high criticality (anaphylaxis-grade)."""
        return self.is_current_allergy and self.severity == "high"

    @property
    def is_critical_condition(self) -> bool:
        """An active condition that is severe or has a critical ICD-10 code."""
        if not self.is_active_condition:
            return False
        return self.severity.startswith("severe") or is_critical_condition_code(
            self.system, self.code
        )


def is_critical_condition_code(system: str, code: str) -> bool:
    """Tell whether an ICD-10 ``code`` starts with one of :data:`CRITICAL_CONDITION_CODES`."""
    if system not in ICD10_SYSTEMS:
        return False
    normalized = code.replace(".", "").strip().upper()
    return any(normalized.startswith(stem.replace(".", "")) for stem in CRITICAL_CONDITION_CODES)


class MalformedFact(ValueError):
    """An opened fact document does not have the shape ingest writes."""


def parse_fact(document: bytes, category: int) -> SummaryFact:
    """Parse the JSON fact ingest seals: ``{category, system, code, display, severity, status,
    effective_time, source_hospital, record_name}``.

    ``category`` (from the store row) is used when the document does not name one. Text
    fields are lower-cased where they are vocabulary (severity, status).
    """
    try:
        raw: Any = json.loads(document)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedFact("fact is not JSON") from error
    if not isinstance(raw, dict):
        raise MalformedFact("fact is not a JSON object")
    return SummaryFact(
        category=_fact_category(raw.get("category"), category),
        system=_text(raw, "system"),
        code=_text(raw, "code"),
        display=_text(raw, "display"),
        severity=_text(raw, "severity").lower(),
        status=_text(raw, "status").lower(),
        effective_time=_time(raw.get("effective_time")),
        source_hospital=_text(raw, "source_hospital"),
        record_name=_text(raw, "record_name"),
    )


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedFact(f"fact field {key} is not text")
    return value.strip()


def _fact_category(value: object, fallback: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in KNOWN_CATEGORIES:
        return value
    if isinstance(value, str):
        key = value.lower().removeprefix("record_category_")
        if key in _CATEGORY_NAMES:
            return _CATEGORY_NAMES[key]
    return fallback


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # A date without a zone is a clinical date, not a local time: read it as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TrafficLight:
    """The colour and a one-sentence reason without patient data."""

    light: Light
    reason: str


@dataclass(frozen=True)
class Summary:
    """The facts behind an emergency summary, newest first within each list."""

    light: TrafficLight
    allergies: tuple[SummaryFact, ...]
    surgeries: tuple[SummaryFact, ...]
    conditions: tuple[SummaryFact, ...]


def traffic_light(facts: Iterable[SummaryFact]) -> TrafficLight:
    """Colour a person's facts RED / YELLOW / GREEN (see the module docstring)."""
    valid = [fact for fact in facts if not fact.is_erroneous]
    allergies = [fact for fact in valid if fact.is_current_allergy]
    high_allergies = [fact for fact in allergies if fact.is_high_criticality_allergy]
    procedures = [fact for fact in valid if fact.category == CATEGORY_PROCEDURE]
    conditions = [fact for fact in valid if fact.is_active_condition]
    critical = [fact for fact in conditions if fact.is_critical_condition]

    if high_allergies or critical:
        parts = []
        if high_allergies:
            parts.append(
                f"{_count(len(allergies), 'allergy', 'allergies')}, "
                f"{_number(len(high_allergies))} of high criticality"
            )
        if critical:
            parts.append(_count(len(critical), "critical or severe active condition", None))
        return TrafficLight(Light.RED, _sentence(" and ".join(parts)))
    if allergies or procedures or conditions:
        parts = []
        if allergies:
            parts.append(_count(len(allergies), "allergy", "allergies"))
        if procedures:
            parts.append(_count(len(procedures), "past procedure", None))
        if conditions:
            parts.append(_count(len(conditions), "active condition", None))
        return TrafficLight(Light.YELLOW, _sentence(_join(parts) + ", none critical"))
    return TrafficLight(Light.GREEN, "No allergies, procedures or active conditions on record.")


def summarize(facts: Iterable[SummaryFact]) -> Summary:
    """The light and the facts behind it: current allergies, procedures, active conditions."""
    valid = [fact for fact in facts if not fact.is_erroneous]

    def newest_first(selected: Iterable[SummaryFact]) -> tuple[SummaryFact, ...]:
        # Critical facts lead so a glance at the top of a list is enough.
        return tuple(
            sorted(
                selected,
                key=lambda fact: (
                    not (fact.is_high_criticality_allergy or fact.is_critical_condition),
                    -(fact.effective_time.timestamp() if fact.effective_time else 0.0),
                    fact.record_name,
                ),
            )
        )

    return Summary(
        light=traffic_light(valid),
        allergies=newest_first(fact for fact in valid if fact.is_current_allergy),
        surgeries=newest_first(fact for fact in valid if fact.category == CATEGORY_PROCEDURE),
        conditions=newest_first(fact for fact in valid if fact.is_active_condition),
    )


def _number(n: int) -> str:
    return "one" if n == 1 else str(n)


def _count(n: int, singular: str, plural: str | None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


# --- history ---------------------------------------------------------------------------


def readable_categories(requested: Iterable[int], permitted: Iterable[int]) -> frozenset[int]:
    """The categories a history may contain; empty means all.

    ``permitted`` is consent's answer (empty = everything asked for), ``requested`` the
    caller's filter (empty = all).
    """
    permitted_set = frozenset(permitted)
    requested_set = frozenset(requested)
    if permitted_set:
        return permitted_set & requested_set if requested_set else permitted_set
    return requested_set


def merge_history(
    hot: Sequence[StoredRecord],
    cold: Sequence[StoredRecord],
    categories: frozenset[int],
) -> list[tuple[StoredRecord, bool]]:
    """Hot and cold records as one list, oldest first, each with ``is_cold``.

    A record being tiered can briefly exist in both tiers; the hot copy wins. Only
    ``categories`` are kept (empty keeps all).
    """
    seen = {record.record_id for record in hot}
    merged = [(record, False) for record in hot] + [
        (record, True) for record in cold if record.record_id not in seen
    ]
    if categories:
        merged = [item for item in merged if item[0].category in categories]
    merged.sort(key=lambda item: (item[0].effective_time, item[0].record_id))
    return merged
