"""The ILI cases ingest stores with a message (ADR 30): district from the parsed address,
age band from the birth date on the visit day, local visit day."""

from __future__ import annotations

import json
from datetime import date

from healthbank.records import SurveillanceCase
from services.ingest.canonical import surveillance_cases
from services.ingest.fhir import parse_fhir
from services.ingest.hl7v2 import parse_hl7v2

PERSON = "a1" * 32
MSH = "MSH|^~\\&|HIS|hospital-b|HEALTHBANK|CITY|20261102091500||ADT^A04|CTRL-1|P|2.5"
# PID-11: street, other, city, state, zip, country, type, other geographic, county (district).
PID = (
    "PID|1||M-9^^^hospital-b^MR||Abernathy^Juniper||19901201|F"
    "|||1 Road^^上海市^^200001^CHN^H^^黄浦区"
)


def hl7(*segments: str, pid: str = PID) -> bytes:
    return "\r".join([MSH, pid, *segments]).encode()


def test_an_hl7_ili_diagnosis_is_a_case_in_the_pid_11_district() -> None:
    # Two ILI diagnoses of one visit, one of them the national edition's J11.100: one case.
    message = parse_hl7v2(
        hl7("DG1|1||J11.100^流行性感冒^I10|||20261102", "DG1|2||J10.1^Influenza^I10|||20261102")
    )
    assert surveillance_cases(message, PERSON) == [
        SurveillanceCase(date(2026, 11, 2), "黄浦区", "25-59", PERSON)
    ]


def test_no_district_is_unknown_and_other_diagnoses_are_no_case() -> None:
    no_address = "PID|1||M-9^^^hospital-b^MR||Abernathy^Juniper||20230101|F"
    message = parse_hl7v2(hl7("DG1|1||J10.1^Influenza^I10|||20261102", pid=no_address))
    assert surveillance_cases(message, PERSON) == [
        SurveillanceCase(date(2026, 11, 2), "unknown", "0-4", PERSON)
    ]
    assert surveillance_cases(parse_hl7v2(hl7("DG1|1||E11^Diabetes^I10")), PERSON) == []


def test_a_fhir_patient_counts_in_its_home_district() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [
                        {
                            "type": {"coding": [{"code": "MR"}]},
                            "system": "urn:oid:1.2.156.hospital-a.mrn",
                            "value": "H1-77",
                        }
                    ],
                    "birthDate": "1950-06-30",
                    "address": [
                        {"use": "work", "district": "浦东新区"},
                        {"use": "home", "district": "徐汇区"},
                    ],
                },
            },
            {
                "resource": {
                    "resourceType": "Condition",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "6142004"}]},
                    "subject": {"reference": "urn:uuid:p1"},
                    # 07:30 in Beijing: the 10th there, the 9th in UTC.
                    "recordedDate": "2026-01-10T07:30:00+08:00",
                }
            },
        ],
    }
    message = parse_fhir(json.dumps(bundle).encode())
    assert surveillance_cases(message, PERSON) == [
        SurveillanceCase(date(2026, 1, 10), "徐汇区", "60+", PERSON)
    ]
