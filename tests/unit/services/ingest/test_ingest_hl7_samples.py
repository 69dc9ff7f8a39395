"""HL7 v2 messages from public test suites this project did not write (issue 7, point 3).

Every collected sample (tests/fixtures/hl7_samples, made by tools/fetch_hl7_samples.py) is
listed below with its expected outcome: accepted as sent, or refused with exactly the
violations of the standard it contains. None of them carries a national ID, which identity
still requires for a patient it has never seen, so the outcome is asserted on the parser
and mapping that ingest runs; tests/services/test_ingest_service.py takes the same parser
through the servicer.
"""

from __future__ import annotations

import pytest
from repo_paths import HL7_SAMPLES

from services.ingest.hl7v2 import parse_hl7v2
from services.ingest.model import Category, InvalidMessage

TIMESTAMP = "must be an HL7 timestamp YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ]"
DOC, OBS, ENC, COND = (
    Category.DOCUMENT,
    Category.OBSERVATION,
    Category.ENCOUNTER,
    Category.CONDITION,
)

# file → the record categories it becomes, or the violations it is refused with.
ACCEPTED: dict[str, list[Category]] = {
    "hl7-standard/batch_0.er7": [],  # ADT^A01 with PID only: identity update, no facts
    # ADT^A01 with PV1-2 "OP" (site class, table 0004), an empty AL1 placeholder, a
    # text-only DG1, and a Z-segment (kept).
    "hl7-standard/message_0.er7": [ENC, COND, DOC],
    "hl7apy/test_core_0.er7": [DOC],  # OML^O33: orders become registered reports
    "hl7apy/test_core_1.er7": [DOC] * 4,
    "hl7apy/test_core_2.er7": [DOC] * 4,
    "hl7apy/test_parser_4.er7": [DOC] * 4,
    "hl7apy/test_to_string_0.er7": [DOC],
    "hl7apy/test_to_string_1.er7": [DOC],
    "hl7apy/test_validation_0.er7": [ENC],
    "hl7apy/test_validation_2.er7": [DOC],
    "hl7apy/test_validation_3.er7": [DOC] * 4,
    "python-hl7/samples_1.er7": [],  # the repetition-structure sample: PID-3 untyped
    "python-hl7/samples_2.er7": [ENC],  # ADT^A04, PID-3 typed "A", PID-8 "1" (site code)
    "python-hl7/samples_4.er7": [ENC, COND],
    "simple-hl7/adt_0.er7": [ENC],
    "simple-hl7/orm_0.er7": [DOC],
    "simple-hl7/oru_0.er7": [DOC, OBS, OBS, OBS, OBS, OBS],
}
REFUSED: dict[str, list[tuple[str, str]]] = {
    # PID-7 "196203520": nine digits is no TS.
    "python-hl7/samples_0.er7": [("content.PID[0].7", TIMESTAMP)],
    # MSH-7 of eleven digits; OBR-4 and OBX-3 (both required) shifted into other fields;
    # NM value "01I"; TS value with month 34.
    "simple-hl7/oru-imm_0.er7": [
        ("content.MSH[0].7", TIMESTAMP),
        ("content.OBX[15].5", "must be a number for value type NM"),
        ("content.OBR[3].4", "is required"),
        ("content.OBR[4].4", "is required"),
        ("content.OBX[36].3", "is required"),
        ("content.OBX[37].3", "is required"),
        ("content.OBX[38].3", "is required"),
        ("content.OBX[39].3", "is required"),
        ("content.OBR[6].4", "is required"),
        ("content.OBX[44].5", "is not a valid calendar date or time"),
    ],
}


def test_every_sample_has_an_expected_outcome() -> None:
    collected = {path.relative_to(HL7_SAMPLES).as_posix() for path in HL7_SAMPLES.glob("*/*.er7")}
    assert collected == set(ACCEPTED) | set(REFUSED)
    sources = {name.split("/")[0] for name in collected}
    assert len(sources) >= 3


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_sample_is_accepted_as_sent(name: str) -> None:
    message = parse_hl7v2((HL7_SAMPLES / name).read_bytes())
    assert message.patient.mrn
    assert [entry.category for entry in message.entries] == ACCEPTED[name]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_sample_breaking_the_standard_is_refused_naming_it(name: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        parse_hl7v2((HL7_SAMPLES / name).read_bytes())
    assert refused.value.reason == "INVALID_HL7V2"
    assert refused.value.violations == REFUSED[name]
