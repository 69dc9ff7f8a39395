"""Record-lookup rules: the emergency traffic light, summary facts and history assembly.

Pure functions and value types: no gRPC, no storage, no keys. Categories are the
``healthbank.common.v1.RecordCategory`` enum numbers (as in ``healthbank.records``).

The traffic light, most severe first, over the reviewed value sets of
:mod:`services.record_lookup.value_sets` (tables in docs/value-sets.md):

- RED when any current allergy has criticality ``high`` or is to an anaphylaxis-class
  allergen (unless rated ``low``); any active condition has severity ``severe`` or is a
  critical condition (acute myocardial infarction, epilepsy, haemophilia ...); any current
  medication is an anticoagulant; or any active device is an implanted cardiac device.
- YELLOW when there is any current allergy, any surgery (a past operation matters for
  anaesthesia and imaging) or any active clinical condition.
- GREEN otherwise.

Conditions in the social-and-administrative set (employment, education, "Has a criminal
record" ...) are neither listed nor counted; procedures coded in SNOMED CT or ICD-10-PCS
are surgeries only when in the surgical set (screenings and assessments are not). Facts
entered in error, refuted or resolved do not colour the light: an emergency room needs what
is true now. A fact without a status counts as current, because in an emergency a missing
warning is worse than a superfluous one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from healthbank.contracts.facts import Fact
from healthbank.records import StoredRecord
from services.record_lookup.value_sets import (
    ANAPHYLAXIS_CLASS_ALLERGENS,
    ANTICOAGULANTS,
    CRITICAL_CONDITIONS,
    IMPLANTED_CARDIAC_DEVICES,
    SOCIAL_AND_ADMINISTRATIVE,
    SURGICAL_PROCEDURES,
)

# healthbank.common.v1.RecordCategory numbers used here.
CATEGORY_ALLERGY = 1
CATEGORY_CONDITION = 2
CATEGORY_PROCEDURE = 3
CATEGORY_MEDICATION = 6
CATEGORY_DOCUMENT = 8
KNOWN_CATEGORIES = frozenset(range(1, 9))

MIN_JUSTIFICATION_LENGTH = 10

# Statuses (FHIR clinicalStatus / verificationStatus values) that mean "not true now".
_ALLERGY_NOT_CURRENT = frozenset({"inactive", "resolved", "refuted", "entered-in-error"})
_CONDITION_NOT_ACTIVE = frozenset(
    {"inactive", "resolved", "remission", "refuted", "entered-in-error"}
)
# MedicationRequest / Statement / Administration and Device statuses that mean "not now".
_MEDICATION_NOT_CURRENT = frozenset(
    {"completed", "stopped", "cancelled", "not-taken", "not-done", "entered-in-error", "draft"}
)
_DEVICE_NOT_ACTIVE = frozenset({"inactive", "entered-in-error"})
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
    """An active (or unknown-status) condition about health, not social circumstances."""
    return (
        fact.category == CATEGORY_CONDITION
        and fact.status not in _CONDITION_NOT_ACTIVE
        and not SOCIAL_AND_ADMINISTRATIVE.contains(fact.system, fact.code)
    )


def is_surgery(fact: Fact) -> bool:
    """A procedure that is surgical: in the surgical set, or coded where the set cannot say."""
    if fact.category != CATEGORY_PROCEDURE:
        return False
    if SURGICAL_PROCEDURES.covers(fact.system) and fact.code:
        return SURGICAL_PROCEDURES.contains(fact.system, fact.code)
    return True


def is_high_criticality_allergy(fact: Fact) -> bool:
    """A current allergy rated of high criticality, or to an anaphylaxis-class allergen
    that the source did not rate low."""
    if not is_current_allergy(fact):
        return False
    if fact.severity == "high":
        return True
    return fact.severity != "low" and ANAPHYLAXIS_CLASS_ALLERGENS.contains(fact.system, fact.code)


def is_critical_condition(fact: Fact) -> bool:
    """An active condition that is severe or in the critical-conditions value set."""
    if not is_active_condition(fact):
        return False
    return fact.severity.startswith("severe") or is_critical_condition_code(fact.system, fact.code)


def is_critical_condition_code(system: str, code: str) -> bool:
    """Tell whether a (system, code) is in the critical-conditions value set."""
    return CRITICAL_CONDITIONS.contains(system, code)


def is_critical_medication(fact: Fact) -> bool:
    """A current medication that is an anticoagulant."""
    return (
        fact.category == CATEGORY_MEDICATION
        and fact.status not in _MEDICATION_NOT_CURRENT
        and ANTICOAGULANTS.contains(fact.system, fact.code)
    )


def is_implanted_cardiac_device(fact: Fact) -> bool:
    """An active device that is an implanted cardiac device (facts of Device records)."""
    return (
        fact.category not in (CATEGORY_ALLERGY, CATEGORY_CONDITION, CATEGORY_PROCEDURE)
        and fact.status not in _DEVICE_NOT_ACTIVE
        and IMPLANTED_CARDIAC_DEVICES.contains(fact.system, fact.code)
    )


def _is_red(fact: Fact) -> bool:
    return (
        is_high_criticality_allergy(fact)
        or is_critical_condition(fact)
        or is_critical_medication(fact)
        or is_implanted_cardiac_device(fact)
    )


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
    medications: tuple[Fact, ...] = ()
    devices: tuple[Fact, ...] = ()


def traffic_light(facts: Iterable[Fact]) -> TrafficLight:
    """Colour a person's facts RED / YELLOW / GREEN (see the module docstring)."""
    valid = [fact for fact in facts if not is_erroneous(fact)]
    allergies = [fact for fact in valid if is_current_allergy(fact)]
    high_allergies = [fact for fact in allergies if is_high_criticality_allergy(fact)]
    surgeries = [fact for fact in valid if is_surgery(fact)]
    conditions = [fact for fact in valid if is_active_condition(fact)]
    critical = [fact for fact in conditions if is_critical_condition(fact)]
    medications = [fact for fact in valid if is_critical_medication(fact)]
    devices = [fact for fact in valid if is_implanted_cardiac_device(fact)]

    if high_allergies or critical or medications or devices:
        parts = []
        if high_allergies:
            parts.append(
                f"{_count(len(allergies), 'allergy', 'allergies')}, "
                f"{_number(len(high_allergies))} of high criticality"
            )
        if critical:
            parts.append(_count(len(critical), "critical or severe active condition", None))
        if medications:
            parts.append(_count(len(medications), "current anticoagulant", None))
        if devices:
            parts.append(_count(len(devices), "implanted cardiac device", None))
        return TrafficLight(Light.RED, _sentence(_join(parts)))
    if allergies or surgeries or conditions:
        parts = []
        if allergies:
            parts.append(_count(len(allergies), "allergy", "allergies"))
        if surgeries:
            parts.append(_count(len(surgeries), "past procedure", None))
        if conditions:
            parts.append(_count(len(conditions), "active condition", None))
        return TrafficLight(Light.YELLOW, _sentence(_join(parts) + ", none critical"))
    return TrafficLight(Light.GREEN, "No allergies, procedures or active conditions on record.")


def summarize(facts: Iterable[Fact]) -> Summary:
    """The light and the facts behind it: current allergies, surgeries, active conditions,
    and the anticoagulants and implanted cardiac devices that made it RED."""
    valid = [fact for fact in facts if not is_erroneous(fact)]

    def newest_first(selected: Iterable[Fact]) -> tuple[Fact, ...]:
        # Critical facts lead so a glance at the top of a list is enough.
        return tuple(
            sorted(
                selected,
                key=lambda fact: (
                    not _is_red(fact),
                    -(fact.effective_time.timestamp() if fact.effective_time else 0.0),
                    fact.record_name,
                ),
            )
        )

    return Summary(
        light=traffic_light(valid),
        allergies=newest_first(fact for fact in valid if is_current_allergy(fact)),
        surgeries=newest_first(fact for fact in valid if is_surgery(fact)),
        conditions=newest_first(fact for fact in valid if is_active_condition(fact)),
        medications=newest_first(fact for fact in valid if is_critical_medication(fact)),
        devices=newest_first(fact for fact in valid if is_implanted_cardiac_device(fact)),
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
