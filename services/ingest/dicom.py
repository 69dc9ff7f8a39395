"""DICOM Part 10 files: the patient and study metadata into an ImagingStudy record.

Identity convention (DICOM has no standard attribute for a national ID):

- ``PatientID`` (0010,0020) is the hospital record number (MRN). A file without one
  (an anonymised study, a PACS export of an unknown patient) is filed under an
  *unidentified* patient of the submitting hospital, as an emergency department registers
  an unknown patient: the record number becomes :func:`unidentified_patient_mrn` of the
  study, so a retry and every image of one study land on one placeholder person, and two
  studies never share one. Such a number starts with :data:`UNIDENTIFIED_MRN_PREFIX`,
  which no hospital record number uses.
- The national ID is the ``PatientID`` of an item of ``OtherPatientIDsSequence``
  (0010,1002) whose ``IssuerOfPatientID`` (0010,0021) is :data:`NATIONAL_ID_ISSUER`
  ("CN-NATIONAL-ID"). It is optional: without it the identity service resolves the
  patient by record number. The retired ``OtherPatientIDs`` (0010,1000) is not read,
  because it does not say whose number it is.
- ``PatientName``, ``PatientBirthDate``, ``PatientSex`` and ``PatientTelephoneNumbers``
  give the demographics.

The record is a FHIR ImagingStudy (category IMAGING, code = ``Modality`` in the DICOM DCM
system, effective time = ``StudyDate``/``StudyTime``, in ``TimezoneOffsetFromUTC`` or else
hospital local time) with the study, series and instance UIDs, ``StudyDescription`` and
``BodyPartExamined``. A file without ``StudyInstanceUID`` is filed under a stand-in study
UID (:func:`study_key`: its ``SOPInstanceUID``, else a UID derived from the content hash);
one without ``Modality`` under ``OT``, DICOM's "other"; a stand-in study identifier and a
placeholder subject have FHIR identifier use ``temp``. The whole file, pixel data
included, goes to the archive blob store (sealed); the message carries it as
:attr:`ParsedMessage.imaging`.

Validation reads the whole file: pydicom parses it and decodes every value, and the
encoded stream is walked once more (:func:`check_complete`) so that a file cut short
anywhere, or an element claiming more bytes than the file holds (a pixel-data length of
4 GB in a small file), is refused: pydicom itself reads such files silently. Uncompressed
pixel data must be as long as the image attributes promise, by pydicom's arithmetic for
every photometric interpretation and subsampling (encapsulated pixel data has no such
length); when the attributes that size it are missing or not numbers, it is kept as opaque
bytes, bounded only by the file like every other element. A DICOMDIR is refused with its
own reason, ``DICOMDIR_NOT_AN_INSTANCE``.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Callable, Mapping
from io import BytesIO
from types import MappingProxyType
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length

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
    one_field_name,
)

REASON = "INVALID_DICOM"
DICOMDIR_REASON = "DICOMDIR_NOT_AN_INSTANCE"
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
NATIONAL_ID_ISSUER = "CN-NATIONAL-ID"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_CONTENT_TYPE = "application/dicom"
UNIDENTIFIED_MRN_PREFIX = "~UNIDENTIFIED-DICOM-"
"""Starts every placeholder record number, and no PatientID (hospital MRNs do not start with
``~``; a file whose PatientID does is refused, so a placeholder is never a real number)."""
OTHER_MODALITY = "OT"  # DICOM's "other", for a file that names no modality
# DICOM's root for UIDs made from a 128-bit number (PS3.5 B.2): a UID for the content hash.
_DERIVED_UID_ROOT = "2.25."

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
    _check_whole(content, dataset)
    problems = Problems(REASON)
    text = _Reader(dataset, problems)
    paths: dict[str, str] = {"identifiers": "content.PatientID"}
    national_id = _national_id(dataset, problems, paths)
    demographics = _demographics(text, problems, paths)

    sent_study_uid = text("StudyInstanceUID")
    if sent_study_uid and (not _UID.match(sent_study_uid) or len(sent_study_uid) > 64):
        problems.add("content.StudyInstanceUID", "must be a DICOM UID (digits and dots)")
    study_uid = study_key(sent_study_uid, text("SOPInstanceUID"), content)
    patient_id = text("PatientID")
    if patient_id.startswith(UNIDENTIFIED_MRN_PREFIX):
        problems.add("content.PatientID", f"must not start with {UNIDENTIFIED_MRN_PREFIX}")
    elif patient_id:
        paths["mrn"] = "content.PatientID"
    mrn = patient_id or unidentified_patient_mrn(study_uid)
    modality = text("Modality").upper() or OTHER_MODALITY
    _check_pixel_data(dataset, problems)
    started = _study_time(text, problems)
    resource = _imaging_study(text, study_uid, modality, started, mrn)
    # FHIR's "temp" use: a stand-in the hospital did not send, stored with the record.
    if not sent_study_uid:
        resource["identifier"][0]["use"] = "temp"
    if not patient_id:
        resource["subject"]["identifier"]["use"] = "temp"
    entry = entry_from_resource(resource, "content", problems)
    problems.raise_if_any()
    assert entry is not None
    unidentified = not patient_id and not national_id
    return ParsedMessage(
        PatientIdentity(mrn, national_id, demographics, paths, unidentified=unidentified),
        (entry,),
        imaging=ImagingContent(DICOM_CONTENT_TYPE, content),
    )


def study_key(study_uid: str, sop_instance_uid: str, content: bytes) -> str:
    """The study a file is filed under: its StudyInstanceUID, else a deterministic stand-in.

    The stand-in is the file's SOPInstanceUID (one instance, one study) when that is a UID,
    else a UID derived from the content's SHA-256 (DICOM's ``2.25`` root), so a retry of
    the same file always finds the same study.
    """
    if study_uid:
        return study_uid
    if sop_instance_uid and _UID.match(sop_instance_uid) and len(sop_instance_uid) <= 64:
        return sop_instance_uid
    digest = hashlib.sha256(content).digest()
    return _DERIVED_UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def unidentified_patient_mrn(study_uid: str) -> str:
    """The placeholder record number of the unidentified patient of a study.

    Deterministic (retries and every image of the study agree), distinct per study (a
    SHA-256 of the UID, 160 bits kept: UIDs are up to 64 characters, record numbers too),
    and scoped to the hospital by identity, which links (hospital, record number) pairs.
    Like any record number it is never logged.
    """
    digest = hashlib.sha256(f"dicom-study:{study_uid}".encode()).hexdigest()
    return UNIDENTIFIED_MRN_PREFIX + digest[:40]


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


def _check_whole(content: bytes, dataset: Dataset) -> None:
    """Refuse a DICOMDIR, and a file whose elements do not all fit in it (cut short, or a
    length claim beyond the data), before anything else is looked at."""
    sop_class = dataset.file_meta.get("MediaStorageSOPClassUID") if dataset.file_meta else None
    if str(sop_class or "") == MEDIA_DIRECTORY_SOP_CLASS:
        raise InvalidMessage(
            DICOMDIR_REASON,
            [("content", "is a DICOMDIR (a media directory): send the instances it lists")],
        )
    try:
        check_complete(content, dataset)
        for element in dataset.iterall():  # decode every value: the whole dataset is read
            _ = element.value
    except Truncated:
        raise InvalidMessage(
            REASON,
            [("content", "is truncated: an element claims more bytes than the file holds")],
        ) from None
    except Exception:
        raise InvalidMessage(REASON, [("content", "could not be read completely")]) from None


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
        if not _sizes_pixel_data(dataset):
            return  # opaque bytes: the walk already bounded their length by the file
        # pydicom's arithmetic knows every photometric interpretation and subsampling
        # (YBR_FULL_422 holds two samples a pixel, YBR_PARTIAL_420 one and a half).
        complete = len(dataset.PixelData) >= get_expected_length(dataset, "bytes")
    except Exception:
        problems.add("content.PixelData", "could not be checked against the image attributes")
        return
    if not complete:
        problems.add("content.PixelData", "is shorter than the image attributes say: truncated")


_SIZING_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated")
_SIZING_DEFAULT_ONE = ("SamplesPerPixel", "NumberOfFrames")


def _sizes_pixel_data(dataset: Dataset) -> bool:
    """Whether the attributes that give uncompressed pixel data its length are all numbers.

    A file without Rows (nested_priv_SQ) or with a NumberOfFrames pydicom reads only with a
    warning ("1A" in badVR) cannot be sized; its pixel data is then opaque.
    """
    for keyword in _SIZING_ATTRIBUTES + _SIZING_DEFAULT_ONE:
        value = dataset.get(keyword)
        if value is None and keyword in _SIZING_DEFAULT_ONE:
            continue
        if not isinstance(value, int) or value < 0:
            return False
    return True


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
    return ""  # none: the identity service resolves the patient by record number


def _demographics(
    text: Callable[[str], str], problems: Problems, paths: dict[str, str]
) -> Demographics:
    family = given = birth_date = sex = ""
    name = text("PatientName")
    if name:
        # Component groups: alphabetic, ideographic, phonetic ("Wang^XiaoDong=王^小東=");
        # the first one given, each family^given^middle^...
        groups = [group for group in name.split("=") if group.replace("^", "").strip()]
        parts = (groups[0] if groups else "").split("^")
        family, given = one_field_name(
            parts[0].strip(), " ".join(part.strip() for part in parts[1:3] if part.strip())
        )
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
    address = text("PatientAddress")
    if address:
        paths["demographics.address"] = "content.PatientAddress"
    return Demographics(family, given, birth_date, sex, phone, address)


def _study_time(text: Callable[[str], str], problems: Problems) -> str:
    """StudyDate + StudyTime (+ TimezoneOffsetFromUTC) as a FHIR dateTime; empty if absent."""
    for date_keyword, time_keyword in (
        ("StudyDate", "StudyTime"),
        ("SeriesDate", "SeriesTime"),
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        day = text(date_keyword).replace(".", "")  # ACR-NEMA wrote yyyy.mm.dd
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


# -- the length walk -------------------------------------------------------------------------

_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs whose length field is 4 bytes (after 2 reserved bytes); the others have 2.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"} | {b"UR", b"UT", b"UV"}
)
_DEFLATED = "1.2.840.10008.1.2.1.99"


class Truncated(Exception):
    """An element claims more bytes than the file has, or the file ends inside a header."""


def check_complete(content: bytes, dataset: Dataset) -> None:
    """Raise :class:`Truncated` unless every element's length fits in the data after it.

    pydicom reads a file cut short without complaint (the last values are just shorter),
    so the encoded stream is walked once more: element headers and declared lengths, items
    and delimiters of undefined-length sequences and encapsulated pixel data, for the file
    meta (explicit VR little endian) and then the dataset in its transfer syntax.
    """
    position = 132 if content[128:132] == b"DICM" else 0
    position = _walk(content, position, len(content), explicit=True, little=True, meta=True)
    body, start = content, position
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", "")) if dataset.file_meta else ""
    if syntax == _DEFLATED:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            body, start = inflater.decompress(content[position:]), 0
        except zlib.error:
            raise Truncated from None
        if not inflater.eof:
            raise Truncated
    # As pydicom found the dataset encoded, which may differ from what the meta declares.
    implicit, little = dataset.original_encoding
    _walk(body, start, len(body), explicit=not implicit, little=little is not False)


def _walk(
    data: bytes,
    position: int,
    end: int,
    *,
    explicit: bool,
    little: bool,
    meta: bool = False,
    until: int = 0,
) -> int:
    """Walk elements from ``position`` to ``end`` (or to the delimiter tag ``until``)."""
    order = "<" if little else ">"
    if explicit and not meta and end - position >= 6 and not _looks_like_vr(data, position):
        # Like pydicom: a dataset whose first element has no VR is read as implicit VR.
        explicit = False
    while position < end:
        if end - position < 8:
            raise Truncated
        group, element = struct.unpack_from(order + "HH", data, position)
        tag = (group << 16) | element
        if meta and group != 0x0002:
            return position
        if tag in (_ITEM_END, _SEQUENCE_END) or tag == _ITEM:
            (length,) = struct.unpack_from(order + "L", data, position + 4)
            position += 8
            if tag == until:
                return position
            raise Truncated  # a delimiter where an element belongs
        vr = b""
        if explicit:
            vr = data[position + 4 : position + 6]
            if vr in _LONG_VRS:
                if end - position < 12:
                    raise Truncated
                (length,) = struct.unpack_from(order + "L", data, position + 8)
                position += 12
            else:
                (length,) = struct.unpack_from(order + "H", data, position + 6)
                position += 8
        else:
            (length,) = struct.unpack_from(order + "L", data, position + 4)
            position += 8
        if length == _UNDEFINED_LENGTH and vr == b"UN":
            # An undefined-length UN is a sequence encoded implicit VR little endian.
            position = _walk_items(data, position, end, explicit=False, little=True)
        elif length == _UNDEFINED_LENGTH:
            position = _walk_items(data, position, end, explicit=explicit, little=little)
        elif length > end - position:
            raise Truncated
        else:
            position += length
    if until:
        raise Truncated  # the data ended before the delimiter
    return position


def _looks_like_vr(data: bytes, position: int) -> bool:
    vr = data[position + 4 : position + 6]
    return len(vr) == 2 and all(65 <= byte <= 90 for byte in vr)


def _walk_items(data: bytes, position: int, end: int, *, explicit: bool, little: bool) -> int:
    """Items of an undefined-length sequence (datasets) or pixel data (fragments)."""
    order = "<" if little else ">"
    while True:
        if end - position < 8:
            raise Truncated
        group, element, length = struct.unpack_from(order + "HHL", data, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise Truncated
        if length == _UNDEFINED_LENGTH:
            position = _walk(data, position, end, explicit=explicit, little=little, until=_ITEM_END)
        elif length > end - position:
            raise Truncated
        else:
            position += length
