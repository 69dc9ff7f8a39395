"""The expected outcome of every public HL7 v2 sample (tests/fixtures/hl7_samples).

Shared by the parser's unit test and the ingest service test: each file is accepted as
sent (with the record categories it becomes) or refused with exactly the violations of the
standard it contains, named.
"""

from __future__ import annotations

from services.ingest.model import Category

TIMESTAMP = "must be an HL7 timestamp YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ]"
DOC, OBS, ENC, COND = (
    Category.DOCUMENT,
    Category.OBSERVATION,
    Category.ENCOUNTER,
    Category.CONDITION,
)

# file → the record categories it becomes, or the violations it is refused with.
SAMPLE_ACCEPTED: dict[str, list[Category]] = {
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
SAMPLE_REFUSED: dict[str, list[tuple[str, str]]] = {
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
