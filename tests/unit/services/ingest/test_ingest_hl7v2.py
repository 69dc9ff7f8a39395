"""The HL7 v2 ER7 parser and the ADT/ORU mapping to FHIR records."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import pytest
from repo_paths import HL7_SAMPLES, MESSAGES
from unit_support import field_names, rejection

from healthbank.contracts.natid import make_national_id
from services.ingest.hl7v2 import (
    Delimiters,
    coding_system_uri,
    parse_er7,
    parse_hl7v2,
    unescape,
)
from services.ingest.model import Category

NATIONAL_ID = make_national_id("330106", date(1990, 12, 1), 44)
PHONE = "13855504444"
FAMILY = "Abernathy"

MSH = "MSH|^~\\&|HIS|hospital-b|HEALTHBANK|CITY|20261102091500||ADT^A04|CTRL-1|P|2.5"
PID = (
    f"PID|1||M-9^^^hospital-b^MR~{NATIONAL_ID}^^^CHN^NNCHN||{FAMILY}^Juniper||19901201|F"
    f"|||||{PHONE}"
)


def _message(*segments: str, msh: str = MSH, pid: str | None = PID) -> bytes:
    lines = [msh, *([pid] if pid is not None else []), *segments]
    return "\r".join(lines).encode()


def _violations(content: bytes) -> list[tuple[str, str]]:
    return rejection(parse_hl7v2, content, "INVALID_HL7V2", (NATIONAL_ID, PHONE, FAMILY))


def _fields(content: bytes) -> list[str]:
    return field_names(_violations(content))


# -- the ER7 layer ------------------------------------------------------------------------


def test_unescape_standard_sequences() -> None:
    delimiters = Delimiters()
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", delimiters) == "a|b^c&d~e\\f"
    assert unescape(r"line\.br\next", delimiters) == "line\nnext"
    assert unescape("\\X4869\\", delimiters) == "Hi"
    assert unescape("\\H\\bold\\N\\", delimiters) == "bold"
    # Unknown and unterminated sequences stay as sent.
    assert unescape(r"\Q\ and \F", delimiters) == r"\Q\ and \F"


def test_unescape_with_declared_delimiters() -> None:
    delimiters = Delimiters("#", "@", "$", "!", "%")
    assert unescape("a!F!b!S!c!E!", delimiters) == "a#b@c!"


def test_segments_accept_cr_lf_and_crlf_and_mllp_framing() -> None:
    for separator in ("\r", "\n", "\r\n"):
        text = "\x0b" + separator.join([MSH, PID, "AL1|1||^Dust"]) + separator + "\x1c\r"
        message = parse_er7(text)
        assert [s.name for s in message.segments] == ["MSH", "PID", "AL1"]


def test_msh_fields_are_numbered_like_the_standard() -> None:
    message = parse_er7(MSH)
    msh = message.segments[0]
    assert msh.raw(1) == "|"
    assert msh.raw(2) == "^~\\&"
    assert msh.get(9, 1) == "ADT"
    assert msh.get(9, 2) == "A04"
    assert msh.get(10) == "CTRL-1"


def test_repetitions_components_and_subcomponents() -> None:
    message = parse_er7("\r".join([MSH, "ZZZ|1|a~b^c&d^e"]))
    segment = message.first("ZZZ")
    assert segment is not None
    assert segment.repetitions(2) == ["a", "b^c&d^e"]
    assert segment.get(2, 2, repetition=1) == "c"
    assert segment.get(2, 2, repetition=1, sub=2) == "d"
    assert segment.get(2, 9) == ""
    assert segment.get(7) == ""


def test_missing_msh() -> None:
    assert _violations(PID.encode()) == [
        ("content.MSH", "the message must start with an MSH segment")
    ]


def test_empty_message() -> None:
    assert _fields(b"") == ["content.MSH"]


def test_wrong_field_separator() -> None:
    assert _fields(b"MSHA^~\\&AHIS") == ["content.MSH[0].1"]


@pytest.mark.parametrize("encoding", ["^~\\", "^^\\&", "^~\\&^", "ab\\&", "^~ &"])
def test_wrong_encoding_characters(encoding: str) -> None:
    msh = f"MSH|{encoding}|HIS|h|HB|CITY|20261102||ADT^A04|C|P|2.5"
    assert _fields(f"{msh}\r{PID}".encode()) == ["content.MSH[0].2"]


def test_bad_segment_id_and_second_msh() -> None:
    content = _message("al1|1||^Dust", MSH)
    assert _fields(content) == ["content.segment[2]", "content.segment[3]"]


def test_not_utf8_unless_gb18030_is_declared() -> None:
    name = "王".encode("gb18030")
    plain = _message().replace(FAMILY.encode(), name)
    assert _fields(plain) == ["content"]
    declared = plain.replace(b"|P|2.5", b"|P|2.5|||||||GB 18030-2000", 1)
    message = parse_hl7v2(declared)
    assert message.patient.demographics.family_name == "王"


# -- message validation -------------------------------------------------------------------


def test_unsupported_message_type() -> None:
    content = _message(msh=MSH.replace("ADT^A04", "SIU^S12"))
    violations = _violations(content)
    assert [field for field, _ in violations] == ["content.MSH[0].9"]
    assert "ADT^A01" in violations[0][1]


def test_missing_message_type_and_control_id() -> None:
    content = _message(msh=MSH.replace("ADT^A04|CTRL-1", "|"))
    assert _fields(content) == ["content.MSH[0].9", "content.MSH[0].10"]


def test_missing_pid() -> None:
    assert _fields(_message("AL1|1||^Dust", pid=None)) == ["content.PID"]


def test_two_pids() -> None:
    assert _fields(_message(PID)) == ["content.PID[1]"]


def test_pid_without_identifiers() -> None:
    pid = f"PID|1||||{FAMILY}^Juniper||19901201|F"
    assert _violations(_message(pid=pid)) == [
        ("content.PID[0].3", "is required (patient identifiers)")
    ]


def test_pid_without_mrn() -> None:
    pid = f"PID|1||{NATIONAL_ID}^^^CHN^NNCHN||{FAMILY}^Juniper"
    violations = _violations(_message(pid=pid))
    assert [field for field, _ in violations] == ["content.PID[0].3"]
    assert "other than the national ID" in violations[0][1]


@pytest.mark.parametrize(
    "identifiers",
    ["M-9", "M-9^^^hospital-b", "M-9^^^hospital-b^PI", '""~M-9^^^^EPI', "^^^x~M-9^^^^PK"],
)
def test_pid3_without_mr_takes_the_first_usable_identifier(identifiers: str) -> None:
    pid = f"PID|1||{identifiers}~{NATIONAL_ID}^^^CHN^NNCHN||{FAMILY}^Juniper"
    patient = parse_hl7v2(_message(pid=pid)).patient
    assert patient.mrn == "M-9"
    assert patient.national_id == NATIONAL_ID


def test_an_mr_typed_identifier_wins_over_an_earlier_untyped_one() -> None:
    pid = f"PID|1||OTHER-1~M-9^^^hospital-b^MR||{FAMILY}"
    assert parse_hl7v2(_message(pid=pid)).patient.mrn == "M-9"


def test_invalid_national_id_check_digit() -> None:
    wrong = NATIONAL_ID[:-1] + ("0" if NATIONAL_ID[-1] != "0" else "1")
    pid = PID.replace(NATIONAL_ID, wrong)
    assert _violations(_message(pid=pid)) == [
        ("content.PID[0].3[1].1", "invalid national ID: check digit mismatch")
    ]


def test_ni_type_code_is_a_national_id_too() -> None:
    pid = PID.replace("NNCHN", "NI")
    assert parse_hl7v2(_message(pid=pid)).patient.national_id == NATIONAL_ID


def test_bad_birth_date() -> None:
    pid = PID.replace("19901201|F", "19901341|F")
    assert _fields(_message(pid=pid)) == ["content.PID[0].7"]


@pytest.mark.parametrize("code", ["Female", "1", "X"])
def test_a_site_sex_code_is_accepted_and_not_forwarded(code: str) -> None:
    # Table 0001 is user-defined: local codes are allowed by the standard.
    pid = PID.replace("19901201|F", f"19901201|{code}")
    patient = parse_hl7v2(_message(pid=pid)).patient
    assert patient.demographics.sex == ""
    assert "demographics.sex" not in patient.field_paths


def test_a_site_patient_class_is_kept_in_the_v2_table() -> None:
    (encounter,) = parse_hl7v2(_message("PV1||OP")).entries
    assert encounter.resource["class"] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0004",
        "code": "OP",
    }


def test_empty_placeholder_segments_state_no_fact() -> None:
    assert parse_hl7v2(_message("AL1|1||^^|||", "DG1|1", 'PR1|1|""')).entries == ()
    assert _fields(_message("AL1|1|DA||SV")) == ["content.AL1[0].3"]


def test_bad_message_time() -> None:
    assert _fields(_message(msh=MSH.replace("20261102091500", "2026-11-02"))) == [
        "content.MSH[0].7"
    ]


def test_a_code_without_coding_system_is_a_local_code() -> None:
    # CE.3 is optional in the standard; table 0396 calls a local code "L".
    (condition,) = parse_hl7v2(_message("DG1|1||E11^Diabetes")).entries
    assert (condition.code.system, condition.code.code) == ("urn:hl7-v2:coding-system:L", "E11")


@pytest.mark.parametrize("name", ["I9", "I9C", "ICD9"])
def test_icd9_coding_system_names(name: str) -> None:
    (condition,) = parse_hl7v2(_message(f"DG1|1||410.91^AMI^{name}")).entries
    assert condition.code.system == "http://hl7.org/fhir/sid/icd-9-cm"


def test_explicit_null_clears_and_is_never_a_value() -> None:
    content = _message(
        'PV1|1|I|||||||||||||||||||||||||||||||||||||||||""|""',
        'OBX|1|NM|8310-5^Body temperature^LN||38.9|Cel^^UCUM|""|""|||F|||""',
        'DG1|1||J18.9^Pneumonia^I10||""',
        pid=f'PID|1||M-9^^^h^MR||{FAMILY}^""||""|""|||||""',
    )
    message = parse_hl7v2(content)
    demographics = message.patient.demographics
    assert (demographics.given_name, demographics.birth_date, demographics.sex) == ("", "", "")
    assert demographics.phone == ""
    encounter, observation, condition = message.entries
    assert "period" not in encounter.resource
    assert "interpretation" not in observation.resource
    assert "referenceRange" not in observation.resource
    assert "recordedDate" not in condition.resource
    assert '""' not in json.dumps([entry.resource for entry in message.entries])


def test_z_segments_are_kept_with_the_message() -> None:
    message = parse_hl7v2(_message("ZPI|custom|x^y", "ZNM|||(763)257-8511"))
    (kept,) = message.entries
    assert kept.category == Category.DOCUMENT
    assert kept.code.code == "Z"
    attachment = kept.resource["content"][0]["attachment"]
    assert base64.b64decode(attachment["data"]) == b"ZPI|custom|x^y\rZNM|||(763)257-8511"


@pytest.mark.parametrize(
    "event", ["A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A13", "A28", "A31"]
)
def test_adt_events_are_accepted(event: str) -> None:
    message = parse_hl7v2(_message("DG1|1||J18.9^Pneumonia^I10", msh=MSH.replace("A04", event)))
    assert message.patient.mrn == "M-9"
    assert [entry.category for entry in message.entries] == [Category.CONDITION]


def test_a40_merge_becomes_a_merge_request_record() -> None:
    msh = MSH.replace("ADT^A04", "ADT^A40^ADT_A39")
    message = parse_hl7v2(_message("MRG|OLD-1^^^hospital-b^MR~OLD-2^^^hospital-b^MR", msh=msh))
    (merge,) = message.entries
    assert merge.category == Category.DOCUMENT
    assert (merge.code.system, merge.code.code) == (
        "http://terminology.hl7.org/CodeSystem/v2-0003",
        "A40",
    )
    body = json.loads(base64.b64decode(merge.resource["content"][0]["attachment"]["data"]))
    assert body == {"surviving_mrn": "M-9", "prior_mrns": ["OLD-1", "OLD-2"]}
    # The prior numbers also go to identity with the patient, which merges their persons.
    assert message.patient.prior_mrns == ("OLD-1", "OLD-2")
    assert message.patient.field_paths["prior_mrns"] == "content.MRG[0].1"


def test_only_an_a40_carries_prior_record_numbers() -> None:
    assert parse_hl7v2(_message("DG1|1||J18.9^Pneumonia^I10")).patient.prior_mrns == ()


def test_an_a40_naming_the_surviving_number_as_prior_is_refused() -> None:
    msh = MSH.replace("ADT^A04", "ADT^A40")
    assert _fields(_message("MRG|M-9^^^hospital-b^MR", msh=msh)) == ["content.MRG[0].1"]


def test_a40_without_mrg_is_refused() -> None:
    msh = MSH.replace("ADT^A04", "ADT^A40")
    assert _fields(_message(msh=msh)) == ["content.MRG"]


@pytest.mark.parametrize("message_type", ["ORM^O01", "OML^O21"])
def test_orders_are_registered_reports(message_type: str) -> None:
    msh = MSH.replace("ADT^A04", message_type)
    content = _message("ORC|NW|1", "OBR|1|1||003038^Urinalysis^L|||20060307110114", msh=msh)
    (order,) = parse_hl7v2(content).entries
    assert order.category == Category.DOCUMENT
    assert order.status == "registered"
    assert order.code.code == "003038"


def test_vxu_v04_vaccine_given_and_refused() -> None:
    msh = MSH.replace("ADT^A04", "VXU^V04")
    content = _message(
        "RXA|0|1|20260301||08^HepB pediatric^CVX|0.5|mL",
        "RXA|0|1|20260301||20^DTaP^CVX|||||||||||||||RE",
        msh=msh,
    )
    given, refused = parse_hl7v2(content).entries
    assert given.category == Category.MEDICATION
    assert (given.code.system, given.code.code) == ("http://hl7.org/fhir/sid/cvx", "08")
    assert given.effective_time == datetime(2026, 3, 1, tzinfo=UTC)
    assert refused.status == "not-taken"


def test_mdm_t02_is_one_document_with_its_text() -> None:
    msh = MSH.replace("ADT^A04", "MDM^T02")
    content = _message(
        "TXA|1|CN|TX|20260301101500",
        "OBX|1|TX|||Patient seen for follow-up.",
        "OBX|2|TX|||Plan: continue \\T\\ review.",
        msh=msh,
    )
    (document,) = parse_hl7v2(content).entries
    assert document.category == Category.DOCUMENT
    assert document.code.code == "CN"
    text = base64.b64decode(document.resource["content"][0]["attachment"]["data"]).decode()
    assert text == "Patient seen for follow-up.\nPlan: continue & review."


def test_segments_without_their_code() -> None:
    content = _message("AL1|1|DA||SV", "DG1|1||||20200101", "PR1|1||||20200101", "OBX|1|NM|||5")
    assert _fields(content) == [
        "content.AL1[0].3",
        "content.DG1[0].3",
        "content.PR1[0].3",
        "content.OBX[0].3",
    ]


def test_bad_allergy_severity() -> None:
    assert _fields(_message("AL1|1|DA|^Dust|XX")) == ["content.AL1[0].4"]


def test_numeric_observation_must_be_a_number() -> None:
    content = _message("OBX|1|NM|1558-6^Glucose^LN||high|mmol/L")
    assert _violations(content) == [("content.OBX[0].5", "must be a number for value type NM")]


def test_observation_value_needs_a_type() -> None:
    assert _fields(_message("OBX|1||1558-6^Glucose^LN||5.5")) == ["content.OBX[0].2"]


def test_every_problem_is_reported_at_once() -> None:
    pid = PID.replace("|F|", "|Q|")
    content = _message("AL1|1|DA||ZZ", "OBX|1|NM|x^y^LN||n/a", msh=MSH, pid=pid)
    assert _fields(content) == [
        "content.AL1[0].3",
        "content.AL1[0].4",
        "content.OBX[0].5",
    ]


# -- mapping --------------------------------------------------------------------------------


def test_synthetic_adt_a04_maps_a_text_only_allergy_and_a_diagnosis() -> None:
    content = _message("AL1|1|DA|^Sulfonamide|MO|Rash", "DG1|1||E11^Type 2 diabetes^I10||20200301")
    message = parse_hl7v2(content)
    patient = message.patient
    assert (patient.mrn, patient.national_id) == ("M-9", NATIONAL_ID)
    demographics = patient.demographics
    assert (demographics.family_name, demographics.given_name) == (FAMILY, "Juniper")
    assert (demographics.birth_date, demographics.sex, demographics.phone) == (
        "1990-12-01",
        "female",
        PHONE,
    )
    allergy, condition = message.entries
    assert allergy.category == Category.ALLERGY
    assert (allergy.code.system, allergy.code.code, allergy.code.display) == ("", "", "Sulfonamide")
    assert allergy.severity == "low"
    assert allergy.effective_time is None  # falls back to MSH-7 later
    assert message.message_time == datetime(2026, 11, 2, 1, 15, tzinfo=UTC)  # local +08:00
    assert allergy.resource["reaction"] == [
        {"manifestation": [{"text": "Rash"}], "severity": "moderate"}
    ]
    assert condition.code.system == "http://hl7.org/fhir/sid/icd-10"
    assert condition.effective_time == datetime(2020, 3, 1, tzinfo=UTC)
    assert condition.resource["subject"]["identifier"]["value"] == "M-9"


def test_the_address_in_pid_11_is_forwarded_largest_part_first() -> None:
    # Public samples (tests/fixtures/hl7_samples): XAD street ^ other ^ city ^ state ^ zip
    # ^ country ^ type ^ ^ county.
    patient = parse_hl7v2((HL7_SAMPLES / "python-hl7" / "samples_4.er7").read_bytes()).patient
    assert patient is not None
    assert patient.demographics.address == "NY BRONX 058 221 CANVIEW AVENUE 66-D"
    assert patient.field_paths["demographics.address"] == "content.PID[0].11"
    patient = parse_hl7v2((HL7_SAMPLES / "python-hl7" / "samples_2.er7").read_bytes()).patient
    assert patient is not None and patient.demographics.address == "RICHMOND"
    # None sent: nothing forwarded.
    patient = parse_hl7v2(_message()).patient
    assert patient is not None and patient.demographics.address == ""
    assert "demographics.address" not in patient.field_paths


def test_adt_a01_fixture() -> None:
    message = parse_hl7v2((MESSAGES / "hl7_adt_a01.er7").read_bytes())
    assert message.patient.national_id == "510107200102142082"
    assert message.patient.demographics.phone == "15855501357"
    categories = [entry.category for entry in message.entries]
    assert categories == [
        Category.ENCOUNTER,
        Category.ALLERGY,
        Category.ALLERGY,
        Category.CONDITION,
        Category.PROCEDURE,
        Category.OBSERVATION,
        Category.DOCUMENT,  # the Z-segment, kept
    ]
    encounter, penicillin, peanut, pneumonia, intubation, temperature, _ = message.entries
    assert encounter.code.code == "IMP"
    assert encounter.effective_time == datetime(2026, 3, 5, 6, 0, tzinfo=UTC)
    assert penicillin.severity == "high"  # AL1-4 SV
    assert penicillin.code.system == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert penicillin.resource["category"] == ["medication"]
    assert penicillin.resource["reaction"][0]["manifestation"] == [
        {"text": "Anaphylaxis"},
        {"text": "Hives"},
    ]
    assert penicillin.effective_time == datetime(2015, 6, 11, tzinfo=UTC)
    assert peanut.code.display == "Peanut & tree nuts"  # \T\ decoded
    assert peanut.resource["category"] == ["food"]
    assert pneumonia.code.code == "J18.9"
    assert intubation.status == "completed"
    assert intubation.effective_time == datetime(2026, 3, 5, 6, 20, tzinfo=UTC)
    assert temperature.resource["valueQuantity"] == {
        "value": 38.9,
        "unit": "degree Celsius",
        "system": "http://unitsofmeasure.org",
        "code": "Cel",
    }
    assert temperature.resource["interpretation"][0]["coding"][0]["code"] == "H"
    assert temperature.effective_time == datetime(2026, 3, 5, 6, 10, tzinfo=UTC)


def test_oru_r01_fixture() -> None:
    message = parse_hl7v2((MESSAGES / "hl7_oru_r01.er7").read_bytes())
    report, hemoglobin, leukocytes, comment, color = message.entries
    assert report.category == Category.DOCUMENT
    assert report.status == "final"
    assert hemoglobin.category == Category.OBSERVATION
    assert hemoglobin.code.code == "718-7"
    assert hemoglobin.resource["valueQuantity"]["value"] == 13.2
    assert hemoglobin.effective_time == datetime(2026, 3, 6, 0, 0, tzinfo=UTC)  # OBX-14
    assert leukocytes.effective_time == datetime(2026, 3, 5, 23, 30, tzinfo=UTC)  # OBR-7
    assert comment.resource["valueString"] == (
        "Sample slightly hemolyzed\nRepeat if K^Na abnormal \\ flagged"
    )
    assert color.resource["valueCodeableConcept"]["coding"][0]["code"] == "YEL"
    assert message.message_time == datetime(2026, 3, 6, 1, 15, tzinfo=UTC)  # explicit +0800


def test_custom_delimiters_fixture() -> None:
    message = parse_hl7v2((MESSAGES / "hl7_adt_a08_custom_delimiters.er7").read_bytes())
    assert message.patient.mrn == "H2-77032"
    assert message.patient.national_id == ""
    (condition,) = message.entries
    assert condition.code.display == "Obesity@unspecified"  # !S! is the component character


def test_pv1_is_an_encounter_only_on_admission_and_registration() -> None:
    pv1 = "PV1|1|E" + "|" * 42 + "20261102080000"
    assert [e.category for e in parse_hl7v2(_message(pv1)).entries] == [Category.ENCOUNTER]
    update = _message(pv1, msh=MSH.replace("ADT^A04", "ADT^A08"))
    assert parse_hl7v2(update).entries == ()


def test_unknown_coding_system_keeps_its_name() -> None:
    assert coding_system_uri("LN") == "http://loinc.org"
    assert coding_system_uri("99LOCAL") == "urn:hl7-v2:coding-system:99LOCAL"
