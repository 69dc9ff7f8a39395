"""DICOM Part 10 files: the patient and study metadata into an ImagingStudy record.

Identity convention (DICOM has no standard attribute for a national ID):

- ``PatientID`` (0010,0020) is the hospital record number (MRN); required.
- The national ID is the ``PatientID`` of an item of ``OtherPatientIDsSequence``
  (0010,1002) whose ``IssuerOfPatientID`` (0010,0021) is :data:`NATIONAL_ID_ISSUER`
  ("CN-NATIONAL-ID"). It is optional (the hospital's PatientID is enough). The retired
  ``OtherPatientIDs`` (0010,1000) is not read, because it does not say whose number it is.
- ``PatientName``, ``PatientBirthDate``, ``PatientSex`` and ``PatientTelephoneNumbers``
  give the demographics.

The record is a FHIR ImagingStudy (category IMAGING, code = ``Modality`` in the DICOM DCM
system, effective time = ``StudyDate``/``StudyTime``, in ``TimezoneOffsetFromUTC`` or else
hospital local time) with the study, series and instance UIDs, ``StudyDescription`` and
``BodyPartExamined``. The whole file, pixel data included, goes to the archive blob store
(sealed); the message carries it as :attr:`ParsedMessage.imaging`. Uncompressed pixel data
shorter than the image attributes promise (a truncated file) is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from io import BytesIO
from types import MappingProxyType
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from services.ingest.fhir import entry_from_resource
from services.ingest.model import (
    Demographics,
    ImagingContent,
    InvalidMessage,
    ParsedMessage,
    PatientIdentity,
    Problems,
    compact_timestamp_as_fhir,
    mr_reference,
)

REASON = "INVALID_DICOM"
NATIONAL_ID_ISSUER = "CN-NATIONAL-ID"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_CONTENT_TYPE = "application/dicom"

# Display names of common modalities (DICOM PS3.16 CID 29).
MODALITY_DISPLAY: Mapping[str, str] = MappingProxyType(
    {
        "CR": "Computed Radiography",
        "CT": "Computed Tomography",
        "DX": "Digital Radiography",
        "MG": "Mammography",
        "MR": "Magnetic Resonance",
        "NM": "Nuclear Medicine",
        "PT": "Positron emission tomography",
        "US": "Ultrasound",
        "XA": "X-Ray Angiography",
        "OT": "Other",
    }
)
_SEXES: Mapping[str, str] = MappingProxyType({"M": "male", "F": "female", "O": "other"})
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_OFFSET = re.compile(r"^[+-]\d{4}$")
_DATE = re.compile(r"^\d{8}$")


def parse_dicom(content: bytes) -> ParsedMessage:
    """Parse and validate a DICOM Part 10 file; raises InvalidMessage listing every problem."""
    try:
        dataset = pydicom.dcmread(BytesIO(content))
    except Exception:
        # pydicom raises many types on malformed input; none of their texts may be echoed.
        raise InvalidMessage(
            REASON, [("content", "must be a DICOM Part 10 file (preamble and DICM prefix)")]
        ) from None
    problems = Problems(REASON)
    text = _Reader(dataset, problems)
    paths: dict[str, str] = {"identifiers": "content.PatientID"}
    mrn = text("PatientID")
    if mrn:
        paths["mrn"] = "content.PatientID"
    else:
        problems.add("content.PatientID", "is required (the hospital record number)")
    national_id = _national_id(dataset, problems, paths)
    demographics = _demographics(text, problems, paths)

    study_uid = text("StudyInstanceUID")
    if not study_uid:
        problems.add("content.StudyInstanceUID", "is required")
    elif not _UID.match(study_uid) or len(study_uid) > 64:
        problems.add("content.StudyInstanceUID", "must be a DICOM UID (digits and dots)")
    modality = text("Modality").upper()
    if not modality:
        problems.add("content.Modality", "is required")
    _check_pixel_data(dataset, problems)
    started = _study_time(text, problems)
    resource = _imaging_study(text, study_uid, modality, started, mrn)
    entry = entry_from_resource(resource, "content", problems) if modality else None
    problems.raise_if_any()
    assert entry is not None
    return ParsedMessage(
        PatientIdentity(mrn, national_id, demographics, paths),
        (entry,),
        imaging=ImagingContent(DICOM_CONTENT_TYPE, content),
    )


class _Reader:
    """Reads attributes as stripped text; a value pydicom cannot decode is a problem."""

    def __init__(self, dataset: Dataset, problems: Problems, prefix: str = "content") -> None:
        self._dataset = dataset
        self._problems = problems
        self._prefix = prefix

    def __call__(self, keyword: str) -> str:
        try:
            value = self._dataset.get(keyword)
        except Exception:
            self._problems.add(f"{self._prefix}.{keyword}", "could not be decoded")
            return ""
        if value is None:
            return ""
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0] if len(value) else ""
        return str(value).strip()

    def element(self, keyword: str) -> Any:
        """The raw value of ``keyword`` (None when absent or undecodable)."""
        try:
            return self._dataset.get(keyword)
        except Exception:
            self._problems.add(f"{self._prefix}.{keyword}", "could not be decoded")
            return None


def _check_pixel_data(dataset: Dataset, problems: Problems) -> None:
    """Refuse a file cut short: the archive must not keep an image that cannot be shown.

    pydicom reads a truncated file without complaint, so the length of uncompressed pixel
    data is checked against what Rows, Columns, SamplesPerPixel, BitsAllocated and
    NumberOfFrames promise. Compressed (encapsulated) pixel data has no such length.
    """
    try:
        if "PixelData" not in dataset:
            return
        transfer_syntax = dataset.file_meta.get("TransferSyntaxUID")
        if transfer_syntax is None or transfer_syntax.is_compressed:
            return
        frames = int(dataset.get("NumberOfFrames") or 1)
        bits = (
            int(dataset.Rows)
            * int(dataset.Columns)
            * int(dataset.get("SamplesPerPixel") or 1)
            * int(dataset.BitsAllocated)
            * frames
        )
        complete = len(dataset.PixelData) >= (bits + 7) // 8
    except Exception:
        problems.add("content.PixelData", "could not be checked against the image attributes")
        return
    if not complete:
        problems.add("content.PixelData", "is shorter than the image attributes say: truncated")


def _national_id(dataset: Dataset, problems: Problems, paths: dict[str, str]) -> str:
    reader = _Reader(dataset, problems)
    items = reader.element("OtherPatientIDsSequence") or []
    for index, item in enumerate(items):
        where = f"content.OtherPatientIDsSequence[{index}]"
        item_text = _Reader(item, problems, where)
        if item_text("IssuerOfPatientID") != NATIONAL_ID_ISSUER:
            continue
        try:
            national_id = validate_national_id(item_text("PatientID"))
        except InvalidNationalId as exc:
            problems.add(f"{where}.PatientID", f"invalid national ID: {exc.reason}")
            return ""
        paths["national_id"] = f"{where}.PatientID"
        return national_id
    # Optional: the hospital's PatientID is enough to find or create the person.
    return ""


def _demographics(
    text: Callable[[str], str], problems: Problems, paths: dict[str, str]
) -> Demographics:
    family = given = birth_date = sex = ""
    name = text("PatientName")
    if name:
        parts = name.split("=")[0].split("^")  # alphabetic group: family^given^middle^...
        family = parts[0].strip()
        given = " ".join(part.strip() for part in parts[1:3] if part.strip())
        paths["demographics.family_name"] = paths["demographics.given_name"] = "content.PatientName"
    born = text("PatientBirthDate")
    if born:
        if not _DATE.match(born):
            problems.add("content.PatientBirthDate", "must be a DICOM date YYYYMMDD")
        else:
            try:
                birth_date = compact_timestamp_as_fhir(born)
                paths["demographics.birth_date"] = "content.PatientBirthDate"
            except ValueError as exc:
                problems.add("content.PatientBirthDate", str(exc))
    sex_code = text("PatientSex").upper()
    if sex_code:
        if sex_code in _SEXES:
            sex = _SEXES[sex_code]
            paths["demographics.sex"] = "content.PatientSex"
        else:
            problems.add("content.PatientSex", "must be M, F or O")
    phone = text("PatientTelephoneNumbers")
    if phone:
        paths["demographics.phone"] = "content.PatientTelephoneNumbers"
    return Demographics(family, given, birth_date, sex, phone)


def _study_time(text: Callable[[str], str], problems: Problems) -> str:
    """StudyDate + StudyTime (+ TimezoneOffsetFromUTC) as a FHIR dateTime; empty if absent."""
    for date_keyword, time_keyword in (
        ("StudyDate", "StudyTime"),
        ("SeriesDate", "SeriesTime"),
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        day = text(date_keyword)
        if not day:
            continue
        clock = text(time_keyword).replace(":", "")
        offset = text("TimezoneOffsetFromUTC")
        if offset and not _OFFSET.match(offset):
            problems.add("content.TimezoneOffsetFromUTC", "must be +HHMM or -HHMM")
            offset = ""
        where = f"content.{date_keyword}" if not clock else f"content.{time_keyword}"
        try:
            return compact_timestamp_as_fhir(day + clock + (offset if clock else ""))
        except ValueError:
            problems.add(where, "must be a DICOM date YYYYMMDD and time HHMMSS[.FFFFFF]")
            return ""
    return ""


def _imaging_study(
    text: Callable[[str], str], study_uid: str, modality: str, started: str, mrn: str
) -> dict[str, Any]:
    modality_coding = {"system": DCM_SYSTEM, "code": modality}
    if modality in MODALITY_DISPLAY:
        modality_coding["display"] = MODALITY_DISPLAY[modality]
    series: dict[str, Any] = {"uid": text("SeriesInstanceUID"), "modality": modality_coding}
    number = text("SeriesNumber")
    if number.isdigit():
        series["number"] = int(number)
    body_part = text("BodyPartExamined")
    if body_part:
        series["bodySite"] = {"display": body_part}
    sop_instance, sop_class = text("SOPInstanceUID"), text("SOPClassUID")
    if sop_instance:
        instance: dict[str, Any] = {"uid": sop_instance}
        if sop_class:
            instance["sopClass"] = {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}
        series["instance"] = [instance]
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "subject": mr_reference(mrn),
        "modality": [modality_coding],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "series": [series],
    }
    accession = text("AccessionNumber")
    if accession:
        resource["identifier"].append(
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "value": accession,
            }
        )
    if started:
        resource["started"] = started
    description = text("StudyDescription")
    if description:
        resource["description"] = description
    return resource
