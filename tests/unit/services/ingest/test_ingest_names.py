"""A patient's name sent whole (FHIR HumanName.text, a Chinese name in HL7 PID-5.1 or in
DICOM's PatientName) reaches identity as family and given name, so matching can compare
given names: what tells twins apart."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_ingest_dicom import _bytes, _ct
from test_ingest_fhir import _bundle, _patient
from test_ingest_hl7v2 import MSH, NATIONAL_ID, _message

from services.ingest.dicom import parse_dicom
from services.ingest.fhir import parse_fhir
from services.ingest.hl7v2 import parse_hl7v2
from services.ingest.model import full_name_parts, one_field_name


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("张伟", ("张", "伟")),
        ("张三", ("张", "三")),  # a public FHIR example's whole Patient.name
        ("欧阳娜娜", ("欧阳", "娜娜")),  # a two-character family name
        ("司馬相如", ("司馬", "相如")),  # traditional characters
        ("欧阳", ("欧阳", "")),
        ("山田 太郎", ("山田", "太郎")),  # JP Core's example: family first, with a space
        ("约翰·史密斯", ("史密斯", "约翰")),  # transliterated: given, dot, family
        ("ジョン・スミス", ("スミス", "ジョン")),  # in katakana, with its middle dot
        ("ヤマダ タロウ", ("ヤマダ", "タロウ")),  # JP Core's kana form: family first
        ("ヤマダタロウ", ("ヤマダタロウ", "")),  # kana together: no guess
        ("김민수", ("김", "민수")),
        ("남궁민", ("남궁", "민")),  # a two-syllable Korean family name
        ("阿依古丽・买买提", ("买买提", "阿依古丽")),
        ("Liora Quarnby", ("Quarnby", "Liora")),
        ("Mary Anne  Smith", ("Smith", "Mary Anne")),
        ("SMITH, John", ("SMITH", "John")),
        ("王，小东", ("王", "小东")),  # a full-width comma
        ("Cher", ("Cher", "")),
        (" 张\n伟 ", ("张", "伟")),
    ],
)
def test_a_whole_name_is_split_into_family_and_given(text: str, parts: tuple[str, str]) -> None:
    assert full_name_parts(text) == parts


def test_only_a_chinese_name_in_the_family_field_alone_is_split() -> None:
    assert one_field_name("王小东", "") == ("王", "小东")
    assert one_field_name("김민수", "") == ("김", "민수")
    assert one_field_name("Smith", "") == ("Smith", "")  # a family name alone
    assert one_field_name("王", "小东") == ("王", "小东")
    assert one_field_name("", "") == ("", "")


def _fhir_names(names: list[dict[str, Any]]) -> tuple[str, str, dict[str, str]]:
    patient = _patient()
    patient["name"] = names
    parsed = parse_fhir(json.dumps(_bundle() | {"entry": [{"resource": patient}]}).encode())
    assert parsed.patient is not None
    demographics = parsed.patient.demographics
    paths = {key: value for key, value in parsed.patient.field_paths.items() if "_name" in key}
    return demographics.family_name, demographics.given_name, paths


def test_a_fhir_name_given_only_as_text_is_split() -> None:
    # As the WHO DDCC and other public FHIR examples send it: name[].text alone.
    assert _fhir_names([{"text": "张三"}]) == (
        "张",
        "三",
        {
            "demographics.family_name": "content.entry[0].resource.name[0].text",
            "demographics.given_name": "content.entry[0].resource.name[0].text",
        },
    )
    # The official name is chosen, then its text is used because it has no parts.
    assert _fhir_names([{"use": "usual", "text": "Nana"}, {"use": "official", "text": "欧阳娜娜"}])[
        :2
    ] == ("欧阳", "娜娜")
    # JP Core sends the parts beside the text: the parts win.
    family, given, _ = _fhir_names([{"text": "山田 太郎", "family": "山田", "given": ["太郎"]}])
    assert (family, given) == ("山田", "太郎")
    assert _fhir_names([{"text": "  "}]) == ("", "", {})


def test_an_hl7_chinese_name_sent_whole_in_pid_5_1_is_split() -> None:
    pid = f"PID|1||M-9^^^hospital-b^MR~{NATIONAL_ID}^^^CHN^NNCHN||欧阳娜娜||19901201|F"
    patient = parse_hl7v2(_message(msh=MSH, pid=pid)).patient
    assert patient is not None
    assert (patient.demographics.family_name, patient.demographics.given_name) == ("欧阳", "娜娜")
    assert patient.field_paths["demographics.given_name"] == "content.PID[0].5.1"
    # A Latin family name alone stays a family name.
    pid = f"PID|1||M-9^^^hospital-b^MR~{NATIONAL_ID}^^^CHN^NNCHN||Abernathy||19901201|F"
    patient = parse_hl7v2(_message(msh=MSH, pid=pid)).patient
    assert patient is not None
    assert (patient.demographics.family_name, patient.demographics.given_name) == (
        "Abernathy",
        "",
    )
    assert "demographics.given_name" not in patient.field_paths


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("Wang^XiaoDong=王^小東=", ("Wang", "XiaoDong")),  # PS3.5's example: alphabetic first
        ("=王^小東=", ("王", "小東")),  # the ideographic group when it is the only one
        ("王小东", ("王", "小东")),  # a Chinese name written whole
    ],
)
def test_a_dicom_patient_name_gives_family_and_given(name: str, parts: tuple[str, str]) -> None:
    content = _bytes(_ct(SpecificCharacterSet="ISO_IR 192", PatientName=name))
    patient = parse_dicom(content).patient
    assert patient is not None
    assert (patient.demographics.family_name, patient.demographics.given_name) == parts


def test_the_name_compared_is_the_official_one_then_the_one_in_use_never_a_former_one() -> None:
    old = {"use": "old", "family": "Windsor", "given": ["Peter"]}
    maiden = {"use": "maiden", "family": "Marsh", "given": ["Anne"]}
    usual = {"use": "usual", "family": "Chalmers", "given": ["Jim"]}
    official = {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}
    assert _fhir_names([old, usual, official])[:2] == ("Chalmers", "Peter James")
    assert _fhir_names([maiden, old, usual])[:2] == ("Chalmers", "Jim")
    family, given, paths = _fhir_names([old, {"family": "Brandt", "given": ["Ines"]}])
    assert (family, given) == ("Brandt", "Ines")
    assert paths["demographics.family_name"] == "content.entry[0].resource.name[1].family"
    assert _fhir_names([maiden])[:2] == ("Marsh", "Anne")  # the only name there is


def test_of_hl7_names_the_legal_one_is_compared() -> None:
    def names(pid_5: str) -> tuple[str, str, str]:
        pid = f"PID|1||M-9^^^hospital-b^MR~{NATIONAL_ID}^^^CHN^NNCHN||{pid_5}||19901201|F"
        patient = parse_hl7v2(_message(msh=MSH, pid=pid)).patient
        assert patient is not None
        demographics = patient.demographics
        return (
            demographics.family_name,
            demographics.given_name,
            patient.field_paths["demographics.family_name"],
        )

    assert names("Marsh^Anne^^^^^M~Chalmers^Anne^^^^^L") == (
        "Chalmers",
        "Anne",
        "content.PID[0].5[1].1",
    )
    assert names("ZHANG^WEI^^^^^A~张伟^^^^^^L")[:2] == ("张", "伟")
    assert names("Abernathy^Juniper~Juniper^J^^^^^N") == (
        "Abernathy",
        "Juniper",
        "content.PID[0].5.1",
    )
