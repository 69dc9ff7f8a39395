"""HL7 v2 (ER7 encoding): a small parser and the mapping of clinical messages to FHIR.

Parsing (:func:`parse_er7`): segments are separated by CR (LF and CRLF are accepted too, and
MLLP framing bytes are stripped). The field separator is MSH-1 and the component, repetition,
escape and subcomponent characters are MSH-2, whatever they are. Escape sequences ``\\F\\``
``\\S\\`` ``\\T\\`` ``\\R\\`` ``\\E\\``, ``\\Xhh..\\`` and ``\\.br\\`` are decoded after splitting.
Text is UTF-8, or GB 18030 when MSH-18 says so.

Supported messages (:data:`SUPPORTED_MESSAGE_TYPES`, HL7 v2.3-2.8): ADT A01-A08, A11, A13,
A28, A31, A40; ORU R01; ORM O01, OML O21/O33; VXU V04; MDM T02. Mapped segments, each
through a FHIR R4 resource built here and the same table as FHIR input
(:func:`services.ingest.fhir.entry_from_resource`):

=======  ===========================================================================
PID      identity: PID-3 CX identifiers (type ``MR`` = record number; without one, the
         first identifier that is not a national ID; ``NNCHN`` or ``NI`` = national
         ID), PID-5 name, PID-7 birth date, PID-8 sex (table 0001; a site code is not
         forwarded), PID-13 phone
AL1      AllergyIntolerance: AL1-3 allergen, AL1-2 type, AL1-4 severity (``SV`` ->
         criticality high, ``MO``/``MI`` -> low, ``U`` -> unable-to-assess), AL1-5
         reaction, AL1-6 identification date
DG1      Condition: DG1-3 diagnosis code, DG1-5 diagnosis date/time
PR1      Procedure (completed): PR1-3 procedure code, PR1-5 procedure date/time
OBR      DiagnosticReport: OBR-4 service, OBR-7 observation time, OBR-25 status; in an
         order (ORM/OML) status ``registered``
OBX      Observation: OBX-3 code, OBX-2/5 value (NM -> valueQuantity with OBX-6 units),
         OBX-11 status, OBX-14 time (else the OBR's OBR-7); in MDM, the document text
RXA      MedicationStatement (VXU): RXA-5 vaccine, RXA-3 time, RXA-20 completion
TXA      DocumentReference (MDM): TXA-2 type, TXA-4/6 time, the OBX-5 text attached
PV1      Encounter (ADT^A01/A04 only): PV1-2 patient class, PV1-44/45 admit/discharge
MRG      ADT^A40: a merge request record for identity (:func:`_merge_request`)
Z..      every Z-segment, kept as sent in one DocumentReference (:func:`_z_segments`)
=======  ===========================================================================

Other segments (EVN, PD1, NK1, NTE, ORC, ...) carry no record of their own and are
ignored. An entry without a time of its own takes MSH-7. ``""`` (the explicit null) is read
as no value. An AL1/DG1/PR1 with nothing but its set id is skipped. A coded field (CE/CWE)
without a coding system (component 3, table 0396) is a local code
(:data:`LOCAL_CODING_SYSTEM`); a text-only value (``^Sulfonamide``) becomes a text-only
concept. Coding-system names of clinical terminologies are mapped by
:func:`healthbank.contracts.terminology.system_for_hl7_name`; a few others in
:data:`OTHER_CODING_SYSTEMS`. See docs/adr/0015.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from healthbank.contracts.terminology import system_for_hl7_name
from services.ingest.fhir import entry_from_resource
from services.ingest.model import (
    MR_TYPE_CODE,
    ClinicalEntry,
    Demographics,
    InvalidMessage,
    ParsedMessage,
    PatientIdentity,
    Problems,
    address_line,
    compact_timestamp_as_fhir,
    mr_reference,
    one_field_name,
    parse_fhir_datetime,
)

REASON = "INVALID_HL7V2"

ADT_EVENTS = frozenset(
    {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A13", "A28", "A31", "A40"}
)
ORDER_TYPES = frozenset({"ORM^O01", "OML^O21", "OML^O33"})
SUPPORTED_MESSAGE_TYPES = frozenset(
    {f"ADT^{event}" for event in ADT_EVENTS} | ORDER_TYPES | {"ORU^R01", "VXU^V04", "MDM^T02"}
)
MERGE_TYPE = "ADT^A40"
EXPLICIT_NULL = '""'
"""HL7's explicit null: the sender clears the field. Read as no value, never stored as one."""

NATIONAL_ID_TYPE_CODES = frozenset({"NNCHN", "NI"})
"""PID-3 identifier type codes (HL7 table 0203) of the resident identity number."""

# HL7 table 0396 names of systems that are not clinical terminologies (those are named in
# healthbank.contracts.terminology, the one place for them) → FHIR system URIs. Other names
# become "urn:hl7-v2:coding-system:<name>", so a code never loses the system it came with.
OTHER_CODING_SYSTEMS: Mapping[str, str] = MappingProxyType(
    {
        "C4": "http://www.ama-assn.org/go/cpt",
        "CPT4": "http://www.ama-assn.org/go/cpt",
        "NDC": "http://hl7.org/fhir/sid/ndc",
        "UCUM": "http://unitsofmeasure.org",
        "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    }
)
UNKNOWN_CODING_SYSTEM_PREFIX = "urn:hl7-v2:coding-system:"
LOCAL_CODING_SYSTEM = UNKNOWN_CODING_SYSTEM_PREFIX + "L"
"""A code sent without component 3: CE.3 is optional, and table 0396's ``L`` is "local code"."""
Z_SEGMENTS_TYPE = {"system": "urn:hl7-v2:segment", "code": "Z", "display": "Z-segments"}
MERGE_REQUEST_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
    "code": "A40",
    "display": "merge patient - patient identifier list",
}

_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_MLLP_FRAMING = "\x0b\x1c"
_SEXES: Mapping[str, str] = MappingProxyType(
    {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
)
# AL1-4 (HL7 table 0128) → (FHIR criticality, FHIR reaction severity).
_ALLERGY_SEVERITY: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "SV": ("high", "severe"),
        "MO": ("low", "moderate"),
        "MI": ("low", "mild"),
        "U": ("unable-to-assess", ""),
    }
)
# AL1-2 (HL7 table 0127) → FHIR AllergyIntolerance.category.
_ALLERGY_CATEGORY: Mapping[str, str] = MappingProxyType(
    {
        "DA": "medication",
        "FA": "food",
        "EA": "environment",
        "AA": "environment",
        "PA": "environment",
        "LA": "environment",
    }
)
# OBX-11 / OBR-25 (HL7 tables 0085 / 0123) → FHIR status.
_RESULT_STATUS: Mapping[str, str] = MappingProxyType(
    {
        "F": "final",
        "C": "corrected",
        "A": "amended",
        "P": "preliminary",
        "R": "preliminary",
        "S": "preliminary",
        "I": "registered",
        "O": "registered",
        "X": "cancelled",
        "D": "entered-in-error",
        "W": "entered-in-error",
    }
)
# PV1-2 (HL7 table 0004) → v3 ActCode encounter class.
_PATIENT_CLASS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "E": ("EMER", "emergency"),
        "I": ("IMP", "inpatient encounter"),
        "O": ("AMB", "ambulatory"),
        "P": ("PRENC", "pre-admission"),
        "R": ("AMB", "ambulatory"),
        "B": ("OBSENC", "observation encounter"),
    }
)
_ENCOUNTER_EVENTS = frozenset({"ADT^A01", "ADT^A04"})
_FACT_SEGMENTS = frozenset({"AL1", "DG1", "PR1"})
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class Delimiters:
    """The separators and escape character a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


@dataclass(frozen=True)
class Segment:
    """One segment; ``fields[n]`` is field n as raw (still escaped) text, ``fields[0]`` the id.

    For MSH, ``fields[1]`` is the field separator and ``fields[2]`` the encoding characters,
    so that field numbers match the standard for every segment.
    """

    name: str
    fields: tuple[str, ...]
    occurrence: int
    delimiters: Delimiters

    @property
    def path(self) -> str:
        """Where this segment is, for problem paths: ``content.OBX[1]``."""
        return f"content.{self.name}[{self.occurrence}]"

    def raw(self, number: int) -> str:
        """Field ``number`` as sent (escaped, all repetitions); empty if absent or ``""``."""
        value = self.fields[number] if 0 <= number < len(self.fields) else ""
        return "" if value == EXPLICIT_NULL else value

    def repetitions(self, number: int) -> list[str]:
        """The raw repetitions of field ``number`` (an absent field has none)."""
        raw = self.raw(number)
        return raw.split(self.delimiters.repetition) if raw else []

    def get(self, number: int, component: int = 1, repetition: int = 0, sub: int = 1) -> str:
        """One unescaped value: field ``number``, 1-based component and subcomponent."""
        repetitions = self.repetitions(number)
        if repetition >= len(repetitions):
            return ""
        return component_of(repetitions[repetition], component, self.delimiters, sub)


@dataclass(frozen=True)
class Er7Message:
    """A parsed ER7 message: its delimiters and segments in order."""

    delimiters: Delimiters
    segments: tuple[Segment, ...]

    def all(self, name: str) -> list[Segment]:
        """Every segment with id ``name``, in order."""
        return [segment for segment in self.segments if segment.name == name]

    def first(self, name: str) -> Segment | None:
        """The first segment with id ``name``, if any."""
        return next((segment for segment in self.segments if segment.name == name), None)


def component_of(raw: str, component: int, delimiters: Delimiters, sub: int = 1) -> str:
    """Component (and subcomponent), 1-based, of one raw repetition, unescaped."""
    components = raw.split(delimiters.component)
    if component > len(components):
        return ""
    subcomponents = components[component - 1].split(delimiters.subcomponent)
    if sub > len(subcomponents) or subcomponents[sub - 1] == EXPLICIT_NULL:
        return ""
    return unescape(subcomponents[sub - 1], delimiters).strip()


def unescape(text: str, delimiters: Delimiters) -> str:
    """Decode HL7 escape sequences (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\``)."""
    escape = delimiters.escape
    if escape not in text:
        return text
    simple = {
        "F": delimiters.field,
        "S": delimiters.component,
        "T": delimiters.subcomponent,
        "R": delimiters.repetition,
        "E": escape,
        ".br": "\n",
        "H": "",  # highlighting on/off: presentation only
        "N": "",
    }
    out: list[str] = []
    position = 0
    while position < len(text):
        start = text.find(escape, position)
        if start < 0:
            out.append(text[position:])
            break
        end = text.find(escape, start + 1)
        if end < 0:  # an unterminated escape is literal text
            out.append(text[position:])
            break
        out.append(text[position:start])
        sequence = text[start + 1 : end]
        if sequence in simple:
            out.append(simple[sequence])
        elif sequence.startswith("X") and _is_hex(sequence[1:]):
            out.append(bytes.fromhex(sequence[1:]).decode("utf-8", errors="replace"))
        else:  # unknown sequence: keep it as sent
            out.append(text[start : end + 1])
        position = end + 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return bool(text) and len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


def decode_text(content: bytes) -> str:
    """The message as text: UTF-8, or GB 18030 when MSH-18 declares it."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        header = content.split(b"\r", 1)[0].split(b"\n", 1)[0].upper()
        if b"GB 18030" in header or b"GB18030" in header:
            try:
                return content.decode("gb18030")
            except UnicodeDecodeError:
                pass
    raise InvalidMessage(
        REASON, [("content", "must be UTF-8 text (or GB 18030 when MSH-18 declares it)")]
    )


def parse_er7(text: str) -> Er7Message:
    """Split an ER7 message into segments and fields; checks MSH-1/MSH-2 and segment ids."""
    lines = [line for line in re.split(r"\r\n|\r|\n", text.strip(_MLLP_FRAMING + "\r\n ")) if line]
    if not lines or not lines[0].startswith("MSH"):
        raise InvalidMessage(
            REASON, [("content.MSH", "the message must start with an MSH segment")]
        )
    header = lines[0]
    separator = header[3:4]
    if not separator or separator.isalnum() or separator.isspace():
        raise InvalidMessage(
            REASON, [("content.MSH[0].1", "must be the field separator character, usually |")]
        )
    encoding = header[4:].split(separator, 1)[0]
    if (
        len(encoding) not in (4, 5)
        or len(set(encoding)) != len(encoding)
        or separator in encoding
        or any(char.isalnum() or char.isspace() for char in encoding)
    ):
        raise InvalidMessage(
            REASON,
            [("content.MSH[0].2", "must be 4 distinct encoding characters, usually ^~\\&")],
        )
    delimiters = Delimiters(separator, encoding[0], encoding[1], encoding[2], encoding[3])
    problems = Problems(REASON)
    counts: dict[str, int] = {}
    segments: list[Segment] = []
    for index, line in enumerate(lines):
        name = line[:3]
        if not _SEGMENT_ID.match(name) or (len(line) > 3 and line[3] != separator):
            problems.add(f"content.segment[{index}]", "must start with a 3-character segment id")
            continue
        if index > 0 and name == "MSH":
            problems.add(f"content.segment[{index}]", "a message has one MSH segment")
            continue
        parts = line.split(separator)
        fields = (name, separator, *parts[1:]) if name == "MSH" else tuple(parts)
        occurrence = counts.get(name, 0)
        counts[name] = occurrence + 1
        segments.append(Segment(name, fields, occurrence, delimiters))
    problems.raise_if_any()
    return Er7Message(delimiters, tuple(segments))


def parse_hl7v2(content: bytes) -> ParsedMessage:
    """Parse, validate and map an HL7 v2 message; raises InvalidMessage listing every problem."""
    message = parse_er7(decode_text(content))
    problems = Problems(REASON)
    msh = message.segments[0]
    message_type = f"{msh.get(9, 1)}^{msh.get(9, 2)}"
    if not msh.get(9, 1):
        problems.add("content.MSH[0].9", "is required")
    elif message_type not in SUPPORTED_MESSAGE_TYPES:
        problems.add(
            "content.MSH[0].9",
            "unsupported message type; supported: " + ", ".join(sorted(SUPPORTED_MESSAGE_TYPES)),
        )
    if not msh.get(10):
        problems.add("content.MSH[0].10", "is required (message control id)")
    message_time = _timestamp(msh, 7, problems)
    pids = message.all("PID")
    patient = None
    if not pids:
        problems.add("content.PID", "is required")
    else:
        patient = _patient(pids[0], problems)
        for extra in pids[1:]:
            problems.add(extra.path, "a message may describe only one patient")
    mrn = patient.mrn if patient is not None else ""
    located: list[tuple[str, dict[str, Any]]] = []
    report_time = ""
    is_document = message_type == "MDM^T02"
    for segment in message.segments:
        resource: dict[str, Any] | None = None
        if segment.name in _FACT_SEGMENTS and _is_placeholder(segment):
            continue
        if segment.name == "AL1":
            resource = _allergy(segment, problems)
        elif segment.name == "DG1":
            resource = _condition(segment, problems)
        elif segment.name == "PR1":
            resource = _procedure(segment, problems)
        elif segment.name == "OBR":
            resource = _report(segment, problems, ordered=message_type in ORDER_TYPES)
            report_time = resource.get("effectiveDateTime", "") if resource else ""
        elif segment.name == "OBX" and not is_document:
            resource = _observation(segment, report_time, problems)
        elif segment.name == "RXA":
            resource = _immunization(segment, problems)
        elif segment.name == "TXA" and is_document:
            resource = _document(segment, message, problems)
        elif segment.name == "PV1" and message_type in _ENCOUNTER_EVENTS:
            resource = _encounter(segment, problems)
        if resource is not None:
            located.append((segment.path, resource))
    if message_type == MERGE_TYPE and patient is not None:
        merge = _merge_request(message, mrn, problems)
        if merge is not None:
            resource, prior_mrns = merge
            located.append(("content.MRG[0]", resource))
            paths = {**patient.field_paths, "prior_mrns": "content.MRG[0].1"}
            patient = replace(patient, prior_mrns=prior_mrns, field_paths=paths)
    z_segments = [segment for segment in message.segments if segment.name.startswith("Z")]
    if z_segments:
        located.append((z_segments[0].path, _z_segments(z_segments, msh.delimiters)))
    entries: list[ClinicalEntry] = []
    for path, resource in located:
        resource[_subject_element(resource)] = mr_reference(mrn)
        entry = entry_from_resource(resource, path, problems)
        if entry is not None:
            entries.append(entry)
    problems.raise_if_any()
    assert patient is not None
    return ParsedMessage(patient, tuple(entries), message_time)


def _is_placeholder(segment: Segment) -> bool:
    """An AL1/DG1/PR1 with nothing but its set id (``AL1|1||^^|||``): engines send these for
    "none recorded"; it states no fact, so it is skipped rather than refused."""
    delimiters = segment.delimiters
    filler = set(delimiters.component + delimiters.repetition + delimiters.subcomponent)
    return all(
        not value or value == EXPLICIT_NULL or set(value) <= filler for value in segment.fields[2:]
    )


def _subject_element(resource: Mapping[str, Any]) -> str:
    return "patient" if resource["resourceType"] == "AllergyIntolerance" else "subject"


def _timestamp(segment: Segment, number: int, problems: Problems) -> datetime | None:
    text = _fhir_time(segment, number, problems)
    return parse_fhir_datetime(text) if text else None


def _fhir_time(segment: Segment, number: int, problems: Problems) -> str:
    """Field ``number`` (a TS/DTM) as a FHIR dateTime string; empty when absent or invalid."""
    raw = segment.get(number)
    if not raw:
        return ""
    try:
        return compact_timestamp_as_fhir(raw)
    except ValueError as exc:
        problems.add(f"{segment.path}.{number}", str(exc))
        return ""


def _patient(pid: Segment, problems: Problems) -> PatientIdentity | None:
    before = len(problems)
    paths: dict[str, str] = {"identifiers": f"{pid.path}.3"}
    mrn = national_id = ""
    identifiers = pid.repetitions(3)
    has_identifiers = any(component_of(rep, 1, pid.delimiters) for rep in identifiers)
    if not has_identifiers:
        problems.add(f"{pid.path}.3", "is required (patient identifiers)")
    saw_mrn = False
    first_usable = first_value = ""
    for index, raw in enumerate(identifiers):
        type_code = component_of(raw, 5, pid.delimiters).upper()
        value = component_of(raw, 1, pid.delimiters)
        where = f"{pid.path}.3[{index}]"
        if type_code == MR_TYPE_CODE:
            saw_mrn = True
            if not value:
                problems.add(f"{where}.1", "is required")
            elif not mrn:
                mrn, paths["mrn"] = value, f"{where}.1"
        elif type_code in NATIONAL_ID_TYPE_CODES:
            if not national_id:
                try:
                    national_id = validate_national_id(value)
                    paths["national_id"] = f"{where}.1"
                except InvalidNationalId as exc:
                    problems.add(f"{where}.1", f"invalid national ID: {exc.reason}")
        elif value and not first_usable:
            first_usable = f"{where}.1"
            first_value = value
    if has_identifiers and not saw_mrn and first_usable:
        # Many engines send PID-3 without a type code (or a local one such as PI, PK, EPI):
        # the first identifier that is not a national ID is the hospital's record number.
        mrn, paths["mrn"] = first_value, first_usable
    elif has_identifiers and not saw_mrn:
        problems.add(
            f"{pid.path}.3",
            "must include the hospital record number: an identifier other than the national ID",
        )
    # PID-5 repeats (legal name, alias, maiden name ...): the legal one (XPN-7 "L") is
    # compared when one is marked so, else the first.
    names = range(len(pid.repetitions(5)))
    legal = next((n for n in names if pid.get(5, 7, n).strip().upper() == "L"), 0)
    name_path = f"{pid.path}.5" if legal == 0 else f"{pid.path}.5[{legal}]"
    given_component = pid.get(5, 2, legal)
    family, given = one_field_name(pid.get(5, 1, legal), given_component)
    if family:
        paths["demographics.family_name"] = f"{name_path}.1"
    if given:
        # A Chinese name sent whole in PID-5.1 gives its given name from there.
        paths["demographics.given_name"] = f"{name_path}.{2 if given_component else 1}"
    birth_date = ""
    born = _fhir_time(pid, 7, problems)
    if len(born) >= 10:  # a full date (a year or month alone is not forwarded)
        birth_date = born[:10]
        paths["demographics.birth_date"] = f"{pid.path}.7"
    sex = ""
    # Table 0001 is user-defined: a site's own code is not an error, only not forwarded.
    sex_code = pid.get(8).upper()
    if sex_code in _SEXES:
        sex = _SEXES[sex_code]
        paths["demographics.sex"] = f"{pid.path}.8"
    phone = pid.get(13, 1) or (pid.get(13, 6) + pid.get(13, 7)) or pid.get(13, 12)
    if phone:
        paths["demographics.phone"] = f"{pid.path}.13"
    # XAD: 1 street, 2 other designation, 3 city, 4 state or province, 9 county (district).
    address = address_line(*(pid.get(11, part) for part in (4, 3, 9, 1, 2)))
    if address:
        paths["demographics.address"] = f"{pid.path}.11"
    if len(problems) > before:
        return None
    return PatientIdentity(
        mrn,
        national_id,
        Demographics(family, given, birth_date, sex, phone, address),
        paths,
        # XAD-9, county/parish: where a Chinese address keeps its district (区).
        district=pid.get(11, 9).strip(),
    )


def coding_system_uri(name: str) -> str:
    """FHIR system URI of an HL7 table 0396 coding system name."""
    return (
        system_for_hl7_name(name)
        or OTHER_CODING_SYSTEMS.get(name.upper())
        or UNKNOWN_CODING_SYSTEM_PREFIX + name
    )


def _concept(
    segment: Segment, number: int, problems: Problems, *, required: bool, fallback_text: str = ""
) -> dict[str, Any] | None:
    """A CE/CWE field as a FHIR CodeableConcept; None (problem recorded if required) if empty."""
    code, text, system = (segment.get(number, c) for c in (1, 2, 3))
    if not code:
        # The alternate triplet (components 4-6) when the primary is empty.
        code, text_alt, system = (segment.get(number, c) for c in (4, 5, 6))
        text = text or text_alt
    text = text or fallback_text
    if code:
        coding = {
            "system": coding_system_uri(system) if system else LOCAL_CODING_SYSTEM,
            "code": code,
        }
        if text:
            coding["display"] = text
        return {"coding": [coding]}
    if text:
        return {"text": text}
    if required:
        problems.add(f"{segment.path}.{number}", "is required")
    return None


def _allergy(segment: Segment, problems: Problems) -> dict[str, Any] | None:
    concept = _concept(segment, 3, problems, required=True)
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
    }
    allergen_type = segment.get(2, 1).upper()
    if allergen_type in _ALLERGY_CATEGORY:
        resource["category"] = [_ALLERGY_CATEGORY[allergen_type]]
    severity_code = segment.get(4, 1).upper()
    reaction_severity = ""
    if severity_code:
        if severity_code in _ALLERGY_SEVERITY:
            resource["criticality"], reaction_severity = _ALLERGY_SEVERITY[severity_code]
        else:
            problems.add(f"{segment.path}.4", "must be one of SV, MO, MI, U (HL7 table 0128)")
    resource["code"] = concept
    onset = _fhir_time(segment, 6, problems)
    if onset:
        resource["onsetDateTime"] = onset
    reactions = [component_of(raw, 1, segment.delimiters) for raw in segment.repetitions(5)]
    reactions = [text for text in reactions if text]
    if reactions or reaction_severity:
        reaction: dict[str, Any] = {"manifestation": [{"text": text} for text in reactions]}
        if reaction_severity:
            reaction["severity"] = reaction_severity
        resource["reaction"] = [reaction]
    return resource if concept is not None else None


def _condition(segment: Segment, problems: Problems) -> dict[str, Any] | None:
    concept = _concept(segment, 3, problems, required=True, fallback_text=segment.get(4))
    recorded = _fhir_time(segment, 5, problems)
    if concept is None:
        return None
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": concept,
    }
    if recorded:
        resource["recordedDate"] = recorded
    return resource


def _procedure(segment: Segment, problems: Problems) -> dict[str, Any] | None:
    concept = _concept(segment, 3, problems, required=True, fallback_text=segment.get(4))
    performed = _fhir_time(segment, 5, problems)
    if concept is None:
        return None
    resource: dict[str, Any] = {"resourceType": "Procedure", "status": "completed", "code": concept}
    if performed:
        resource["performedDateTime"] = performed
    return resource


def _report(segment: Segment, problems: Problems, *, ordered: bool) -> dict[str, Any] | None:
    """OBR as a DiagnosticReport; an order (ORM/OML) is one that is registered, not resulted."""
    concept = _concept(segment, 4, problems, required=True)
    observed = _fhir_time(segment, 7, problems)
    if concept is None:
        return None
    status = "registered" if ordered else _RESULT_STATUS.get(segment.get(25).upper(), "unknown")
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": status,
        "code": concept,
    }
    if observed:
        resource["effectiveDateTime"] = observed
    return resource


def _observation(segment: Segment, report_time: str, problems: Problems) -> dict[str, Any] | None:
    concept = _concept(segment, 3, problems, required=True)
    observed = _fhir_time(segment, 14, problems)
    value = _observation_value(segment, problems)
    if concept is None:
        return None
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": _RESULT_STATUS.get(segment.get(11).upper(), "unknown"),
        "code": concept,
    }
    if observed or report_time:
        resource["effectiveDateTime"] = observed or report_time
    if value is not None:
        resource.update(value)
    reference_range = segment.get(7)
    if reference_range:
        resource["referenceRange"] = [{"text": reference_range}]
    flags = [component_of(raw, 1, segment.delimiters) for raw in segment.repetitions(8)]
    flags = [flag for flag in flags if flag]
    if flags:
        resource["interpretation"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0078",
                        "code": flag,
                    }
                ]
            }
            for flag in flags
        ]
    return resource


def _observation_value(segment: Segment, problems: Problems) -> dict[str, Any] | None:
    """OBX-5 as a FHIR value[x], typed by OBX-2."""
    repetitions = segment.repetitions(5)
    if not any(repetitions):
        return None
    value_type = segment.get(2).upper()
    where = f"{segment.path}.5"
    if not value_type:
        problems.add(f"{segment.path}.2", "is required when OBX-5 has a value")
        return None
    if value_type == "NM":
        number = segment.get(5)
        if not _NUMBER.match(number):
            problems.add(where, "must be a number for value type NM")
            return None
        return {"valueQuantity": _quantity(number, segment)}
    if value_type == "SN":
        comparator, number = segment.get(5, 1), segment.get(5, 2)
        if (
            _NUMBER.match(number)
            and comparator in ("", "<", ">", "<=", ">=")
            and not (segment.get(5, 3) or segment.get(5, 4))
        ):
            quantity = _quantity(number, segment)
            if comparator:
                quantity["comparator"] = comparator
            return {"valueQuantity": quantity}
    if value_type in ("CE", "CWE", "CNE"):
        concept = _concept(segment, 5, problems, required=True)
        return {"valueCodeableConcept": concept} if concept is not None else None
    if value_type in ("DT", "TS", "DTM"):
        moment = _fhir_time(segment, 5, problems)
        return {"valueDateTime": moment} if moment else None
    # ST, TX, FT and anything else: the text as sent, so nothing is lost.
    texts = [unescape(raw, segment.delimiters) for raw in repetitions]
    return {"valueString": "\n".join(text for text in texts if text)}


def _quantity(number: str, segment: Segment) -> dict[str, Any]:
    value = float(number)
    quantity: dict[str, Any] = {
        "value": int(value) if value.is_integer() and "." not in number else value
    }
    unit_code, unit_text, unit_system = (segment.get(6, c) for c in (1, 2, 3))
    if unit_code or unit_text:
        quantity["unit"] = unit_text or unit_code
    if unit_code and unit_system.upper() == "UCUM":
        quantity["system"] = "http://unitsofmeasure.org"
        quantity["code"] = unit_code
    return quantity


def _encounter(segment: Segment, problems: Problems) -> dict[str, Any] | None:
    patient_class = segment.get(2).upper()
    if not patient_class or patient_class == "N":
        return None  # "not applicable": there is no visit to record
    # Table 0004 is user-defined: a site's own class is kept in the v2 code system.
    system = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    code, display = _PATIENT_CLASS.get(patient_class, ("", ""))
    if not code:
        system, code = "http://terminology.hl7.org/CodeSystem/v2-0004", patient_class
    admitted = _fhir_time(segment, 44, problems)
    discharged = _fhir_time(segment, 45, problems)
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished" if discharged else "in-progress",
        "class": {"system": system, "code": code, **({"display": display} if display else {})},
    }
    period = {bound: value for bound, value in (("start", admitted), ("end", discharged)) if value}
    if period:
        resource["period"] = period
    return resource


def _immunization(segment: Segment, problems: Problems) -> dict[str, Any] | None:
    """RXA (VXU) as a MedicationStatement of the vaccine given.

    RXA-5 the vaccine (CVX), RXA-3 when, RXA-20 completion status (``RE`` refused, ``NA``
    not administered → not-taken). A MedicationStatement until the shared FHIR mapping
    gains Immunization.
    """
    concept = _concept(segment, 5, problems, required=True)
    given = _fhir_time(segment, 3, problems)
    if concept is None:
        return None
    completion = segment.get(20).upper()
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "status": "not-taken" if completion in ("RE", "NA") else "completed",
        "medicationCodeableConcept": concept,
    }
    if given:
        resource["effectiveDateTime"] = given
    return resource


def _document(segment: Segment, message: Er7Message, problems: Problems) -> dict[str, Any]:
    """TXA (MDM^T02) and the message's OBX text as one DocumentReference.

    TXA-2 the document type (HL7 table 0270), TXA-4 (else TXA-6) its time, TXA-17 the
    completion status; the OBX-5 values, in order, are the document's text.
    """
    document_type = segment.get(2) or "DOC"
    when = _fhir_time(segment, 4, problems) or _fhir_time(segment, 6, problems)
    lines: list[str] = []
    for obx in message.all("OBX"):
        for raw in obx.repetitions(5):
            if raw != EXPLICIT_NULL:
                lines.append(unescape(raw, obx.delimiters))
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "preliminary" if segment.get(17).upper() in ("IP", "IN", "PA") else "final",
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v2-0270", "code": document_type}
            ]
        },
        "content": [_text_attachment("text/plain", "\n".join(lines))],
    }
    if when and "T" in when:
        resource["date"] = when
    return resource


def _merge_request(
    message: Er7Message, mrn: str, problems: Problems
) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """An A40's MRG: the merge request record and the prior record numbers (ADRs 15, 33).

    The record (a DocumentReference typed v2-0003 ``A40``, under the surviving patient)
    carries JSON ``{"surviving_mrn": ..., "prior_mrns": [...]}``: MRG-1's identifiers, by
    the same rule as PID-3 (type MR, else the first that is not a national ID). The prior
    numbers also travel to identity with the patient, which merges their persons.
    """
    mrg = message.first("MRG")
    if mrg is None:
        problems.add("content.MRG", "is required in ADT^A40 (the prior patient identifiers)")
        return None
    prior: list[str] = []
    typed = [
        component_of(raw, 1, mrg.delimiters)
        for raw in mrg.repetitions(1)
        if component_of(raw, 5, mrg.delimiters).upper() == MR_TYPE_CODE
    ]
    untyped = [
        component_of(raw, 1, mrg.delimiters)
        for raw in mrg.repetitions(1)
        if component_of(raw, 5, mrg.delimiters).upper() not in NATIONAL_ID_TYPE_CODES
    ]
    prior = [value for value in (typed or untyped[:1]) if value]
    if not prior:
        problems.add(f"{mrg.path}.1", "is required (the prior patient identifier list)")
        return None
    if mrn in prior:
        problems.add(f"{mrg.path}.1", "must not repeat the surviving record number (PID-3)")
        return None
    body = json.dumps({"surviving_mrn": mrn, "prior_mrns": prior}, separators=(",", ":"))
    resource = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [dict(MERGE_REQUEST_TYPE)]},
        "content": [_text_attachment("application/json", body)],
    }
    return resource, tuple(dict.fromkeys(prior))


def _z_segments(segments: list[Segment], delimiters: Delimiters) -> dict[str, Any]:
    """Site-defined Z-segments, kept as sent (ER7, CR-separated) in one DocumentReference."""
    text = "\r".join(delimiters.field.join(segment.fields) for segment in segments)
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [dict(Z_SEGMENTS_TYPE)]},
        "content": [_text_attachment("x-application/hl7-v2+er7", text)],
    }


def _text_attachment(content_type: str, text: str) -> dict[str, Any]:
    return {
        "attachment": {
            "contentType": content_type,
            "data": base64.b64encode(text.encode()).decode(),
        }
    }
