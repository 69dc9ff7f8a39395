"""Synthea's FHIR R4 output, exactly as generated, through the FHIR parser and the light.

The sample (tests/fixtures/synthea-sample.zip, made by tools/fixtures/synthea.py from
Synthea 3.3.0 with a fixed seed) is data this project did not write: 31 patient bundles and
the hospital and practitioner directory bundles.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from functools import cache

from repo_paths import synthea_bundles

from healthbank.contracts.facts import Fact, decode_fact
from services.ingest.canonical import (
    MessageSource,
    feeds_emergency_summary,
    plan_records,
)
from services.ingest.fhir import parse_fhir
from services.ingest.model import Disposition, ParsedMessage, SourceFormat
from services.record_lookup import domain
from services.record_lookup.domain import Light

TOKEN = "b" * 64
NOW = datetime(2026, 12, 1, tzinfo=UTC)
SOURCE = MessageSource("hospital-a", "m1", SourceFormat.FHIR_R4_JSON, "0" * 64)
# SNOMED CT: acute MI (any), STEMI, NSTEMI, epilepsy, seizure disorder.
RED_CONDITIONS = frozenset({"57054005", "401303003", "401314000", "84757009", "128613002"})


@cache
def _bundles() -> dict[str, bytes]:
    return synthea_bundles()


def _patients() -> dict[str, bytes]:
    return {
        name: data
        for name, data in _bundles().items()
        if not name.startswith(("hospitalInformation", "practitionerInformation"))
    }


@cache
def _parsed(name: str) -> ParsedMessage:
    return parse_fhir(_bundles()[name])


def _source_types(data: bytes) -> Counter[str]:
    return Counter(entry["resource"]["resourceType"] for entry in json.loads(data)["entry"])


def _facts(message: ParsedMessage) -> list[Fact]:
    return [
        decode_fact(planned.fact, int(planned.entry.category))
        for planned in plan_records(message, TOKEN, SOURCE, NOW)
        if planned.fact is not None
    ]


def test_the_sample_has_at_least_30_patients_and_both_directories() -> None:
    names = list(_bundles())
    assert len(_patients()) >= 30
    assert sum(name.startswith("hospitalInformation") for name in names) == 1
    assert sum(name.startswith("practitionerInformation") for name in names) == 1


def test_every_patient_bundle_parses_and_every_resource_becomes_a_record() -> None:
    for name, data in _patients().items():
        message = _parsed(name)
        source = _source_types(data)
        stored = Counter(
            o.resource_type
            for o in message.outcomes
            if o.disposition in (Disposition.RECORD, Disposition.DOCUMENT)
        )
        assert stored == source - Counter({"Patient": source["Patient"]}), name
        assert len(message.entries) == stored.total()
        assert message.patient is not None and message.patient.mrn
        # Records keep the resource exactly as Synthea wrote it.
        resources = [e["resource"] for e in json.loads(data)["entry"]]
        assert [entry.resource for entry in message.entries] == [
            r for r in resources if r["resourceType"] != "Patient"
        ]


def test_every_patients_address_is_forwarded_for_matching() -> None:
    for name, data in _patients().items():
        (resource,) = [
            e["resource"]
            for e in json.loads(data)["entry"]
            if e["resource"]["resourceType"] == "Patient"
        ]
        (address,) = resource["address"]
        patient = _parsed(name).patient
        assert patient is not None
        expected = " ".join([address["state"], address["city"], *address["line"]])
        assert patient.demographics.address == expected, name


def test_medication_reference_takes_the_code_of_the_medication_in_the_bundle() -> None:
    resolved = 0
    for name, data in _patients().items():
        bundle = json.loads(data)
        medications = {
            e["fullUrl"]: e["resource"]["code"]["coding"][0]["code"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Medication"
        }
        message = _parsed(name)
        for entry in message.entries:
            reference = entry.resource.get("medicationReference")
            if reference is not None:
                assert entry.code.code == medications[reference["reference"]]
                resolved += 1
    assert resolved > 0


def test_directory_bundles_are_accepted_as_the_hospital_directory() -> None:
    for name, data in _bundles().items():
        if not name.startswith(("hospitalInformation", "practitionerInformation")):
            continue
        message = parse_fhir(data)
        assert message.patient is None and message.entries == ()
        assert Counter(d.resource_type for d in message.directory) == _source_types(data)
        assert {o.disposition for o in message.outcomes} == {Disposition.DIRECTORY}


def test_patients_with_an_active_acute_mi_or_epilepsy_are_red() -> None:
    red_patients = 0
    for name in _patients():
        facts = _facts(_parsed(name))
        critical = [
            f
            for f in facts
            if f.category == domain.CATEGORY_CONDITION
            and f.code in RED_CONDITIONS
            and f.status == "active"
        ]
        summary = domain.summarize(facts)
        if critical:
            red_patients += 1
            assert summary.light.light == Light.RED, name
            assert set(critical) <= set(summary.conditions)
    assert red_patients >= 5  # four with epilepsy, one with an acute STEMI


def test_no_social_finding_among_conditions_and_no_screening_among_surgeries() -> None:
    for name in _patients():
        summary = domain.summarize(_facts(_parsed(name)))
        displays = [f.display.lower() for f in summary.conditions]
        assert not any("criminal record" in d or "employment" in d for d in displays), name
        assert not any("partner abuse" in d or "education" in d for d in displays), name
        surgeries = [f.display.lower() for f in summary.surgeries]
        assert not any("screening" in d or "assessment" in d for d in surgeries), name


def test_medications_and_devices_feed_the_summary() -> None:
    message = _parsed(next(iter(_patients())))
    types = {
        entry.resource["resourceType"]
        for entry in message.entries
        if feeds_emergency_summary(entry)
    }
    assert "Immunization" not in types and "Observation" not in types
