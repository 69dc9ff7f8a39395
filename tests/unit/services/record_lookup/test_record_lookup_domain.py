"""Record-lookup domain: traffic light, summary, history merge (fact decoding: test_facts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healthbank.contracts.facts import Fact
from healthbank.contracts.names import record_name
from healthbank.records import StoredRecord
from services.record_lookup import domain
from services.record_lookup.domain import (
    CATEGORY_ALLERGY,
    CATEGORY_CONDITION,
    CATEGORY_PROCEDURE,
    Light,
)

ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
TOKEN = "a" * 64


def fact(
    category: int,
    *,
    code: str = "X",
    system: str = SNOMED,
    severity: str = "",
    status: str = "active",
    days_ago: int = 10,
    name: str = "r",
) -> Fact:
    return Fact(
        category=category,
        system=system,
        code=code,
        display="",
        severity=severity,
        status=status,
        effective_time=datetime(2024, 1, 1, tzinfo=UTC) - timedelta(days=days_ago),
        source_hospital="H1",
        record_name=record_name(TOKEN, name),
    )


def allergy(criticality: str = "low", status: str = "active") -> Fact:
    return fact(CATEGORY_ALLERGY, severity=criticality, status=status)


def condition(code: str = "J45", severity: str = "", status: str = "active") -> Fact:
    return fact(CATEGORY_CONDITION, system=ICD10, code=code, severity=severity, status=status)


def procedure() -> Fact:
    return fact(CATEGORY_PROCEDURE, code="80146002")


LIGHT_CASES = [
    ("nothing on record", [], Light.GREEN),
    ("high-criticality allergy", [allergy("high")], Light.RED),
    ("low-criticality allergy", [allergy("low")], Light.YELLOW),
    ("allergy without criticality", [allergy("")], Light.YELLOW),
    ("resolved high allergy", [allergy("high", status="resolved")], Light.GREEN),
    ("high allergy entered in error", [allergy("high", status="entered-in-error")], Light.GREEN),
    ("past surgery", [procedure()], Light.YELLOW),
    ("active asthma", [condition("J45")], Light.YELLOW),
    ("severe active condition", [condition("J45", severity="severe")], Light.RED),
    (
        "severe resolved condition",
        [condition("J45", severity="severe", status="resolved")],
        Light.GREEN,
    ),
    ("myocardial infarction", [condition("I21.4")], Light.RED),
    ("type 1 diabetes, no dot", [condition("E109")], Light.RED),
    ("epilepsy", [condition("G40")], Light.RED),
    ("haemophilia A", [condition("D66")], Light.RED),
    ("pacemaker", [condition("Z95.0")], Light.RED),
    ("other cardiac device is not pacemaker", [condition("Z95.1")], Light.YELLOW),
    ("type 2 diabetes is chronic, not critical", [condition("E11.9")], Light.YELLOW),
    ("critical code in remission", [condition("G40", status="remission")], Light.GREEN),
    ("condition without status counts as active", [condition("G40", status="")], Light.RED),
    (
        "critical code in another system does not match",
        [fact(CATEGORY_CONDITION, system=SNOMED, code="I21")],
        Light.YELLOW,
    ),
    ("mixed yellow and red", [allergy("low"), procedure(), condition("I21")], Light.RED),
]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [case[1:] for case in LIGHT_CASES],
    ids=[case[0] for case in LIGHT_CASES],
)
def test_traffic_light(facts: list[Fact], expected: Light) -> None:
    assert domain.traffic_light(facts).light == expected


REASON_CASES = [
    ([], "No allergies, procedures or active conditions on record."),
    ([allergy("high"), allergy("low")], "2 allergies, one of high criticality."),
    ([allergy("high")], "1 allergy, one of high criticality."),
    (
        [allergy("high"), condition("I21"), condition("G40")],
        "1 allergy, one of high criticality and 2 critical or severe active conditions.",
    ),
    ([condition("I21")], "1 critical or severe active condition."),
    (
        [allergy(), procedure(), procedure(), condition("J45")],
        "1 allergy, 2 past procedures and 1 active condition, none critical.",
    ),
]


@pytest.mark.parametrize(("facts", "reason"), REASON_CASES)
def test_light_reason_is_one_sentence_of_counts(facts: list[Fact], reason: str) -> None:
    assert domain.traffic_light(facts).reason == reason


def test_summarize_lists_only_current_facts_with_critical_first() -> None:
    mild_recent = fact(CATEGORY_ALLERGY, severity="low", days_ago=1, name="mild")
    severe_old = fact(CATEGORY_ALLERGY, severity="high", days_ago=400, name="severe")
    resolved = fact(CATEGORY_ALLERGY, status="resolved", name="resolved")
    surgery = fact(CATEGORY_PROCEDURE, code="80146002", status="completed", name="surgery")
    old_condition = fact(CATEGORY_CONDITION, status="resolved", name="old")
    summary = domain.summarize([mild_recent, severe_old, resolved, surgery, old_condition])
    assert summary.light.light == Light.RED
    assert [f.record_name.rsplit("/", 1)[1] for f in summary.allergies] == ["severe", "mild"]
    assert [f.record_name.rsplit("/", 1)[1] for f in summary.surgeries] == ["surgery"]
    assert summary.conditions == ()


@pytest.mark.parametrize(
    ("requested", "permitted", "readable"),
    [
        ([], [], set()),  # all asked, all permitted
        ([1, 2], [], {1, 2}),  # permitted everything asked
        ([], [1, 4], {1, 4}),  # a partial grant limits "all"
        ([1, 2, 3], [1, 2], {1, 2}),
    ],
)
def test_readable_categories(
    requested: list[int], permitted: list[int], readable: set[int]
) -> None:
    assert domain.readable_categories(requested, permitted) == frozenset(readable)


def stored(record_id: str, day: int, category: int = 4) -> StoredRecord:
    return StoredRecord(
        record_id=record_id,
        person_token=TOKEN,
        source_hospital="H1",
        source_format=1,
        message_id="m",
        source_version="",
        content_hash="0" * 64,
        category=category,
        code_system="http://loinc.org",
        code="1558-6",
        code_display="",
        effective_time=datetime(2020, 1, day, tzinfo=UTC),
        status="final",
        sealed_payload=b"",
    )


def test_merge_history_oldest_first_hot_wins_and_filters_categories() -> None:
    hot = [stored("C", 20), stored("B", 10)]
    cold = [stored("A", 1), stored("B", 10), stored("D", 5, category=2)]
    merged = domain.merge_history(hot, cold, frozenset({4}))
    assert [(record.record_id, is_cold) for record, is_cold in merged] == [
        ("A", True),
        ("B", False),
        ("C", False),
    ]
    everything = domain.merge_history(hot, cold, frozenset())
    assert [record.record_id for record, _ in everything] == ["A", "D", "B", "C"]


def test_summary_cache_key_and_aad_name_the_person_only() -> None:
    assert domain.summary_aad(TOKEN) == f"summary:{TOKEN}".encode()
