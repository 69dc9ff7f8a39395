"""The DICOM parser: identity convention, ImagingStudy mapping, rejections."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from unit_support import rejection

from healthbank.contracts.natid import make_national_id
from services.ingest.dicom import (
    DCM_SYSTEM,
    NATIONAL_ID_ISSUER,
    UNIDENTIFIED_MRN_PREFIX,
    parse_dicom,
    study_key,
    unidentified_patient_mrn,
)
from services.ingest.model import Category

NATIONAL_ID = make_national_id("420106", date(1958, 3, 9), 13)
FAMILY = "Harrowgate"


def _ct(**changes: object) -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    dataset = pydicom.dcmread(str(path))
    dataset.PatientName = f"{FAMILY}^Wilhelmina"
    dataset.PatientID = "IMG-5501"
    dataset.PatientBirthDate = "19580309"
    dataset.PatientSex = "F"
    national = Dataset()
    national.PatientID = NATIONAL_ID
    national.IssuerOfPatientID = NATIONAL_ID_ISSUER
    dataset.OtherPatientIDsSequence = [national]
    dataset.StudyDate = "20261102"
    dataset.StudyTime = "091500"
    dataset.StudyDescription = "CT chest"
    dataset.BodyPartExamined = "CHEST"
    if "TimezoneOffsetFromUTC" in dataset:
        del dataset.TimezoneOffsetFromUTC
    for keyword, value in changes.items():
        if value is None:
            if keyword in dataset:
                delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


def _bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _violations(content: bytes) -> list[tuple[str, str]]:
    return rejection(parse_dicom, content, "INVALID_DICOM", (NATIONAL_ID, FAMILY))


def test_the_patients_address_is_forwarded_for_matching() -> None:
    patient = parse_dicom(_bytes(_ct(PatientAddress="236 Zulauf Fork Bedford MA"))).patient
    assert patient is not None
    assert patient.demographics.address == "236 Zulauf Fork Bedford MA"
    assert patient.field_paths["demographics.address"] == "content.PatientAddress"
    unaddressed = parse_dicom(_bytes(_ct(PatientAddress=None))).patient
    assert unaddressed is not None and unaddressed.demographics.address == ""


def test_ct_becomes_an_imaging_study_with_the_file_as_blob() -> None:
    content = _bytes(_ct())
    message = parse_dicom(content)
    patient = message.patient
    assert (patient.mrn, patient.national_id) == ("IMG-5501", NATIONAL_ID)
    demographics = patient.demographics
    assert (demographics.family_name, demographics.given_name) == (FAMILY, "Wilhelmina")
    assert (demographics.birth_date, demographics.sex) == ("1958-03-09", "female")
    (study,) = message.entries
    assert study.category == Category.IMAGING
    assert (study.code.system, study.code.code) == (DCM_SYSTEM, "CT")
    assert study.code.display == "Computed Tomography"
    # No TimezoneOffsetFromUTC: hospital local time (+08:00).
    assert study.effective_time == datetime(2026, 11, 2, 1, 15, tzinfo=UTC)
    resource = study.resource
    assert resource["resourceType"] == "ImagingStudy"
    assert resource["description"] == "CT chest"
    assert resource["identifier"][0]["value"].startswith("urn:oid:1.3.6.1.4.1.5962")
    assert resource["series"][0]["bodySite"] == {"display": "CHEST"}
    assert resource["series"][0]["instance"][0]["sopClass"]["code"] == (
        "urn:oid:1.2.840.10008.5.1.4.1.1.2"
    )
    assert message.imaging is not None
    assert message.imaging.content_type == "application/dicom"
    assert message.imaging.data == content  # the whole file, pixel data included


def test_timezone_offset_is_honoured() -> None:
    message = parse_dicom(_bytes(_ct(TimezoneOffsetFromUTC="-0500")))
    assert message.entries[0].effective_time == datetime(2026, 11, 2, 14, 15, tzinfo=UTC)


def test_study_without_date_has_no_time_of_its_own() -> None:
    dataset = _ct(StudyDate=None, StudyTime=None, SeriesDate=None, AcquisitionDate=None)
    dataset.ContentDate = None
    del dataset.ContentDate
    message = parse_dicom(_bytes(dataset))
    assert message.entries[0].effective_time is None


def test_not_dicom() -> None:
    assert _violations(b"MSH|^~\\&|") == [
        ("content", "must be a DICOM Part 10 file (preamble and DICM prefix)")
    ]


TRUNCATED = ("content", "is truncated: an element claims more bytes than the file holds")


def test_file_cut_in_the_header_is_rejected() -> None:
    content = _bytes(_ct())
    assert content[:400].endswith(b"20040119")  # StudyDate, the last whole element kept
    for cut in (401, 404, 409):  # inside the next element's tag, its length, its value
        assert _violations(content[:cut]) == [TRUNCATED]


def test_a_file_cut_between_two_elements_reads_as_a_shorter_file() -> None:
    # Part 10 marks no end of the dataset: a cut exactly after an element leaves a complete
    # file with fewer attributes, which pydicom reads completely too. Without PatientID it
    # is filed like any anonymised file, under its study's unidentified patient.
    message = parse_dicom(_bytes(_ct())[:400])
    assert message.patient is not None and message.patient.unidentified


def test_file_cut_in_the_pixel_data_is_rejected() -> None:
    content = _bytes(_ct())
    assert _violations(content[:-5000]) == [TRUNCATED]


@pytest.mark.parametrize("cut", [1, 100, 1000, 2000])
def test_a_file_cut_anywhere_is_rejected(cut: int) -> None:
    # pydicom reads these without complaint: an RT plan missing its last elements.
    content = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    assert _violations(content[:-cut]) == [TRUNCATED]


def test_a_length_claim_beyond_the_data_is_rejected() -> None:
    content = bytearray(_bytes(_ct()))
    header = content.rindex(b"\xe0\x7f\x10\x00OW\x00\x00")  # (7FE0,0010) OW
    content[header + 8 : header + 12] = (0xFFFFFFF0).to_bytes(4, "little")  # 4 GB
    assert _violations(bytes(content)) == [TRUNCATED]


def test_pixel_data_shorter_than_the_image_is_rejected() -> None:
    dataset = _ct()
    dataset.PixelData = dataset.PixelData[:-4096]  # consistent lengths, too few pixels
    assert _violations(_bytes(dataset)) == [
        ("content.PixelData", "is shorter than the image attributes say: truncated")
    ]


def test_ybr_full_422_frame_size_counts_the_subsampling() -> None:
    content = Path(get_testdata_file("SC_ybr_full_422_uncompressed.dcm")).read_bytes()
    (entry,) = parse_dicom(content).entries
    assert entry.category == Category.IMAGING


def test_dicomdir_has_its_own_reason() -> None:
    content = Path(get_testdata_file("DICOMDIR")).read_bytes()
    violations = rejection(parse_dicom, content, "DICOMDIR_NOT_AN_INSTANCE", ())
    assert violations == [
        ("content", "is a DICOMDIR (a media directory): send the instances it lists")
    ]


def test_a_file_without_a_national_id_is_accepted_by_its_mrn() -> None:
    message = parse_dicom(_bytes(_ct(OtherPatientIDsSequence=None)))
    assert (message.patient.mrn, message.patient.national_id) == ("IMG-5501", "")


def test_other_issuer_is_not_a_national_id() -> None:
    dataset = _ct()
    dataset.OtherPatientIDsSequence[0].IssuerOfPatientID = "HOSPITAL-X"
    message = parse_dicom(_bytes(dataset))
    assert (message.patient.mrn, message.patient.national_id) == ("IMG-5501", "")


def test_invalid_national_id_check_digit() -> None:
    dataset = _ct()
    wrong = NATIONAL_ID[:-1] + ("0" if NATIONAL_ID[-1] != "0" else "1")
    dataset.OtherPatientIDsSequence[0].PatientID = wrong
    assert _violations(_bytes(dataset)) == [
        (
            "content.OtherPatientIDsSequence[0].PatientID",
            "invalid national ID: check digit mismatch",
        )
    ]


def _anonymised(**changes: object) -> Dataset:
    return _ct(PatientID=None, OtherPatientIDsSequence=None, **changes)


def test_a_file_without_patient_id_is_an_unidentified_patient_of_its_study() -> None:
    first = parse_dicom(_bytes(_anonymised()))
    patient = first.patient
    assert patient is not None and patient.unidentified
    assert patient.mrn.startswith(UNIDENTIFIED_MRN_PREFIX) and len(patient.mrn) <= 64
    assert "mrn" not in patient.field_paths  # nothing in the file to point a rejection at
    study_uid = str(_ct().StudyInstanceUID)
    assert patient.mrn == unidentified_patient_mrn(study_uid)
    # Another image of the same study: the same placeholder; another study: another one.
    same_study = parse_dicom(_bytes(_anonymised(SOPInstanceUID="1.2.826.0.1.3680043.2.1")))
    assert same_study.patient is not None and same_study.patient.mrn == patient.mrn
    other_study = parse_dicom(_bytes(_anonymised(StudyInstanceUID="1.2.826.0.1.3680043.9.9")))
    assert other_study.patient is not None and other_study.patient.mrn != patient.mrn
    # The stored record says so too: its subject is a temporary identifier.
    subject = first.entries[0].resource["subject"]["identifier"]
    assert (subject["value"], subject["use"]) == (patient.mrn, "temp")
    assert "use" not in first.entries[0].resource["identifier"][0]  # the study UID was sent


def test_a_file_with_patient_id_is_identified() -> None:
    message = parse_dicom(_bytes(_ct(OtherPatientIDsSequence=None)))
    patient = message.patient
    assert patient is not None and not patient.unidentified and patient.mrn == "IMG-5501"
    assert message.entries[0].resource["subject"]["identifier"]["value"] == "IMG-5501"
    assert "use" not in message.entries[0].resource["subject"]["identifier"]


def test_a_patient_id_looking_like_a_placeholder_is_refused() -> None:
    placeholder = unidentified_patient_mrn(str(_ct().StudyInstanceUID))
    assert _violations(_bytes(_ct(PatientID=placeholder))) == [
        ("content.PatientID", f"must not start with {UNIDENTIFIED_MRN_PREFIX}")
    ]


def test_a_national_id_without_patient_id_identifies_the_patient() -> None:
    patient = parse_dicom(_bytes(_ct(PatientID=None))).patient
    assert patient is not None and not patient.unidentified
    assert patient.national_id == NATIONAL_ID
    assert patient.mrn.startswith(UNIDENTIFIED_MRN_PREFIX)  # identity still needs a number


def test_the_study_stand_in_is_the_instance_uid_else_the_content_hash() -> None:
    instance_uid = str(_ct().SOPInstanceUID)
    without_study = _bytes(_anonymised(StudyInstanceUID=None))
    message = parse_dicom(without_study)
    assert message.entries[0].resource["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{instance_uid}",
        "use": "temp",  # a stand-in, not the study's own UID
    }
    assert message.patient is not None
    assert message.patient.mrn == unidentified_patient_mrn(instance_uid)

    neither = _bytes(_anonymised(StudyInstanceUID=None, SOPInstanceUID=None))
    stand_in = study_key("", "", neither)
    assert stand_in.startswith("2.25.") and len(stand_in) <= 64
    assert stand_in == study_key("", "", neither)  # a retry agrees
    assert stand_in != study_key("", "", neither + b"\0\0")
    message = parse_dicom(neither)
    assert message.entries[0].resource["identifier"][0]["value"] == f"urn:oid:{stand_in}"
    assert message.patient is not None
    assert message.patient.mrn == unidentified_patient_mrn(stand_in)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_study_uid_that_is_not_a_uid_is_still_refused() -> None:
    assert _violations(_bytes(_ct(StudyInstanceUID="study-1"))) == [
        ("content.StudyInstanceUID", "must be a DICOM UID (digits and dots)")
    ]


def test_a_file_without_modality_is_other() -> None:
    (study,) = parse_dicom(_bytes(_ct(Modality=None))).entries
    assert (study.code.system, study.code.code, study.code.display) == (DCM_SYSTEM, "OT", "Other")


@pytest.mark.parametrize("missing", ["Rows", "Columns", "BitsAllocated"])
def test_pixel_data_that_cannot_be_sized_is_kept_opaque(missing: str) -> None:
    dataset = _ct(**{missing: None})
    dataset.PixelData = dataset.PixelData[:-4096]  # nothing says how long it should be
    content = _bytes(dataset)
    message = parse_dicom(content)
    assert message.imaging is not None and message.imaging.data == content


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_a_frame_count_that_is_not_a_number_keeps_the_pixel_data_opaque() -> None:
    content = _bytes(_ct(NumberOfFrames="11"))
    number_of_frames = b"\x28\x00\x08\x00IS\x02\x0011"  # (0028,0008) IS, explicit VR LE
    assert content.count(number_of_frames) == 1
    content = content.replace(number_of_frames, number_of_frames[:-1] + b"A")  # badVR's "1A"
    message = parse_dicom(content)
    assert message.imaging is not None and message.imaging.data == content


def test_opaque_pixel_data_is_still_bounded_by_the_file() -> None:
    content = bytearray(_bytes(_ct(Rows=None)))
    header = content.rindex(b"\xe0\x7f\x10\x00OW\x00\x00")  # (7FE0,0010) OW
    content[header + 8 : header + 12] = (0xFFFFFFF0).to_bytes(4, "little")  # 4 GB
    assert _violations(bytes(content)) == [TRUNCATED]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_bad_dates_and_sex() -> None:
    dataset = _ct(PatientBirthDate="19581309", StudyDate="20261340", PatientSex="X")
    assert [field for field, _ in _violations(_bytes(dataset))] == [
        "content.PatientBirthDate",
        "content.PatientSex",
        "content.StudyTime",
    ]
