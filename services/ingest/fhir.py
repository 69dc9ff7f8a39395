"""FHIR R4: a Bundle, a single resource or Bulk Data NDJSON into a :class:`ParsedMessage`
(or, for several patients, a :class:`ParsedBatch`).

Accepted input:

- a Bundle (transaction, batch, collection, message or document) with
  exactly one Patient and any number of other resources, of any type and any count;
- a batch, transaction or collection Bundle, or NDJSON, with several Patients
  (:class:`ParsedBatch`): each patient's part is stored as a message of its own,
  all-or-nothing per patient, not per Bundle (ADR 38); every resource must be some
  patient's (:func:`~healthbank.contracts.fhir.group_by_patient`) or the directory's;
- a Bundle, or NDJSON, with no Patient whose resources are all of the hospital's directory
  (:data:`DIRECTORY_RESOURCE_TYPES`: Organization, Practitioner, Location ...);
- a single Patient (a demographics update: no records);
- a single clinical resource carrying its Patient in ``contained``;
- FHIR Bulk Data NDJSON (:func:`parse_fhir_ndjson`): one resource per line, read as a
  collection Bundle of those resources (problem paths ``content.line[<n>]``, 1-based).

The Patient gives the identity: the national ID is the identifier whose system is one of
:data:`NATIONAL_ID_SYSTEMS` (optional), the hospital record number (MRN, required) the
identifier whose ``type`` has a coding with code ``MR``; name (``official`` use first),
birthDate, gender and the first ``phone`` telecom become the demographics.

Every other resource of a patient message has one outcome (:class:`ResourceOutcome`, in
the acknowledgement), and none is dropped silently:

- RECORD: the types of :data:`RESOURCE_MAPPINGS` become canonical records of their category
  (one row per type: the element holding the main code, the date elements giving the
  effective time, status, the element referring to the patient, the severity). They are
  validated strictly: a wrong code or date is the hospital's to fix. HL7 v2 and DICOM are
  mapped to FHIR resources and go through the same table (:func:`entry_from_resource`).
- DOCUMENT: any other type (Claim, ExplanationOfBenefit, CareTeam, Goal, Provenance,
  Medication, SupplyDelivery ...) becomes a DOCUMENT record under the patient, its code the
  first usable of ``code``/``type``/``category`` (else the resource type in
  :data:`RESOURCE_TYPE_SYSTEM`), its time the first valid common date element. Nothing in
  such a resource is a reason to reject the message.
- DIRECTORY: directory types inside a patient message join the hospital's directory.
- SKIPPED: only the message envelope (MessageHeader), with the reason.

``medication[x]`` is read in both forms: ``medicationCodeableConcept``, or
``medicationReference`` resolved to a Medication inside the message (by ``fullUrl`` such as
``urn:uuid:...``, ``Medication/<id>`` or ``#<id>`` in ``contained``) whose ``code`` becomes
the record's code; a reference that does not resolve is kept as it is (in the stored
resource) and the record's code is the reference's display as text.

A resource without any date element takes the Bundle's ``timestamp``, else the time of
ingest, as its effective time. Records store the resource exactly as sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from healthbank.contracts.fhir import DIRECTORY_RESOURCE_TYPES, group_by_patient, reference_key
from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from healthbank.core.digest import sha256_hex
from services.ingest.model import (
    MR_TYPE_CODE,
    Category,
    ClinicalEntry,
    Coding,
    Demographics,
    DirectoryEntry,
    Disposition,
    InvalidMessage,
    ParsedBatch,
    ParsedMessage,
    PatientIdentity,
    PatientPart,
    Problems,
    ResourceOutcome,
    address_line,
    full_name_parts,
    parse_fhir_datetime,
)

REASON = "INVALID_FHIR"

NATIONAL_ID_SYSTEMS = frozenset(
    {"urn:oid:2.16.156.10011.1.1", "http://healthbank.io/fhir/national-id"}
)
"""Identifier systems of the resident identity number (the OID is the Chinese national one)."""

BUNDLE_TYPES = frozenset({"transaction", "batch", "collection", "message", "document"})

SEVERAL_PATIENT_BUNDLE_TYPES = frozenset({"transaction", "batch", "collection"})
"""Bundle types that may carry several patients (a message or document is about one)."""


ENVELOPE_RESOURCE_TYPES = frozenset({"MessageHeader"})
"""Resources that only carry a message: skipped (with the reason in the outcome)."""

RESOURCE_TYPE_SYSTEM = "http://hl7.org/fhir/fhir-types"
"""Code system of a document record coded by its resource type (no code of its own)."""

# Elements tried, in order, for a document record's code and effective time.
_DOCUMENT_CODE_ELEMENTS = ("code", "type", "category", "vaccineCode", "class")
_DOCUMENT_TIME_ELEMENTS = (
    "effectiveDateTime",
    "effectivePeriod",
    "occurrenceDateTime",
    "occurrencePeriod",
    "performedDateTime",
    "performedPeriod",
    "onsetDateTime",
    "authoredOn",
    "created",
    "date",
    "issued",
    "recorded",
    "recordedDate",
    "period",
    "billablePeriod",
    "started",
    "sent",
)

_GENDERS = frozenset({"male", "female", "other", "unknown"})


@dataclass(frozen=True)
class ResourceMapping:
    """How one FHIR resource type becomes a canonical record.

    ``code`` and ``effective`` list element names tried in order (the first present wins); a
    list-valued element contributes its first item. Effective elements may be a dateTime,
    an instant or a Period (its start). ``status`` and ``severity`` elements may be a code
    string or a CodeableConcept. A ``medication`` mapping also reads ``medicationReference``
    when no code element is present. ``code_optional``: a resource without a code element
    is coded by its resource type instead of rejected (the element is optional in R4).
    """

    category: Category
    code: tuple[str, ...]
    effective: tuple[str, ...]
    status: str
    subject: str = "subject"
    severity: str = ""
    medication: bool = False
    code_optional: bool = False


RESOURCE_MAPPINGS: Mapping[str, ResourceMapping] = MappingProxyType(
    {
        "AllergyIntolerance": ResourceMapping(
            Category.ALLERGY,
            code=("code",),
            effective=("onsetDateTime", "onsetPeriod", "recordedDate"),
            status="clinicalStatus",
            subject="patient",
            severity="criticality",
        ),
        "Condition": ResourceMapping(
            Category.CONDITION,
            code=("code",),
            effective=("onsetDateTime", "onsetPeriod", "recordedDate"),
            status="clinicalStatus",
            severity="severity",
        ),
        "Procedure": ResourceMapping(
            Category.PROCEDURE,
            code=("code",),
            effective=("performedDateTime", "performedPeriod"),
            status="status",
        ),
        "Observation": ResourceMapping(
            Category.OBSERVATION,
            code=("code",),
            effective=("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
            status="status",
        ),
        "ImagingStudy": ResourceMapping(
            Category.IMAGING,
            code=("modality", "procedureCode"),
            effective=("started",),
            status="status",
            code_optional=True,
        ),
        "MedicationStatement": ResourceMapping(
            Category.MEDICATION,
            code=("medicationCodeableConcept",),
            effective=("effectiveDateTime", "effectivePeriod", "dateAsserted"),
            status="status",
            medication=True,
        ),
        "MedicationRequest": ResourceMapping(
            Category.MEDICATION,
            code=("medicationCodeableConcept",),
            effective=("authoredOn",),
            status="status",
            medication=True,
        ),
        "MedicationAdministration": ResourceMapping(
            Category.MEDICATION,
            code=("medicationCodeableConcept",),
            effective=("effectiveDateTime", "effectivePeriod"),
            status="status",
            medication=True,
        ),
        # A vaccination is a medication given; its CVX (or SNOMED) code says which.
        "Immunization": ResourceMapping(
            Category.MEDICATION,
            code=("vaccineCode",),
            effective=("occurrenceDateTime", "recorded"),
            status="status",
            subject="patient",
        ),
        "Encounter": ResourceMapping(
            Category.ENCOUNTER,
            code=("type", "class"),
            effective=("period",),
            status="status",
        ),
        "DiagnosticReport": ResourceMapping(
            Category.DOCUMENT,
            code=("code",),
            effective=("effectiveDateTime", "effectivePeriod", "issued"),
            status="status",
        ),
        "DocumentReference": ResourceMapping(
            Category.DOCUMENT,
            code=("type",),
            effective=("date",),
            status="status",
        ),
        # A device used by or implanted in the patient (pacemaker, CPAP, dialysis machine):
        # its type feeds the emergency summary (implanted cardiac devices).
        "Device": ResourceMapping(
            Category.DOCUMENT,
            code=("type",),
            effective=("manufactureDate",),
            status="status",
            subject="patient",
            code_optional=True,
        ),
        "CarePlan": ResourceMapping(
            Category.DOCUMENT,
            code=("category",),
            effective=("period", "created"),
            status="status",
            code_optional=True,
        ),
    }
)


def parse_fhir(content: bytes) -> ParsedMessage | ParsedBatch:
    """Parse and validate a FHIR R4 JSON message; raises InvalidMessage listing every problem."""
    problems = Problems(REASON)
    document = _load_json(content)
    if not isinstance(document, dict):
        raise InvalidMessage(REASON, [("content", "must be a JSON object: a resource or Bundle")])
    resource_type = document.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidMessage(REASON, [("content.resourceType", "is required")])
    if resource_type == "Bundle":
        return _parse_bundle(document, problems)
    if resource_type in DIRECTORY_RESOURCE_TYPES:
        return _message(None, [_Located("content", document)], problems)
    return _parse_single(document, resource_type, problems)


def parse_fhir_ndjson(content: bytes) -> ParsedMessage | ParsedBatch:
    """Parse FHIR Bulk Data NDJSON (one resource per line) as a collection Bundle would be."""
    problems = Problems(REASON)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidMessage(REASON, [("content", "must be UTF-8 encoded NDJSON")]) from None
    located: list[_Located] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        path = f"content.line[{number}]"
        try:
            resource = _load_json(line.encode(), path)
        except InvalidMessage as invalid:
            for where, description in invalid.violations:
                problems.add(where, description)
            continue
        if not isinstance(resource, dict):
            problems.add(path, "must be a JSON object: a FHIR resource")
            continue
        located.append(_Located(path, resource, _relative_url(resource)))
    if not located and not problems:
        problems.add("content", "must hold at least one resource")
    problems.raise_if_any()
    return _message(None, located, problems, several_patients=True)


def _load_json(content: bytes, path: str = "content") -> Any:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidMessage(REASON, [(path, "must be UTF-8 encoded JSON")]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # Line and column locate the error without quoting the content.
        where = f"line {exc.lineno} column {exc.colno}"
        raise InvalidMessage(REASON, [(path, f"is not valid JSON ({where})")]) from None
    except (ValueError, RecursionError):
        raise InvalidMessage(REASON, [(path, "is not valid JSON")]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


@dataclass(frozen=True)
class _Located:
    path: str
    resource: dict[str, Any]
    full_url: str = ""

    @property
    def resource_type(self) -> str:
        value = self.resource.get("resourceType")
        return value if isinstance(value, str) else ""

    @property
    def resource_id(self) -> str:
        value = self.resource.get("id")
        return value if isinstance(value, str) and value else self.full_url


def _relative_url(resource: Mapping[str, Any]) -> str:
    resource_type, resource_id = resource.get("resourceType"), resource.get("id")
    if isinstance(resource_type, str) and isinstance(resource_id, str) and resource_id:
        return f"{resource_type}/{resource_id}"
    return ""


class _Resolver:
    """Finds resources of the message by the references that point at them."""

    def __init__(self, located: Iterable[_Located]) -> None:
        self._by_reference: dict[str, Mapping[str, Any]] = {}
        for item in located:
            for key in (item.full_url, _relative_url(item.resource)):
                if key:
                    self._by_reference.setdefault(key, item.resource)

    def resolve(self, reference: str, holder: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The resource ``reference`` points at (in the message or ``holder.contained``)."""
        if reference.startswith("#"):
            contained = holder.get("contained")
            for item in contained if isinstance(contained, list) else []:
                if isinstance(item, dict) and item.get("id") == reference[1:]:
                    return item
            return None
        found = self._by_reference.get(reference)
        if found is None:
            # Absolute form of a relative reference: https://hospital/fhir/Medication/m1.
            found = self._by_reference.get(reference_key(reference))
        return found


def _parse_bundle(bundle: dict[str, Any], problems: Problems) -> ParsedMessage | ParsedBatch:
    bundle_type = bundle.get("type")
    if bundle_type not in BUNDLE_TYPES:
        problems.add("content.type", f"must be one of {', '.join(sorted(BUNDLE_TYPES))}")
    message_time = None
    if "timestamp" in bundle:
        message_time = _datetime_at(bundle["timestamp"], "content.timestamp", problems)
    entries = bundle.get("entry")
    located: list[_Located] = []
    if not isinstance(entries, list) or not entries:
        problems.add("content.entry", "must be a non-empty list")
        entries = []
    for index, entry in enumerate(entries):
        path = f"content.entry[{index}]"
        if not isinstance(entry, dict):
            problems.add(path, "must be an object")
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            problems.add(f"{path}.resource", "is required")
            continue
        full_url = entry.get("fullUrl")
        located.append(
            _Located(f"{path}.resource", resource, full_url if isinstance(full_url, str) else "")
        )
    return _message(
        message_time,
        located,
        problems,
        patient_required=bool(entries),
        several_patients=bundle_type in SEVERAL_PATIENT_BUNDLE_TYPES,
    )


def _message(
    message_time: Any,
    located: list[_Located],
    problems: Problems,
    *,
    patient_required: bool = True,
    several_patients: bool = False,
) -> ParsedMessage | ParsedBatch:
    """The message of a list of located resources: a patient's, the hospital directory, or
    (``several_patients``) one part per patient when there is more than one Patient."""
    for item in located:
        if not item.resource_type:
            problems.add(f"{item.path}.resourceType", "is required")
    patients = [item for item in located if item.resource_type == "Patient"]
    if not patients:
        if located and all(item.resource_type in DIRECTORY_RESOURCE_TYPES for item in located):
            problems.raise_if_any()
            return _directory_message(located, message_time)
        if patient_required:
            problems.add(
                "content.entry"
                if located and located[0].path.startswith("content.entry")
                else "content",
                "must contain a Patient resource",
            )
    if len(patients) > 1 and several_patients:
        return _batch(message_time, located, problems)
    for extra in patients[1:]:
        problems.add(
            extra.path,
            "a message or document Bundle may describe only one Patient;"
            " send several patients in a batch, transaction or collection Bundle",
        )
    patient = None
    references: frozenset[str] | None = None  # None: no Patient, so nothing to check against
    if patients:
        patient = _patient(patients[0].resource, patients[0].path, problems)
        references = _references_to(patients[0].resource, patients[0].full_url)
    resolver = _Resolver(located)
    clinical: list[ClinicalEntry] = []
    outcomes: list[ResourceOutcome] = []
    directory: list[DirectoryEntry] = []
    for item in located:
        resource_type = item.resource_type
        if resource_type == "Patient" or not resource_type:
            continue
        if _kept_as_no_patients(item, outcomes, directory):
            continue
        if resource_type in RESOURCE_MAPPINGS:
            entry = _clinical(item, references, resolver, problems)
            disposition = Disposition.RECORD
        else:
            entry = document_entry(item.resource, item.path)
            disposition = Disposition.DOCUMENT
        if entry is not None:
            outcomes.append(
                ResourceOutcome(resource_type, item.resource_id, disposition, len(clinical))
            )
            clinical.append(entry)
    problems.raise_if_any()
    assert patient is not None  # no problems means the Patient was found and parsed
    return ParsedMessage(
        patient,
        tuple(clinical),
        message_time,
        outcomes=tuple(outcomes),
        directory=tuple(directory),
    )


def _batch(message_time: Any, located: list[_Located], problems: Problems) -> ParsedBatch:
    """A message of several patients: each patient's resources parsed as a message of their
    own (:func:`~healthbank.contracts.fhir.group_by_patient` says whose each resource is).

    What makes the whole message unusable (a resource that is nobody's, two Patients known
    by the same reference) rejects it; what is wrong inside a patient's part rejects only
    that part.
    """
    groups, nobodys = group_by_patient(
        [item.resource for item in located], [item.full_url for item in located]
    )
    for index in nobodys:
        problems.add(
            located[index].path,
            "refers to none of the message's Patients: in a message of several patients each"
            " resource must name its Patient, or refer to (or be referred to by) one that does",
        )
    known: set[str] = set()
    for group in groups:
        patient = located[group[0]]
        keys = _references_to(patient.resource, patient.full_url)
        if keys & known:
            problems.add(patient.path, "another Patient of the message has the same id or fullUrl")
        known |= keys
    problems.raise_if_any()
    outcomes: list[ResourceOutcome] = []
    directory: list[DirectoryEntry] = []
    for item in located:
        _kept_as_no_patients(item, outcomes, directory)
    parts = []
    for ordinal, group in enumerate(groups, start=1):
        items = [located[index] for index in group]
        try:
            part = _message(message_time, items, Problems(REASON))
        except InvalidMessage as invalid:
            parts.append(PatientPart(ordinal, _part_hash(message_time, items), None, invalid))
            continue
        assert isinstance(part, ParsedMessage)  # one Patient: never a batch
        parts.append(PatientPart(ordinal, _part_hash(message_time, items), part))
    return ParsedBatch(tuple(parts), tuple(outcomes), tuple(directory))


def _kept_as_no_patients(
    item: _Located, outcomes: list[ResourceOutcome], directory: list[DirectoryEntry]
) -> bool:
    """Note the outcome of a resource that is no patient's (the envelope, skipped; the
    hospital's directory, kept there); False for any other resource."""
    if item.resource_type in ENVELOPE_RESOURCE_TYPES:
        reason = "the message envelope, not patient data"
        outcomes.append(
            ResourceOutcome(
                item.resource_type, item.resource_id, Disposition.SKIPPED, reason=reason
            )
        )
        return True
    if item.resource_type in DIRECTORY_RESOURCE_TYPES:
        directory.append(DirectoryEntry(item.resource_type, item.resource_id, item.resource))
        outcomes.append(
            ResourceOutcome(item.resource_type, item.resource_id, Disposition.DIRECTORY)
        )
        return True
    return False


def _part_hash(message_time: Any, items: list[_Located]) -> str:
    """What a part's receipt compares a retry with: its resources and the message's time."""
    content = [message_time.isoformat() if message_time else None]
    content += [[item.full_url, item.resource] for item in items]
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_hex(canonical.encode())


def _directory_message(located: list[_Located], message_time: Any) -> ParsedMessage:
    directory = tuple(
        DirectoryEntry(item.resource_type, item.resource_id, item.resource) for item in located
    )
    outcomes = tuple(
        ResourceOutcome(entry.resource_type, entry.resource_id, Disposition.DIRECTORY)
        for entry in directory
    )
    return ParsedMessage(None, (), message_time, outcomes=outcomes, directory=directory)


def _parse_single(
    resource: dict[str, Any], resource_type: str, problems: Problems
) -> ParsedMessage:
    if resource_type == "Patient":
        patient = _patient(resource, "content", problems)
        problems.raise_if_any()
        assert patient is not None
        return ParsedMessage(patient, ())
    contained = resource.get("contained")
    found = [
        (index, item)
        for index, item in enumerate(contained if isinstance(contained, list) else [])
        if isinstance(item, dict) and item.get("resourceType") == "Patient"
    ]
    if not found:
        raise InvalidMessage(
            REASON,
            [
                (
                    "content",
                    "a single clinical resource must carry its Patient in contained[];"
                    " otherwise send a Bundle with the Patient",
                )
            ],
        )
    index, patient_resource = found[0]
    patient = _patient(patient_resource, f"content.contained[{index}]", problems)
    local_id = patient_resource.get("id")
    references = frozenset({f"#{local_id}"}) if isinstance(local_id, str) else frozenset()
    item = _Located("content", resource)
    resolver = _Resolver(())
    if resource_type in RESOURCE_MAPPINGS:
        entry = _clinical(item, references, resolver, problems)
        disposition = Disposition.RECORD
    else:
        entry = document_entry(resource, "content")
        disposition = Disposition.DOCUMENT
    problems.raise_if_any()
    assert patient is not None and entry is not None
    outcome = ResourceOutcome(resource_type, item.resource_id, disposition, 0)
    return ParsedMessage(patient, (entry,), outcomes=(outcome,))


def _patient(resource: dict[str, Any], path: str, problems: Problems) -> PatientIdentity | None:
    """The identity in a Patient resource; None (with problems recorded) if it is unusable."""
    before = len(problems)
    saw_mrn = False
    paths: dict[str, str] = {"identifiers": f"{path}.identifier"}
    mrn = ""
    national_id = ""
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list) or not identifiers:
        problems.add(f"{path}.identifier", "is required")
        identifiers = []
    for index, identifier in enumerate(identifiers):
        where = f"{path}.identifier[{index}]"
        if not isinstance(identifier, dict):
            problems.add(where, "must be an Identifier object")
            continue
        value = identifier.get("value")
        is_national = identifier.get("system") in NATIONAL_ID_SYSTEMS
        is_mrn = _has_type_code(identifier.get("type"), MR_TYPE_CODE)
        if not (is_national or is_mrn):
            continue
        saw_mrn = saw_mrn or is_mrn
        if not isinstance(value, str) or not value.strip():
            problems.add(f"{where}.value", "is required")
            continue
        if is_national and not national_id:
            try:
                national_id = validate_national_id(value)
            except InvalidNationalId as exc:
                problems.add(f"{where}.value", f"invalid national ID: {exc.reason}")
                continue
            paths["national_id"] = f"{where}.value"
        elif is_mrn and not mrn:
            mrn = value.strip()
            paths["mrn"] = f"{where}.value"
    if identifiers and not saw_mrn:
        problems.add(
            f"{path}.identifier",
            "must include the hospital record number: an identifier whose type has code MR",
        )
    demographics = _demographics(resource, path, problems, paths)
    prior_mrns = tuple(prior for prior in _replaced_mrns(resource) if prior != mrn)
    if prior_mrns:
        paths["prior_mrns"] = f"{path}.link"
    if len(problems) > before:
        return None
    return PatientIdentity(
        mrn, national_id, demographics, paths, prior_mrns=prior_mrns, district=_district(resource)
    )


def _addresses(resource: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The Patient's addresses with their places in ``address``, home addresses first."""
    addresses = resource.get("address")
    found = [
        (index, address)
        for index, address in enumerate(addresses if isinstance(addresses, list) else [])
        if isinstance(address, dict)
    ]
    found.sort(key=lambda item: item[1].get("use") != "home")
    return found


def _district(resource: dict[str, Any]) -> str:
    """The district of the Patient's home address (else its first address with one)."""
    for _, address in _addresses(resource):
        district = address.get("district")
        if isinstance(district, str) and district.strip():
            return district.strip()
    return ""


def _address(resource: dict[str, Any], path: str, paths: dict[str, str]) -> str:
    """The Patient's home address (else its first) as one line: its ``text`` when given,
    else its parts, largest first."""
    for index, address in _addresses(resource):
        text = address.get("text")
        line = address_line(text) if isinstance(text, str) else ""
        if not line:
            lines = address.get("line")
            parts = [address.get(part) for part in ("state", "city", "district")]
            parts += lines if isinstance(lines, list) else []
            line = address_line(*(part for part in parts if isinstance(part, str)))
        if line:
            paths["demographics.address"] = f"{path}.address[{index}]"
            return line
    return ""


def _replaced_mrns(resource: dict[str, Any]) -> list[str]:
    """The hospital's earlier record numbers this Patient replaces (``link`` of type
    ``replaces`` whose ``other`` names an identifier of type MR): identity merges their
    persons into this one (ADR 33). Other links, and ones naming the earlier record only by
    a literal reference, say nothing identity can act on and are left as they are."""
    links = resource.get("link")
    prior: list[str] = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("type") != "replaces":
            continue
        other = link.get("other")
        identifier = other.get("identifier") if isinstance(other, dict) else None
        if not isinstance(identifier, dict):
            continue
        value = identifier.get("value")
        is_mrn = _has_type_code(identifier.get("type"), MR_TYPE_CODE)
        if is_mrn and isinstance(value, str) and value.strip():
            prior.append(value.strip())
    return list(dict.fromkeys(prior))


def _has_type_code(concept: Any, code: str) -> bool:
    if not isinstance(concept, dict):
        return False
    codings = concept.get("coding")
    return isinstance(codings, list) and any(
        isinstance(coding, dict) and coding.get("code") == code for coding in codings
    )


# HumanName.use, the name matching should compare first: the official one, the one in use,
# one without a use; a former (old, maiden) or anonymous name only when there is no other.
_NAME_USE_RANK = {"official": 0, "usual": 1, None: 2, "temp": 3, "nickname": 4}


def _name_rank(name: Any) -> int:
    if not isinstance(name, dict):
        return 9
    return _NAME_USE_RANK.get(name.get("use"), 5)


def _demographics(
    resource: dict[str, Any], path: str, problems: Problems, paths: dict[str, str]
) -> Demographics:
    family = given = birth_date = sex = phone = ""
    names = resource.get("name")
    if isinstance(names, list) and names:
        index = min(range(len(names)), key=lambda i: (_name_rank(names[i]), i))
        chosen = names[index]
        if isinstance(chosen, dict):
            if isinstance(chosen.get("family"), str):
                family = chosen["family"]
                paths["demographics.family_name"] = f"{path}.name[{index}].family"
            givens = chosen.get("given")
            if isinstance(givens, list):
                given = " ".join(part for part in givens if isinstance(part, str))
                paths["demographics.given_name"] = f"{path}.name[{index}].given"
            text = chosen.get("text")
            if not (family.strip() or given.strip()) and isinstance(text, str) and text.strip():
                # Only the whole name (common for Chinese names): matching needs its parts.
                family, given = full_name_parts(text)
                paths["demographics.family_name"] = f"{path}.name[{index}].text"
                paths["demographics.given_name"] = f"{path}.name[{index}].text"
    elif "name" in resource:
        problems.add(f"{path}.name", "must be a list of HumanName")
    if "birthDate" in resource:
        value = resource["birthDate"]
        if _is_full_date(value):
            birth_date = value
            paths["demographics.birth_date"] = f"{path}.birthDate"
        elif not (isinstance(value, str) and _is_partial_date(value)):
            problems.add(f"{path}.birthDate", "must be a FHIR date YYYY[-MM[-DD]]")
    if "gender" in resource:
        if resource["gender"] in _GENDERS:
            sex = resource["gender"]
            paths["demographics.sex"] = f"{path}.gender"
        else:
            problems.add(f"{path}.gender", "must be one of female, male, other, unknown")
    telecoms = resource.get("telecom")
    if isinstance(telecoms, list):
        for index, telecom in enumerate(telecoms):
            if isinstance(telecom, dict) and telecom.get("system") == "phone":
                if isinstance(telecom.get("value"), str):
                    phone = telecom["value"]
                    paths["demographics.phone"] = f"{path}.telecom[{index}].value"
                break
    address = _address(resource, path, paths)
    return Demographics(family, given, birth_date, sex, phone, address)


def _is_full_date(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        parse_fhir_datetime(value)
    except ValueError:
        return False
    return True


def _is_partial_date(value: str) -> bool:
    if len(value) not in (4, 7):
        return False
    try:
        parse_fhir_datetime(value)
    except ValueError:
        return False
    return True


def _references_to(patient: dict[str, Any], full_url: str) -> frozenset[str]:
    """The reference strings that point at ``patient`` inside its Bundle."""
    references = {full_url} if full_url else set()
    patient_id = patient.get("id")
    if isinstance(patient_id, str) and patient_id:
        references.add(f"Patient/{patient_id}")
    return frozenset(references)


def _refers_to_patient(reference: str, references: frozenset[str]) -> bool:
    if reference in references:
        return True
    # Absolute form of a relative reference: https://hospital/fhir/Patient/p1.
    return any(ref.startswith("Patient/") and reference.endswith("/" + ref) for ref in references)


def _clinical(
    item: _Located, references: frozenset[str] | None, resolver: _Resolver, problems: Problems
) -> ClinicalEntry | None:
    mapping = RESOURCE_MAPPINGS[item.resource_type]
    subject = item.resource.get(mapping.subject)
    subject_path = f"{item.path}.{mapping.subject}"
    if subject is not None and references is not None:
        if not isinstance(subject, dict):
            problems.add(subject_path, "must be a Reference")
        elif isinstance(subject.get("reference"), str) and not _refers_to_patient(
            subject["reference"], references
        ):
            problems.add(f"{subject_path}.reference", "must refer to the message's Patient")
    return entry_from_resource(item.resource, item.path, problems, resolver)


def entry_from_resource(
    resource: Mapping[str, Any],
    path: str,
    problems: Problems,
    resolver: _Resolver | None = None,
) -> ClinicalEntry | None:
    """The canonical entry of one clinical FHIR resource, via :data:`RESOURCE_MAPPINGS`.

    ``path`` is where the resource sits in the message, for problem paths; ``resolver``
    finds the Medication a ``medicationReference`` points at. Returns None (with problems
    recorded) when the resource cannot become a record.
    """
    resource_type = resource.get("resourceType")
    mapping = RESOURCE_MAPPINGS.get(resource_type) if isinstance(resource_type, str) else None
    if mapping is None:
        problems.add(
            f"{path}.resourceType", "must be one of " + ", ".join(sorted(RESOURCE_MAPPINGS))
        )
        return None
    assert isinstance(resource_type, str)
    code = _code(resource, resource_type, mapping, path, problems, resolver or _Resolver(()))
    effective = None
    for name in mapping.effective:
        if name in resource:
            effective = _datetime_at(resource[name], f"{path}.{name}", problems)
            break
    _check_quantity(resource, path, problems)
    if code is None:
        return None
    return ClinicalEntry(
        category=mapping.category,
        code=code,
        effective_time=effective,
        status=_status(resource.get(mapping.status)),
        resource=resource,
        path=path,
        severity=_severity(resource.get(mapping.severity)) if mapping.severity else "",
        source_version=_version(resource),
    )


def document_entry(resource: Mapping[str, Any], path: str) -> ClinicalEntry:
    """A DOCUMENT record of a resource of any type; never fails (nothing here is rejected).

    The code is the first of :data:`_DOCUMENT_CODE_ELEMENTS` that is a usable concept, else
    the resource type; the time the first of :data:`_DOCUMENT_TIME_ELEMENTS` that parses.
    """
    resource_type = str(resource.get("resourceType"))
    code = None
    for name in _DOCUMENT_CODE_ELEMENTS:
        if name in resource:
            code = _concept(resource[name], path, Problems(REASON))
            if code is not None:
                break
    effective = None
    for name in _DOCUMENT_TIME_ELEMENTS:
        if name in resource:
            effective = _datetime_at(resource[name], path, Problems(REASON))
            if effective is not None:
                break
    status = resource.get("status", resource.get("clinicalStatus"))
    return ClinicalEntry(
        category=Category.DOCUMENT,
        code=code or Coding(RESOURCE_TYPE_SYSTEM, resource_type, resource_type),
        effective_time=effective,
        status=_status(status),
        resource=resource,
        path=path,
        source_version=_version(resource),
    )


def _version(resource: Mapping[str, Any]) -> str:
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else ""


def _code(
    resource: Mapping[str, Any],
    resource_type: str,
    mapping: ResourceMapping,
    path: str,
    problems: Problems,
    resolver: _Resolver,
) -> Coding | None:
    for name in mapping.code:
        if name in resource:
            return _concept(resource[name], f"{path}.{name}", problems)
    if mapping.medication and "medicationReference" in resource:
        return _medication_reference(resource, f"{path}.medicationReference", problems, resolver)
    if mapping.code_optional:
        return Coding(RESOURCE_TYPE_SYSTEM, resource_type, resource_type)
    problems.add(f"{path}.{mapping.code[0]}", "is required")
    return None


def _medication_reference(
    resource: Mapping[str, Any], path: str, problems: Problems, resolver: _Resolver
) -> Coding | None:
    """The code of the Medication a medicationReference points at; its display if unresolved."""
    reference = resource["medicationReference"]
    if not isinstance(reference, dict):
        problems.add(path, "must be a Reference")
        return None
    target = reference.get("reference")
    medication = resolver.resolve(target, resource) if isinstance(target, str) else None
    if (
        medication is not None
        and medication.get("resourceType") == "Medication"
        and "code" in medication
    ):
        return _concept(medication["code"], f"{path}.reference(code)", problems)
    display = reference.get("display")
    # Kept as the reference it is: the stored resource still names the medication.
    return Coding("", "", display.strip() if isinstance(display, str) else "")


def _concept(value: Any, path: str, problems: Problems) -> Coding | None:
    """The first coding of a CodeableConcept, Coding, or list of either."""
    if isinstance(value, list):
        if not value:
            problems.add(path, "must not be empty")
            return None
        return _concept(value[0], f"{path}[0]", problems)
    if not isinstance(value, dict):
        problems.add(path, "must be a CodeableConcept or Coding")
        return None
    if "coding" not in value and ("system" in value or "code" in value):
        return _coding(value, path, problems)
    codings = value.get("coding")
    if isinstance(codings, list) and codings:
        return _coding(codings[0], f"{path}.coding[0]", problems)
    text = value.get("text")
    if isinstance(text, str) and text.strip():
        return Coding("", "", text.strip())
    problems.add(path, "must have a coding (system and code) or text")
    return None


def _coding(value: Any, path: str, problems: Problems) -> Coding | None:
    if not isinstance(value, dict):
        problems.add(path, "must be a Coding")
        return None
    system, code, display = value.get("system"), value.get("code"), value.get("display")
    ok = True
    if not isinstance(system, str) or not system.strip():
        problems.add(f"{path}.system", "is required")
        ok = False
    if not isinstance(code, str) or not code.strip():
        problems.add(f"{path}.code", "is required")
        ok = False
    if not ok:
        return None
    assert isinstance(system, str) and isinstance(code, str)
    return Coding(system.strip(), code.strip(), display if isinstance(display, str) else "")


def _datetime_at(value: Any, path: str, problems: Problems) -> Any:
    if isinstance(value, dict):  # a Period: its start, else its end
        bound = "start" if "start" in value else "end" if "end" in value else ""
        if not bound:
            problems.add(path, "must have a start or an end")
            return None
        return _datetime_at(value[bound], f"{path}.{bound}", problems)
    try:
        return parse_fhir_datetime(value)
    except ValueError as exc:
        problems.add(path, str(exc))
        return None


def _check_quantity(resource: Mapping[str, Any], path: str, problems: Problems) -> None:
    if "valueQuantity" not in resource:
        return
    quantity = resource["valueQuantity"]
    if not isinstance(quantity, dict):
        problems.add(f"{path}.valueQuantity", "must be a Quantity")
        return
    value = quantity.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        problems.add(f"{path}.valueQuantity.value", "must be a number")
    if "unit" in quantity and not isinstance(quantity["unit"], str):
        problems.add(f"{path}.valueQuantity.unit", "must be a string")


def _status(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        codings = value.get("coding")
        if isinstance(codings, list) and codings and isinstance(codings[0], dict):
            code = codings[0].get("code")
            if isinstance(code, str) and code:
                return code
        if isinstance(value.get("text"), str) and value["text"]:
            return str(value["text"])
    return "unknown"


def _severity(value: Any) -> str:
    """Criticality code or severity text, lower case ("high", "severe"); empty if absent."""
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, dict):
        if isinstance(value.get("text"), str) and value["text"].strip():
            return str(value["text"]).strip().lower()
        codings = value.get("coding")
        if isinstance(codings, list) and codings and isinstance(codings[0], dict):
            for key in ("display", "code"):
                text = codings[0].get(key)
                if isinstance(text, str) and text.strip():
                    return text.strip().lower()
    return ""
