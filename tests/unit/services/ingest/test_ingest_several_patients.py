"""A FHIR message of several patients: one part per patient, each parsed as its own message.

The first test uses Synthea's output (data this project did not write): two patients'
bundles and the hospital's directory bundle put together as one batch Bundle must give
each patient exactly what their own bundle gives.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from repo_paths import synthea_bundles

from services.ingest.fhir import parse_fhir, parse_fhir_ndjson
from services.ingest.model import InvalidMessage, ParsedBatch, ParsedMessage

MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def patient(patient_id: str, mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"type": MR, "value": mrn}],
        "birthDate": "1980-05-17",
    }


def condition(patient_ref: str, code: str = "J10.1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}]},
        "onsetDateTime": "2026-11-30T09:00:00Z",
        **extra,
    }


def bundle(*resources: dict[str, Any], bundle_type: str = "batch") -> bytes:
    entries = [{"resource": resource} for resource in resources]
    return json.dumps({"resourceType": "Bundle", "type": bundle_type, "entry": entries}).encode()


def batch_of(content: bytes) -> ParsedBatch:
    parsed = parse_fhir(content)
    assert isinstance(parsed, ParsedBatch)
    return parsed


def test_each_synthea_patient_of_a_batch_parses_exactly_as_their_own_bundle() -> None:
    bundles = synthea_bundles()
    names = sorted(name for name in bundles if name.startswith(("Demarcus", "Carlo")))
    hospital = next(name for name in bundles if name.startswith("hospitalInformation"))
    entries = [
        entry
        for name in [names[0], hospital, names[1]]
        for entry in json.loads(bundles[name])["entry"]
    ]
    merged = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()

    parsed = batch_of(merged)

    assert len(parsed.parts) == 2
    for part, name in zip(parsed.parts, names, strict=True):
        alone = parse_fhir(bundles[name])
        assert isinstance(alone, ParsedMessage) and part.message is not None
        assert part.problem is None
        assert part.message.patient is not None and alone.patient is not None
        # The same identity; its field paths point into the whole message.
        assert replace(part.message.patient, field_paths=alone.patient.field_paths) == alone.patient
        assert [e.resource for e in part.message.entries] == [e.resource for e in alone.entries]
        assert [e.category for e in part.message.entries] == [e.category for e in alone.entries]
        assert part.message.outcomes == alone.outcomes
    directory = json.loads(bundles[hospital])["entry"]
    assert [d.resource_id for d in parsed.directory] == [e["resource"]["id"] for e in directory]
    # Each part keeps its resources' places in the whole message.
    first = parsed.parts[0].message
    second = parsed.parts[1].message
    assert first is not None and second is not None
    assert first.entries[0].path.startswith("content.entry[1]")
    assert int(second.entries[0].path.split("[")[1].split("]")[0]) > len(directory)
    # A part's hash is its own and the same whenever the message is parsed again.
    assert parsed.parts[0].content_hash != parsed.parts[1].content_hash
    assert [p.content_hash for p in batch_of(merged).parts] == [
        p.content_hash for p in parsed.parts
    ]


def test_a_shared_medication_and_a_provenance_go_with_their_patients() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}]
        },
    }

    def prescription(patient_ref: str) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": f"rx-{patient_ref[-1]}",
            "status": "active",
            "subject": {"reference": patient_ref},
            "medicationReference": {"reference": "Medication/m1"},
            "authoredOn": "2026-11-30",
        }

    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": "https://hospital-a.example/fhir/MedicationRequest/rx-2"}],
        "recorded": "2026-11-30T10:00:00Z",
    }
    parsed = batch_of(
        bundle(
            patient("p1", "A1"),
            patient("p2", "A2"),
            medication,
            prescription("Patient/p1"),
            prescription("Patient/p2"),
            provenance,
        )
    )
    kinds = [
        [e.resource["resourceType"] for e in part.message.entries]
        for part in parsed.parts
        if part.message is not None
    ]
    assert kinds == [
        ["Medication", "MedicationRequest"],
        ["Medication", "MedicationRequest", "Provenance"],
    ]
    for part in parsed.parts:
        assert part.message is not None
        (rx,) = [e for e in part.message.entries if e.resource["resourceType"] != "Medication"][:1]
        assert rx.code.code == "1"  # the shared Medication resolves in each part


def test_one_patients_problem_rejects_only_their_part() -> None:
    broken = patient("p2", "")
    broken["identifier"] = [{"type": MR}]
    parsed = batch_of(
        bundle(patient("p1", "A1"), condition("Patient/p1"), broken, condition("Patient/p2"))
    )
    first, second = parsed.parts
    assert first.problem is None and first.message is not None
    assert second.message is None and second.problem is not None
    assert second.problem.violations == [
        ("content.entry[2].resource.identifier[0].value", "is required")
    ]
    assert (first.message_id("b-1"), second.message_id("b-1")) == ("b-1#patient-1", "b-1#patient-2")


def test_a_resource_that_is_nobodys_rejects_the_whole_message() -> None:
    with pytest.raises(InvalidMessage) as raised:
        parse_fhir(
            bundle(
                patient("p1", "A1"),
                patient("p2", "A2"),
                condition("Patient/p1"),
                condition("Patient/p9"),
            )
        )
    ((path, description),) = raised.value.violations
    assert path == "content.entry[3].resource"
    assert "none of the message's Patients" in description


def test_two_patients_with_the_same_id_reject_the_message() -> None:
    with pytest.raises(InvalidMessage) as raised:
        parse_fhir(bundle(patient("p1", "A1"), patient("p1", "A2"), condition("Patient/p1")))
    assert raised.value.violations == [
        ("content.entry[1].resource", "another Patient of the message has the same id or fullUrl")
    ]


@pytest.mark.parametrize("bundle_type", ["message", "document"])
def test_a_message_or_document_bundle_stays_about_one_patient(bundle_type: str) -> None:
    content = bundle(patient("p1", "A1"), patient("p2", "A2"), bundle_type=bundle_type)
    with pytest.raises(InvalidMessage) as raised:
        parse_fhir(content)
    ((path, description),) = raised.value.violations
    assert path == "content.entry[1].resource"
    assert "batch, transaction or collection" in description


def test_ndjson_of_several_patients_is_one_part_per_patient() -> None:
    lines = [patient("p1", "A1"), condition("Patient/p2"), patient("p2", "A2")]
    parsed = parse_fhir_ndjson(b"\n".join(json.dumps(line).encode() for line in lines))
    assert isinstance(parsed, ParsedBatch)
    mrns = [
        part.message.patient.mrn for part in parsed.parts if part.message and part.message.patient
    ]
    assert mrns == ["A1", "A2"]
    assert [len(part.message.entries) for part in parsed.parts if part.message] == [0, 1]
