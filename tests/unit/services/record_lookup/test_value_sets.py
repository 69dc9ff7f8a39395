"""The emergency value sets: what makes the light RED, what is a surgery, what is a condition.

docs/value-sets.md is generated from the code; a stale page fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from repo_paths import REPO

from healthbank.contracts.facts import Fact
from healthbank.contracts.names import record_name
from services.record_lookup import domain
from services.record_lookup.domain import (
    CATEGORY_ALLERGY,
    CATEGORY_CONDITION,
    CATEGORY_DOCUMENT,
    CATEGORY_MEDICATION,
    CATEGORY_PROCEDURE,
    Light,
)
from services.record_lookup.value_sets import VALUE_SETS, render_markdown

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def fact(
    category: int, system: str, code: str, *, status: str = "active", severity: str = ""
) -> Fact:
    return Fact(
        category=category,
        system=system,
        code=code,
        display="",
        severity=severity,
        status=status,
        effective_time=datetime(2024, 1, 1, tzinfo=UTC),
        source_hospital="hospital-a",
        record_name=record_name("a" * 64, code),
    )


def test_the_docs_table_is_generated_from_the_code() -> None:
    page = (REPO / "docs" / "value-sets.md").read_text()
    assert page == render_markdown(), (
        "docs/value-sets.md is stale: python -m services.record_lookup.value_sets"
        " > docs/value-sets.md"
    )


def test_every_value_set_covers_snomed_or_icd10_with_names() -> None:
    for value_set in VALUE_SETS:
        assert value_set.concepts, value_set.name
        assert all(concept.display for concept in value_set.concepts)
    critical = {c.system for c in VALUE_SETS[0].concepts}
    assert {"http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10"} <= critical


@pytest.mark.parametrize("system", [SNOMED, "SCT", "urn:oid:2.16.840.1.113883.6.96"])
@pytest.mark.parametrize("code", ["401314000", "401303003", "57054005"])
def test_an_active_snomed_coded_acute_myocardial_infarction_is_red(system: str, code: str) -> None:
    light = domain.traffic_light([fact(CATEGORY_CONDITION, system, code)])
    assert light.light == Light.RED
    resolved = fact(CATEGORY_CONDITION, system, code, status="resolved")
    assert domain.traffic_light([resolved]).light == Light.GREEN


@pytest.mark.parametrize(
    ("system", "code"),
    [(SNOMED, "84757009"), (SNOMED, "128613002"), ("I10", "G40.909"), ("ICD10CN", "G40.001")],
)
def test_active_epilepsy_in_snomed_icd10_or_icd10_cn_is_red(system: str, code: str) -> None:
    assert domain.traffic_light([fact(CATEGORY_CONDITION, system, code)]).light == Light.RED


@pytest.mark.parametrize(
    "code",
    ["266948004", "706893006", "160903007", "224299000", "741062008", "73595000", "314529007"],
)
def test_a_social_finding_never_appears_among_critical_or_listed_conditions(code: str) -> None:
    social = fact(CATEGORY_CONDITION, SNOMED, code, severity="severe")
    summary = domain.summarize([social])
    assert summary.conditions == ()
    assert summary.light.light == Light.GREEN
    assert not domain.is_critical_condition(social)


def test_icd10_social_circumstance_codes_are_not_conditions() -> None:
    housing = fact(CATEGORY_CONDITION, "http://hl7.org/fhir/sid/icd-10-cm", "Z59.0")
    assert domain.summarize([housing]).conditions == ()


@pytest.mark.parametrize(
    "code",
    [
        "171207006",  # Depression screening
        "104435004",  # Screening for occult blood in feces
        "866148006",  # Screening for domestic abuse
        "710824005",  # Assessment of health and social care needs
        "1260010008",  # Removal of subgingival plaque and calculus (dental cleaning)
        "73761001",  # Colonoscopy
    ],
)
def test_a_screening_or_assessment_never_appears_among_surgeries(code: str) -> None:
    summary = domain.summarize([fact(CATEGORY_PROCEDURE, SNOMED, code, status="completed")])
    assert summary.surgeries == ()
    assert summary.light.light == Light.GREEN


def test_surgical_procedures_are_listed_and_unknown_systems_are_kept() -> None:
    appendectomy = fact(CATEGORY_PROCEDURE, SNOMED, "80146002", status="completed")
    local = fact(CATEGORY_PROCEDURE, "http://hospital-a.example/procedures", "OP-7")
    pcs = fact(CATEGORY_PROCEDURE, "http://www.cms.gov/Medicare/Coding/ICD10", "0DTJ4ZZ")
    summary = domain.summarize([appendectomy, local, pcs])
    assert set(summary.surgeries) == {appendectomy, local, pcs}
    assert summary.light.light == Light.YELLOW


def test_a_current_anticoagulant_is_red_and_listed() -> None:
    warfarin = fact(CATEGORY_MEDICATION, RXNORM, "855332")
    apixaban_atc = fact(CATEGORY_MEDICATION, "ATC", "B01AF02")
    summary = domain.summarize([warfarin, apixaban_atc])
    assert summary.light.light == Light.RED
    assert set(summary.medications) == {warfarin, apixaban_atc}
    stopped = fact(CATEGORY_MEDICATION, RXNORM, "855332", status="stopped")
    assert domain.traffic_light([stopped]).light == Light.GREEN
    aspirin = fact(CATEGORY_MEDICATION, RXNORM, "243670")
    assert domain.traffic_light([aspirin]).light == Light.GREEN


def test_an_implanted_cardiac_device_is_red() -> None:
    pacemaker = fact(CATEGORY_DOCUMENT, SNOMED, "14106009")
    assert domain.summarize([pacemaker]).devices == (pacemaker,)
    assert domain.traffic_light([pacemaker]).light == Light.RED
    cpap = fact(CATEGORY_DOCUMENT, SNOMED, "702172008")
    assert domain.traffic_light([cpap]).light == Light.GREEN


def test_anaphylaxis_class_allergy_is_red_unless_rated_low() -> None:
    peanut = fact(CATEGORY_ALLERGY, SNOMED, "762952008")
    assert domain.traffic_light([peanut]).light == Light.RED
    rated_low = fact(CATEGORY_ALLERGY, SNOMED, "762952008", severity="low")
    assert domain.traffic_light([rated_low]).light == Light.YELLOW
    dust_high = fact(CATEGORY_ALLERGY, SNOMED, "260147004", severity="high")
    assert domain.traffic_light([dust_high]).light == Light.RED
