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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from healthbank.contracts.facts import Fact
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


class Light(IntEnum):
    """Traffic-light colour; the numbers are ``healthbank.record_lookup.v1.Light``."""

    GREEN = 1
    YELLOW = 2
    RED = 3


def summary_aad(person_token: str) -> bytes:
    """Associated data binding a sealed cached summary to its person."""
    return f"summary:{person_token}".encode()


def is_erroneous(fact: Fact) -> bool:
    """True for facts the source marked as entered in error or refuted."""
    return fact.status in _ERRONEOUS


def is_current_allergy(fact: Fact) -> bool:
    """An allergy that still applies."""
    return fact.category == CATEGORY_ALLERGY and fact.status not in _ALLERGY_NOT_CURRENT


def is_active_condition(fact: Fact) -> bool:
    """A condition that is active (or of unknown status)."""
    return fact.category == CATEGORY_CONDITION and fact.status not in _CONDITION_NOT_ACTIVE


def is_high_criticality_allergy(fact: Fact) -> bool:
    """A current allergy the source rated of high criticality (anaphylaxis-grade)."""
    return is_current_allergy(fact) and fact.severity == "high"


def is_critical_condition(fact: Fact) -> bool:
    """An active condition that is severe or has a critical ICD-10 code."""
    if not is_active_condition(fact):
        return False
    return fact.severity.startswith("severe") or is_critical_condition_code(fact.system, fact.code)


def is_critical_condition_code(system: str, code: str) -> bool:
    """Tell whether an ICD-10 ``code`` starts with one of :data:`CRITICAL_CONDITION_CODES`."""
    if system not in ICD10_SYSTEMS:
        return False
    normalized = code.replace(".", "").strip().upper()
    return any(normalized.startswith(stem.replace(".", "")) for stem in CRITICAL_CONDITION_CODES)


@dataclass(frozen=True)
class TrafficLight:
    """The colour and a one-sentence reason without patient data."""

    light: Light
    reason: str


@dataclass(frozen=True)
class Summary:
    """The facts behind an emergency summary, newest first within each list."""

    light: TrafficLight
    allergies: tuple[Fact, ...]
    surgeries: tuple[Fact, ...]
    conditions: tuple[Fact, ...]


def traffic_light(facts: Iterable[Fact]) -> TrafficLight:
    """Colour a person's facts RED / YELLOW / GREEN (see the module docstring)."""
    valid = [fact for fact in facts if not is_erroneous(fact)]
    allergies = [fact for fact in valid if is_current_allergy(fact)]
    high_allergies = [fact for fact in allergies if is_high_criticality_allergy(fact)]
    procedures = [fact for fact in valid if fact.category == CATEGORY_PROCEDURE]
    conditions = [fact for fact in valid if is_active_condition(fact)]
    critical = [fact for fact in conditions if is_critical_condition(fact)]

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


def summarize(facts: Iterable[Fact]) -> Summary:
    """The light and the facts behind it: current allergies, procedures, active conditions."""
    valid = [fact for fact in facts if not is_erroneous(fact)]

    def newest_first(selected: Iterable[Fact]) -> tuple[Fact, ...]:
        # Critical facts lead so a glance at the top of a list is enough.
        return tuple(
            sorted(
                selected,
                key=lambda fact: (
                    not (is_high_criticality_allergy(fact) or is_critical_condition(fact)),
                    -(fact.effective_time.timestamp() if fact.effective_time else 0.0),
                    fact.record_name,
                ),
            )
        )

    return Summary(
        light=traffic_light(valid),
        allergies=newest_first(fact for fact in valid if is_current_allergy(fact)),
        surgeries=newest_first(fact for fact in valid if fact.category == CATEGORY_PROCEDURE),
        conditions=newest_first(fact for fact in valid if is_active_condition(fact)),
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
