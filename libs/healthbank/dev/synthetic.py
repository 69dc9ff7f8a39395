"""Synthetic hospitals and patients for the demo, the end-to-end tests and benchmarks.

Everything here is invented: names, ID numbers (valid check digits, made-up
people) and phone numbers. Tests use these known values to prove that none of
them ever reaches a log line or a storage file in plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from healthbank.contracts.natid import make_national_id

NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"
DICOM_NATIONAL_ID_ISSUER = "CN-NATIONAL-ID"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


@dataclass(frozen=True)
class Hospital:
    """A hospital sending data (its integration engine is a hospital-engine principal)."""

    hospital_id: str
    display: str


@dataclass(frozen=True)
class Patient:
    """An invented patient."""

    family_name: str
    given_name: str
    birth_date: date
    sex: str
    phone: str
    national_id: str
    mrn: str


HOSPITAL_A = Hospital("hospital-a", "City General Hospital (A)")
HOSPITAL_B = Hospital("hospital-b", "Riverside Hospital (B)")


def patient(index: int, mrn_prefix: str = "A") -> Patient:
    """The index-th invented patient; deterministic, so tests can search for its values."""
    families = ["Quarnby", "Velloway", "Ostrand", "Pemberlin", "Drummock", "Faircloud"]
    givens = ["Liora", "Tamsin", "Oswin", "Mireille", "Caspian", "Wren"]
    # Born 1940-2008: always a valid (past) birth date in the ID number.
    birth = date(1940, 1, 1) + timedelta(days=(3671 * index + 97) % 25_000)
    return Patient(
        family_name=families[index % len(families)] + ("" if index < 6 else str(index)),
        given_name=givens[(index * 5) % len(givens)],
        birth_date=birth,
        sex="female" if index % 2 == 0 else "male",
        phone=f"139{(40012345 + 7919 * index) % 100_000_000:08d}",
        national_id=make_national_id("110105", birth, 100 + index),
        mrn=f"{mrn_prefix}{700000 + index}",
    )


def fresh_patient() -> Patient:
    """A new invented patient with a random birth date, ID sequence and MRN.

    ``healthbank demo`` uses one per run, so a second run against the same stack meets
    no grant, receipt or identity link left by the first.
    """
    rng = secrets.SystemRandom()
    person = patient(rng.randrange(6))
    birth = date(1940, 1, 1) + timedelta(days=rng.randrange(25_000))
    return Patient(
        family_name=person.family_name,
        given_name=person.given_name,
        birth_date=birth,
        sex=person.sex,
        phone=f"139{rng.randrange(100_000_000):08d}",
        national_id=make_national_id("110105", birth, rng.randrange(1000)),
        mrn=f"D{rng.randrange(10**9):09d}",
    )


def _patient_resource(person: Patient) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": NATIONAL_ID_SYSTEM, "value": person.national_id},
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "value": person.mrn,
            },
        ],
        "name": [{"family": person.family_name, "given": [person.given_name]}],
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "telecom": [{"system": "phone", "value": person.phone}],
    }


def _entry(resource: dict[str, object]) -> dict[str, object]:
    return {"resource": resource}


def emergency_history_bundle(person: Patient, bundle_id: str) -> bytes:
    """A FHIR R4 Bundle: a severe penicillin allergy, an appendectomy, hypertension."""
    subject = {"reference": "Patient/p1"}
    resources: list[dict[str, object]] = [
        _patient_resource(person),
        {
            "resourceType": "AllergyIntolerance",
            "criticality": "high",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": "764146007", "display": "Penicillin"}]},
            "patient": subject,
            "recordedDate": "2019-05-02T10:00:00Z",
        },
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": SNOMED, "code": "80146002", "display": "Appendectomy"}]},
            "subject": subject,
            "performedDateTime": "2015-09-17T08:30:00Z",
        },
        {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "severity": {"coding": [{"system": SNOMED, "code": "6736007", "display": "Moderate"}]},
            "code": {"coding": [{"system": ICD10, "code": "I10", "display": "Hypertension"}]},
            "subject": subject,
            "onsetDateTime": "2018-01-10T00:00:00Z",
        },
    ]
    return _bundle(bundle_id, resources)


def glucose_bundle(person: Patient, bundle_id: str, values: list[tuple[str, float]]) -> bytes:
    """A FHIR R4 Bundle of fasting glucose results (mmol/L) at the given ISO times."""
    resources: list[dict[str, object]] = [_patient_resource(person)]
    for when, value in values:
        resources.append(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {
                    "coding": [{"system": LOINC, "code": "1558-6", "display": "Fasting glucose"}]
                },
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": "mmol/L"},
            }
        )
    return _bundle(bundle_id, resources)


def scanned_letters_bundle(
    person: Patient, bundle_id: str, letters: int, letter_bytes: int
) -> bytes:
    """A FHIR R4 Bundle: the patient and ``letters`` DocumentReferences, each a scanned
    letter of ``letter_bytes`` (base64 in the attachment): a large message of few resources."""
    resources: list[dict[str, object]] = [_patient_resource(person)]
    for n in range(letters):
        scan = hashlib.shake_256(f"{bundle_id}/{n}".encode()).digest(letter_bytes)
        resources.append(
            {
                "resourceType": "DocumentReference",
                "id": f"letter-{n}",
                "status": "current",
                "type": {"coding": [{"system": LOINC, "code": "34133-9"}]},
                "subject": {"reference": "Patient/p1"},
                "date": "2024-05-01T10:00:00+08:00",
                "content": [
                    {
                        "attachment": {
                            "contentType": "application/pdf",
                            "data": base64.b64encode(scan).decode(),
                        }
                    }
                ],
            }
        )
    return _bundle(bundle_id, resources)


def oru_with_segments(person: Patient, control_id: str, hospital: Hospital, segments: int) -> bytes:
    """An HL7 v2.5 ORU^R01 with ``segments`` OBX results, the last one without its code
    (OBX-3): slow to parse, then refused as ``content.OBX[<segments - 1>].3``."""
    head = [
        f"MSH|^~\\&|LAB|{hospital.hospital_id}|HEALTHBANK|CITY|20260301120000||ORU^R01|"
        f"{control_id}|P|2.5",
        f"PID|1||{person.mrn}^^^{hospital.hospital_id}^MR||{person.family_name}^"
        f"{person.given_name}||{person.birth_date.strftime('%Y%m%d')}",
        "OBR|1|||24323-8^Metabolic panel^LN",
    ]
    results = [f"OBX|{n}|NM|2345-7^Glucose^LN||{n % 200}|mg/dL|||||F" for n in range(1, segments)]
    return "\r".join([*head, *results, f"OBX|{segments}|NM|||5|mg/dL|||||F", ""]).encode()


def _bundle(bundle_id: str, resources: list[dict[str, object]]) -> bytes:
    bundle = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "entry": [_entry(resource) for resource in resources],
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def ct_study(person: Patient, study_time: datetime | None = None) -> bytes:
    """A real CT image (pydicom's CT_small.dcm) relabelled for ``person``."""
    # Imported here: pydicom is heavy and only imaging needs it.
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.dataset import Dataset

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        raise RuntimeError("pydicom test data CT_small.dcm is missing")
    dataset = pydicom.dcmread(str(path))
    when = study_time or datetime(2026, 11, 2, 9, 15, tzinfo=UTC)
    dataset.PatientName = f"{person.family_name}^{person.given_name}"
    dataset.PatientID = person.mrn
    dataset.PatientBirthDate = person.birth_date.strftime("%Y%m%d")
    national = Dataset()
    national.PatientID = person.national_id
    national.IssuerOfPatientID = DICOM_NATIONAL_ID_ISSUER
    dataset.OtherPatientIDsSequence = [national]
    dataset.StudyDate = when.strftime("%Y%m%d")
    dataset.StudyTime = when.strftime("%H%M%S")
    dataset.StudyDescription = "CT chest"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def adt_a04(person: Patient, control_id: str, hospital: Hospital) -> bytes:
    """An HL7 v2.5 ADT^A04 (register a patient) with an allergy and a diagnosis."""
    born = person.birth_date.strftime("%Y%m%d")
    segments = [
        f"MSH|^~\\&|HIS|{hospital.hospital_id}|HEALTHBANK|CITY|20261102091500||ADT^A04|"
        f"{control_id}|P|2.5",
        f"PID|1||{person.mrn}^^^{hospital.hospital_id}^MR~{person.national_id}^^^CHN^NNCHN||"
        f"{person.family_name}^{person.given_name}||{born}|{person.sex[0].upper()}|||||"
        f"{person.phone}",
        "AL1|1|DA|^Sulfonamide|MO|Rash",
        "DG1|1||E11^Type 2 diabetes mellitus^I10||20200301",
    ]
    return "\r".join(segments).encode()
