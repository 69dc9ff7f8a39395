"""Counting ILI cases (issue 12, DM3): distinct patients per local day, district, age band."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from healthbank import surveillance
from healthbank.surveillance import CaseCounts, Visit

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
BEIJING = timezone(timedelta(hours=8))
DAY = date(2026, 1, 14)
PERSON = "a1" * 32
OTHER = "b2" * 32


def condition(
    code: str = "J10.1", system: str = ICD10, verification: str = "confirmed", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": system, "code": code}]},
        "verificationStatus": {"coding": [{"code": verification}]},
        **extra,
    }
    return resource


def visit(
    *conditions: dict[str, Any],
    person: str = PERSON,
    at: datetime = datetime(2026, 1, 14, 10, 0, tzinfo=BEIJING),
    district: str = "Huangpu",
    born: date | None = date(1990, 5, 1),
) -> Visit:
    return Visit(person, at, district, born, tuple(conditions) or (condition(),))


def test_two_ili_diagnoses_in_one_visit_count_once() -> None:
    counts = CaseCounts()
    counts.add(visit(condition("J10.1"), condition("J11.100")))
    assert counts.count(DAY) == 1


def test_a_resent_message_counts_once() -> None:
    counts = CaseCounts()
    for _ in range(3):
        counts.add(visit())
    assert counts.count(DAY) == 1
    counts.add(visit(person=OTHER))
    assert counts.count(DAY) == 2


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_refuted_and_entered_in_error_diagnoses_do_not_count(status: str) -> None:
    counts = CaseCounts()
    assert not counts.add(visit(condition(verification=status)))
    assert counts.count(DAY) == 0


def test_resolved_diagnoses_do_not_count_but_provisional_ones_do() -> None:
    counts = CaseCounts()
    assert not counts.add(visit(condition(clinicalStatus={"coding": [{"code": "resolved"}]})))
    assert counts.add(visit(condition(verification="provisional")))


def test_a_0730_beijing_visit_counts_on_its_local_day() -> None:
    counts = CaseCounts()
    early = datetime(2026, 1, 14, 7, 30, tzinfo=BEIJING)  # 2026-01-13 23:30 UTC
    assert early.astimezone(UTC).date() == date(2026, 1, 13)
    counts.add(visit(at=early))
    assert (counts.count(DAY), counts.count(date(2026, 1, 13))) == (1, 0)


def test_the_city_time_zone_is_a_setting() -> None:
    counts = CaseCounts(time_zone="UTC")
    counts.add(visit(at=datetime(2026, 1, 14, 7, 30, tzinfo=BEIJING)))
    assert counts.count(date(2026, 1, 13)) == 1


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (ICD10, "J11.100"),  # the national clinical edition's extension
        (ICD10, "J111"),
        (ICD10, "j09"),
        (ICD10, "J06.9"),
        (ICD10_CM, "J09.X2"),
        (ICD10_CM, "J10.01"),
        (SNOMED, "6142004"),
        (SNOMED, "95891005"),
    ],
)
def test_the_value_set_covers_every_edition(system: str, code: str) -> None:
    assert surveillance.is_ili_code(system, code)


@pytest.mark.parametrize(
    ("system", "code"), [(ICD10, "J45"), (ICD10, "J06.0"), (ICD10, "A09"), (SNOMED, "195967001")]
)
def test_other_codes_are_not_ili(system: str, code: str) -> None:
    assert not surveillance.is_ili_code(system, code)


def test_a_chief_complaint_counts_only_without_a_code() -> None:
    complaint = {"resourceType": "Condition", "code": {"text": "发热伴咳嗽两天，疑似流感"}}
    assert surveillance.is_ili_diagnosis(complaint)
    coded = {
        **complaint,
        "code": {**complaint["code"], "coding": [{"system": ICD10, "code": "J45"}]},
    }
    assert not surveillance.is_ili_diagnosis(coded)


def test_counts_are_per_district_and_age_band() -> None:
    counts = CaseCounts()
    counts.add(visit(born=date(2022, 3, 1)))
    counts.add(visit(person=OTHER, district="Minhang", born=date(1950, 1, 1)))
    counts.add(visit(person="c3" * 32, born=None))
    assert counts.count(DAY, "Huangpu") == 2
    assert counts.count(DAY, "Huangpu", "0-4") == 1
    assert counts.count(DAY, "Minhang", "60+") == 1
    assert counts.count(DAY, "Huangpu", surveillance.UNKNOWN) == 1
    assert counts.daily("Huangpu", [DAY - timedelta(days=1), DAY]) == [0, 2]
