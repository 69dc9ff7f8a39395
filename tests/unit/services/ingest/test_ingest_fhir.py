"""The FHIR R4 JSON parser: the table-driven mapping and precise, PHI-free rejections."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from typing import Any

from repo_paths import MESSAGES
from unit_support import field_names, rejection

from healthbank.common.v1 import common_pb2
from healthbank.contracts.natid import make_national_id
from services.ingest.fhir import (
    RESOURCE_MAPPINGS,
    RESOURCE_TYPE_SYSTEM,
    parse_fhir,
    parse_fhir_ndjson,
)
from services.ingest.model import Category, Coding, Disposition

NATIONAL_ID = make_national_id("320102", date(1979, 8, 21), 515)
PHONE = "13955507777"
FAMILY = "Ellingsworth"


def _patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.1", "value": NATIONAL_ID},
            {"type": {"coding": [{"code": "MR"}]}, "value": "MRN-1"},
        ],
        "name": [{"family": FAMILY, "given": ["Rosalind"]}],
        "gender": "female",
        "birthDate": "1979-08-21",
        "telecom": [{"system": "phone", "value": PHONE}],
    }


def _allergy() -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "criticality": "high",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "764146007"}]},
        "patient": {"reference": "Patient/p1"},
        "recordedDate": "2019-05-02T10:00:00Z",
    }


def _bundle(*resources: dict[str, Any], bundle_type: str = "collection") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"resource": r} for r in (_patient(), *resources)],
    }


def _encode(document: object) -> bytes:
    return json.dumps(document).encode()


def _violations(content: bytes) -> list[tuple[str, str]]:
    return rejection(parse_fhir, content, "INVALID_FHIR", (NATIONAL_ID, PHONE, FAMILY, "MRN-1"))


def _fields(content: bytes) -> list[str]:
    return field_names(_violations(content))


def test_mapping_table_covers_each_clinical_type_with_a_real_category() -> None:
    assert set(RESOURCE_MAPPINGS) >= {
        "AllergyIntolerance",
        "Condition",
        "Procedure",
        "Observation",
        "ImagingStudy",
        "MedicationStatement",
        "Encounter",
        "DiagnosticReport",
    }
    for mapping in RESOURCE_MAPPINGS.values():
        assert mapping.category in set(common_pb2.RecordCategory.values()) - {0}
        assert mapping.code and mapping.effective


def test_admission_bundle_maps_every_resource_type() -> None:
    message = parse_fhir((MESSAGES / "fhir_admission_bundle.json").read_bytes())
    patient = message.patient
    assert patient.mrn == "H1-0042001"
    assert patient.national_id == "310104197504120379"
    # The official name wins over the first one; given names are joined.
    assert patient.demographics.family_name == "Thornquist"
    assert patient.demographics.given_name == "Aldric Bertram"
    assert patient.demographics.birth_date == "1975-04-12"
    assert patient.demographics.sex == "male"
    assert patient.demographics.phone == "13955501234"  # the phone, not the e-mail
    assert message.message_time == datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    by_category = {entry.category: entry for entry in message.entries}
    # Practitioner (context) is not a record; everything else is.
    assert [e.category for e in message.entries] == [
        Category.ALLERGY,
        Category.CONDITION,
        Category.PROCEDURE,
        Category.OBSERVATION,
        Category.IMAGING,
        Category.MEDICATION,
        Category.ENCOUNTER,
        Category.DOCUMENT,
    ]
    allergy = by_category[Category.ALLERGY]
    assert (allergy.code.system, allergy.code.code) == ("http://snomed.info/sct", "764146007")
    assert allergy.severity == "high"
    assert allergy.status == "active"
    assert allergy.source_version == "3"
    assert allergy.effective_time == datetime(2009, 6, 15, tzinfo=UTC)
    assert allergy.path == "content.entry[2].resource"
    condition = by_category[Category.CONDITION]
    assert condition.severity == "severe"  # severity coding display, lower case
    procedure = by_category[Category.PROCEDURE]
    assert procedure.effective_time == datetime(2022, 1, 17, 23, 45, tzinfo=UTC)  # period start
    observation = by_category[Category.OBSERVATION]
    assert observation.code.code == "2339-0"
    assert observation.resource["valueQuantity"] == {
        "value": 98,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    imaging = by_category[Category.IMAGING]
    assert imaging.code.code == "MR"  # modality first
    encounter = by_category[Category.ENCOUNTER]
    assert encounter.code.code == "IMP"  # class, as the encounter has no type
    report = by_category[Category.DOCUMENT]
    assert report.effective_time == datetime(2026, 3, 1, 2, 12, tzinfo=UTC)  # issued


def test_payload_is_the_resource_with_its_patient_reference_as_sent() -> None:
    message = parse_fhir((MESSAGES / "fhir_admission_bundle.json").read_bytes())
    assert message.entries[0].resource["patient"] == {
        "reference": "urn:uuid:7d0f6f2a-4a57-4a52-9d1c-2f1c7c1b0001"
    }


def test_message_bundle_ignores_the_header_and_accepts_absolute_references() -> None:
    message = parse_fhir((MESSAGES / "fhir_lab_message_bundle.json").read_bytes())
    assert message.patient.national_id == "44030519881103122X"  # second system URI accepted
    assert message.patient.demographics.family_name == "司徒"
    assert [e.code.code for e in message.entries] == ["4548-4", "8480-6"]
    # No effective time of its own: the entry leaves it to the bundle timestamp.
    assert message.entries[1].effective_time is None
    assert message.message_time == datetime(2026, 3, 2, 11, 0, tzinfo=UTC)


def test_the_home_address_is_forwarded_as_one_line_largest_part_first() -> None:
    bundle = json.loads((MESSAGES / "fhir_admission_bundle.json").read_bytes())
    at = next(
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Patient"
    )
    resource = bundle["entry"][at]["resource"]

    def forwarded(addresses: list[dict[str, Any]]) -> tuple[str, str | None]:
        resource["address"] = addresses
        patient = parse_fhir(_encode(bundle)).patient
        assert patient is not None
        return patient.demographics.address, patient.field_paths.get("demographics.address")

    home = {
        "use": "home",
        "line": ["学院路12号", "1单元101"],
        "district": "海淀区",
        "city": "北京市",
    }
    assert forwarded([{"use": "work", "text": "Office Tower 9"}, home]) == (
        "北京市 海淀区 学院路12号 1单元101",
        f"content.entry[{at}].resource.address[1]",
    )
    # The text when given, its line breaks made spaces; else the first address there is.
    assert forwarded([{"text": "北京市海淀区\n学院路12号 "}])[0] == "北京市海淀区 学院路12号"
    assert forwarded([{"use": "temp", "city": "Bedford", "state": "MA"}])[0] == "MA Bedford"
    assert forwarded([]) == ("", None)


def test_single_patient_is_a_demographics_update_without_records() -> None:
    message = parse_fhir((MESSAGES / "fhir_patient_update.json").read_bytes())
    assert message.patient.mrn == "H1-0042002"
    assert message.entries == ()


def test_a_patient_replacing_an_earlier_record_names_its_record_numbers() -> None:
    """Patient.link "replaces" with an MR identifier: identity merges that record's person
    (ADR 33); links it cannot act on are left alone, not refused."""
    patient = _patient()
    mr = {"coding": [{"code": "MR"}]}
    patient["link"] = [
        {"type": "replaces", "other": {"identifier": {"type": mr, "value": "MRN-OLD"}}},
        {"type": "replaces", "other": {"reference": "Patient/77"}},
        {"type": "seealso", "other": {"identifier": {"type": mr, "value": "MRN-ELSE"}}},
        {"type": "replaces", "other": {"identifier": {"type": mr, "value": "MRN-1"}}},
    ]
    assert parse_fhir(json.dumps(_bundle(_allergy())).encode()).patient.prior_mrns == ()
    message = parse_fhir(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": patient}, {"resource": _allergy()}
        ]}).encode()
    )  # fmt: skip
    assert message.patient.prior_mrns == ("MRN-OLD",)
    assert message.patient.field_paths["prior_mrns"] == "content.entry[0].resource.link"


def test_single_resource_with_contained_patient() -> None:
    message = parse_fhir((MESSAGES / "fhir_condition_contained_patient.json").read_bytes())
    assert message.patient.mrn == "H2-77031"
    (entry,) = message.entries
    assert entry.category == Category.CONDITION
    assert entry.severity == "moderate"  # severity text, lower case
    assert entry.path == "content"


def test_single_clinical_resource_without_patient_is_rejected() -> None:
    assert _fields(_encode(_allergy())) == ["content"]


def test_not_json() -> None:
    violations = _violations(b"MSH|^~\\&|this is HL7")
    assert violations == [("content", "is not valid JSON (line 1 column 1)")]


def test_not_utf8() -> None:
    assert _fields(b'{"resourceType": "\xff"}') == ["content"]


def test_nan_is_not_json() -> None:
    assert _fields(b'{"resourceType": "Bundle", "x": NaN}') == ["content"]


def test_json_array_is_not_a_resource() -> None:
    assert _fields(b"[]") == ["content"]


def test_missing_resource_type() -> None:
    assert _fields(b'{"id": "x"}') == ["content.resourceType"]


def test_bundle_type_must_be_a_message_type() -> None:
    bundle = _bundle(_allergy(), bundle_type="searchset")
    assert _fields(_encode(bundle)) == ["content.type"]


def test_bundle_without_entries() -> None:
    assert _fields(_encode({"resourceType": "Bundle", "type": "batch"})) == ["content.entry"]


def test_bundle_without_patient() -> None:
    bundle = _bundle(_allergy())
    del bundle["entry"][0]
    violations = _violations(_encode(bundle))
    assert violations == [("content.entry", "must contain a Patient resource")]


def test_bundle_with_two_patients() -> None:
    bundle = _bundle(_patient(), _allergy())
    assert _fields(_encode(bundle)) == ["content.entry[1].resource"]


def test_entry_without_resource() -> None:
    bundle = _bundle(_allergy())
    bundle["entry"].append({"fullUrl": "urn:uuid:x"})
    assert _fields(_encode(bundle)) == ["content.entry[2].resource"]


def test_every_resource_type_is_kept_as_record_document_or_directory() -> None:
    claim = {"resourceType": "Claim", "id": "c1", "status": "active", "created": "2020-01-02"}
    organization = {"resourceType": "Organization", "id": "o1", "name": "Hospital A"}
    header = {"resourceType": "MessageHeader", "id": "h1"}
    message = parse_fhir(_encode(_bundle(organization, _allergy(), claim, header)))
    assert [e.category for e in message.entries] == [Category.ALLERGY, Category.DOCUMENT]
    document = message.entries[1]
    assert document.code == Coding(RESOURCE_TYPE_SYSTEM, "Claim", "Claim")
    assert document.resource == claim
    assert document.effective_time == datetime(2020, 1, 2, tzinfo=UTC)
    assert [(o.resource_type, o.disposition, o.entry_index) for o in message.outcomes] == [
        ("Organization", Disposition.DIRECTORY, None),
        ("AllergyIntolerance", Disposition.RECORD, 0),
        ("Claim", Disposition.DOCUMENT, 1),
        ("MessageHeader", Disposition.SKIPPED, None),
    ]
    assert message.outcomes[3].reason
    assert [(d.resource_type, d.resource_id) for d in message.directory] == [("Organization", "o1")]


def test_a_bad_element_of_an_unmapped_type_never_rejects_the_message() -> None:
    goal = {"resourceType": "Goal", "status": 7, "date": "yesterday", "code": {"coding": [{}]}}
    message = parse_fhir(_encode(_bundle(_allergy(), goal)))
    assert message.entries[1].code == Coding(RESOURCE_TYPE_SYSTEM, "Goal", "Goal")
    assert message.entries[1].effective_time is None


def test_missing_code() -> None:
    allergy = _allergy()
    del allergy["code"]
    assert _violations(_encode(_bundle(allergy))) == [
        ("content.entry[1].resource.code", "is required")
    ]


def test_coding_without_system_and_code() -> None:
    condition = {
        "resourceType": "Condition",
        "code": {"coding": [{"display": "Asthma"}]},
        "subject": {"reference": "Patient/p1"},
    }
    assert _fields(_encode(_bundle(condition))) == [
        "content.entry[1].resource.code.coding[0].system",
        "content.entry[1].resource.code.coding[0].code",
    ]


def test_text_only_concept_is_accepted() -> None:
    allergy = _allergy()
    allergy["code"] = {"text": "Cat dander"}
    (entry,) = parse_fhir(_encode(_bundle(allergy))).entries
    assert (entry.code.system, entry.code.code, entry.code.display) == ("", "", "Cat dander")


def test_empty_concept() -> None:
    allergy = _allergy()
    allergy["code"] = {}
    assert _fields(_encode(_bundle(allergy))) == ["content.entry[1].resource.code"]


def test_encounter_type_list_takes_its_first_item() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "type": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "185347001"}]},
            {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
        ],
        "period": {"end": "2026-01-01T10:00:00+08:00"},
        "subject": {"reference": "Patient/p1"},
    }
    (entry,) = parse_fhir(_encode(_bundle(encounter))).entries
    assert entry.code.code == "185347001"
    assert entry.effective_time == datetime(2026, 1, 1, 2, 0, tzinfo=UTC)  # period end alone


def test_bad_date_points_at_the_element() -> None:
    allergy = _allergy()
    allergy["recordedDate"] = "02/05/2019"
    violations = _violations(_encode(_bundle(allergy)))
    assert [field for field, _ in violations] == ["content.entry[1].resource.recordedDate"]


def test_datetime_without_zone_is_rejected() -> None:
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "performedPeriod": {"start": "2015-09-17T08:30:00"},
        "subject": {"reference": "Patient/p1"},
    }
    assert _fields(_encode(_bundle(procedure))) == [
        "content.entry[1].resource.performedPeriod.start"
    ]


def test_quantity_value_must_be_a_number() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1558-6"}]},
        "valueQuantity": {"value": "5.4", "unit": "mmol/L"},
        "subject": {"reference": "Patient/p1"},
    }
    assert _fields(_encode(_bundle(observation))) == [
        "content.entry[1].resource.valueQuantity.value"
    ]


def test_reference_to_another_patient_is_rejected() -> None:
    allergy = _allergy()
    allergy["patient"] = {"reference": "Patient/someone-else"}
    assert _fields(_encode(_bundle(allergy))) == ["content.entry[1].resource.patient.reference"]


def test_patient_without_identifiers() -> None:
    bundle = _bundle(_allergy())
    del bundle["entry"][0]["resource"]["identifier"]
    assert _fields(_encode(bundle)) == ["content.entry[0].resource.identifier"]


def test_patient_without_mrn() -> None:
    bundle = _bundle(_allergy())
    bundle["entry"][0]["resource"]["identifier"].pop(1)
    violations = _violations(_encode(bundle))
    assert [field for field, _ in violations] == ["content.entry[0].resource.identifier"]
    assert "MR" in violations[0][1]


def test_invalid_national_id_check_digit() -> None:
    wrong = NATIONAL_ID[:-1] + ("0" if NATIONAL_ID[-1] != "0" else "1")
    bundle = _bundle(_allergy())
    bundle["entry"][0]["resource"]["identifier"][0]["value"] = wrong
    violations = _violations(_encode(bundle))
    assert violations == [
        (
            "content.entry[0].resource.identifier[0].value",
            "invalid national ID: check digit mismatch",
        )
    ]
    assert wrong not in repr(violations)


def test_patient_without_national_id_is_accepted() -> None:
    # Identity decides whether the record number alone is enough (it is, once linked).
    bundle = _bundle(_allergy())
    bundle["entry"][0]["resource"]["identifier"].pop(0)
    assert parse_fhir(_encode(bundle)).patient.national_id == ""


def test_bad_gender_and_birth_date() -> None:
    bundle = _bundle(_allergy())
    patient = bundle["entry"][0]["resource"]
    patient["gender"] = "F"
    patient["birthDate"] = "21.08.1979"
    assert sorted(_fields(_encode(bundle))) == [
        "content.entry[0].resource.birthDate",
        "content.entry[0].resource.gender",
    ]


def test_every_problem_is_reported_at_once() -> None:
    allergy = _allergy()
    del allergy["code"]
    observation = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "http://loinc.org", "code": "x"}]},
        "effectiveDateTime": "yesterday",
    }
    bundle = _bundle(allergy, observation, bundle_type="history")
    assert sorted(_fields(_encode(bundle))) == [
        "content.entry[1].resource.code",
        "content.entry[2].resource.effectiveDateTime",
        "content.type",
    ]


def test_parser_does_not_modify_shared_input() -> None:
    bundle = _bundle(_allergy())
    before = copy.deepcopy(bundle)
    parse_fhir(_encode(bundle))
    assert bundle == before


def _medication_request(medication: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "authoredOn": "2021-03-04",
        "subject": {"reference": "Patient/p1"},
        **medication,
    }


def test_medication_reference_resolves_by_full_url_contained_or_keeps_the_reference() -> None:
    warfarin = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "855332",
                    "display": "Warfarin",
                }
            ]
        },
    }
    by_url = _medication_request({"medicationReference": {"reference": "urn:uuid:m-1"}})
    contained = _medication_request(
        {"contained": [warfarin], "medicationReference": {"reference": "#m1"}}
    )
    dangling = _medication_request(
        {"medicationReference": {"reference": "Medication/elsewhere", "display": "Apixaban"}}
    )
    bundle = _bundle(by_url, contained, dangling)
    bundle["entry"].append({"fullUrl": "urn:uuid:m-1", "resource": warfarin})
    message = parse_fhir(_encode(bundle))
    codes = [entry.code for entry in message.entries if entry.category == Category.MEDICATION]
    assert [c.code for c in codes] == ["855332", "855332", ""]
    assert codes[2] == Coding("", "", "Apixaban")
    assert message.entries[2].resource == dangling  # kept exactly as sent
    # The Medication itself is kept too, as a document record.
    assert message.entries[3].category == Category.DOCUMENT


def test_a_directory_bundle_has_no_patient_and_no_records() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Organization", "id": "o1"}},
            {"fullUrl": "urn:uuid:pr1", "resource": {"resourceType": "Practitioner"}},
        ],
    }
    message = parse_fhir(_encode(bundle))
    assert message.patient is None and message.entries == ()
    assert [(d.resource_type, d.resource_id) for d in message.directory] == [
        ("Organization", "o1"),
        ("Practitioner", "urn:uuid:pr1"),
    ]
    single = parse_fhir(_encode({"resourceType": "Location", "id": "l1"}))
    assert single.patient is None and [d.resource_id for d in single.directory] == ["l1"]


def test_a_bundle_of_clinical_resources_without_a_patient_is_still_rejected() -> None:
    bundle = _bundle(_allergy(), {"resourceType": "Organization", "id": "o1"})
    del bundle["entry"][0]
    assert _fields(_encode(bundle)) == ["content.entry"]


def test_ndjson_lines_read_as_a_collection_bundle() -> None:
    lines = [_patient(), _allergy(), {"resourceType": "Claim", "id": "c1"}]
    message = parse_fhir_ndjson(("\n".join(json.dumps(r) for r in lines) + "\n\n").encode())
    assert message.patient is not None and message.patient.mrn == "MRN-1"
    assert [e.category for e in message.entries] == [Category.ALLERGY, Category.DOCUMENT]
    assert [(o.resource_type, o.disposition) for o in message.outcomes] == [
        ("AllergyIntolerance", Disposition.RECORD),
        ("Claim", Disposition.DOCUMENT),
    ]


def test_ndjson_problems_name_the_line() -> None:
    content = (json.dumps(_patient()) + "\n{not json}\n[1]\n").encode()
    violations = rejection(
        parse_fhir_ndjson, content, "INVALID_FHIR", (NATIONAL_ID, PHONE, FAMILY, "MRN-1")
    )
    assert field_names(violations) == ["content.line[2]", "content.line[3]"]
