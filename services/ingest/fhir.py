"""FHIR R4 JSON: a Bundle or a single resource into a :class:`ParsedMessage`.

Accepted input:

- a Bundle of type transaction, batch, collection or message with exactly one Patient and
  any number of clinical resources;
- a single Patient (a demographics update: no records);
- a single clinical resource carrying its Patient in ``contained``.

The Patient gives the identity: the national ID is the identifier whose system is one of
:data:`NATIONAL_ID_SYSTEMS`, the hospital record number (MRN, required) the identifier whose
``type`` has a coding with code ``MR``; name (``official`` use first), birthDate, gender and
the first ``phone`` telecom become the demographics.

Each clinical resource becomes one record through :data:`RESOURCE_MAPPINGS`, one row per
resource type: its category, the element holding the main code (first coding), the date
elements that give the effective time (first present wins), the status element, the element
referring to the patient and, for the emergency summary, the severity element. HL7 v2 and
DICOM input is mapped to FHIR resources and goes through the same table
(:func:`entry_from_resource`), so every format yields the same records.

Resource types that are neither clinical nor Patient:

- the usual context of a message (:data:`CONTEXT_RESOURCE_TYPES`: MessageHeader, Practitioner,
  Organization ...) is accepted and not stored: it is not about the patient's health;
- any other type is **rejected** (``...resource.resourceType``): the data center is the
  hospitals' backup, and silently dropping a resource the hospital meant to store would lose
  data without anyone noticing. A rejection tells the hospital to split the message or ask
  for the type to be mapped.

A clinical resource without any date element takes the Bundle's ``timestamp``, else the time
of ingest, as its effective time. A coding without a system or code is rejected; a concept
with only ``text`` is accepted as a text-only concept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from healthbank.contracts.natid import InvalidNationalId, validate_national_id
from services.ingest.model import (
    MR_TYPE_CODE,
    Category,
    ClinicalEntry,
    Coding,
    Demographics,
    InvalidMessage,
    ParsedMessage,
    PatientIdentity,
    Problems,
    parse_fhir_datetime,
)

REASON = "INVALID_FHIR"

NATIONAL_ID_SYSTEMS = frozenset(
    {"urn:oid:2.16.156.10011.1.1", "http://healthbank.io/fhir/national-id"}
)
"""Identifier systems of the resident identity number (the OID is the Chinese national one)."""

BUNDLE_TYPES = frozenset({"transaction", "batch", "collection", "message"})

CONTEXT_RESOURCE_TYPES = frozenset(
    {
        "MessageHeader",
        "Provenance",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Device",
        "Specimen",
        "Medication",
        "RelatedPerson",
    }
)
"""Resources that give a message context; accepted, not stored as records."""

_GENDERS = frozenset({"male", "female", "other", "unknown"})


@dataclass(frozen=True)
class ResourceMapping:
    """How one FHIR resource type becomes a canonical record.

    ``code`` and ``effective`` list element names tried in order (the first present wins); a
    list-valued element contributes its first item. Effective elements may be a dateTime,
    an instant or a Period (its start). ``status`` and ``severity`` elements may be a code
    string or a CodeableConcept.
    """

    category: Category
    code: tuple[str, ...]
    effective: tuple[str, ...]
    status: str
    subject: str = "subject"
    severity: str = ""


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
        ),
        "MedicationStatement": ResourceMapping(
            Category.MEDICATION,
            code=("medicationCodeableConcept",),
            effective=("effectiveDateTime", "effectivePeriod", "dateAsserted"),
            status="status",
        ),
        "MedicationRequest": ResourceMapping(
            Category.MEDICATION,
            code=("medicationCodeableConcept",),
            effective=("authoredOn",),
            status="status",
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
    }
)


def parse_fhir(content: bytes) -> ParsedMessage:
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
    return _parse_single(document, resource_type, problems)


def _load_json(content: bytes) -> Any:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidMessage(REASON, [("content", "must be UTF-8 encoded JSON")]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # Line and column locate the error without quoting the content.
        where = f"line {exc.lineno} column {exc.colno}"
        raise InvalidMessage(REASON, [("content", f"is not valid JSON ({where})")]) from None
    except (ValueError, RecursionError):
        raise InvalidMessage(REASON, [("content", "is not valid JSON")]) from None


def _reject_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


@dataclass(frozen=True)
class _Located:
    path: str
    resource: dict[str, Any]
    full_url: str = ""


def _parse_bundle(bundle: dict[str, Any], problems: Problems) -> ParsedMessage:
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
    patients = [item for item in located if item.resource.get("resourceType") == "Patient"]
    if not patients and entries:
        problems.add("content.entry", "must contain a Patient resource")
    for extra in patients[1:]:
        problems.add(extra.path, "a message may describe only one Patient")
    patient = None
    references: frozenset[str] | None = None  # None: no Patient, so nothing to check against
    if patients:
        patient = _patient(patients[0].resource, patients[0].path, problems)
        references = _references_to(patients[0].resource, patients[0].full_url)
    clinical: list[ClinicalEntry] = []
    for item in located:
        if item.resource.get("resourceType") == "Patient":
            continue
        entry = _clinical(item, references, problems)
        if entry is not None:
            clinical.append(entry)
    problems.raise_if_any()
    assert patient is not None  # no problems means the Patient was found and parsed
    return ParsedMessage(patient, tuple(clinical), message_time)


def _parse_single(
    resource: dict[str, Any], resource_type: str, problems: Problems
) -> ParsedMessage:
    if resource_type == "Patient":
        patient = _patient(resource, "content", problems)
        problems.raise_if_any()
        assert patient is not None
        return ParsedMessage(patient, ())
    if resource_type not in RESOURCE_MAPPINGS:
        raise InvalidMessage(REASON, [("content.resourceType", _unsupported_type())])
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
    entry = _clinical(_Located("content", resource), references, problems)
    problems.raise_if_any()
    assert patient is not None and entry is not None
    return ParsedMessage(patient, (entry,))


def _unsupported_type() -> str:
    return (
        "unsupported resource type; clinical types are "
        + ", ".join(sorted(RESOURCE_MAPPINGS))
        + " (plus Patient and message context such as MessageHeader)"
    )


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
    if len(problems) > before:
        return None
    return PatientIdentity(mrn, national_id, demographics, paths)


def _has_type_code(concept: Any, code: str) -> bool:
    if not isinstance(concept, dict):
        return False
    codings = concept.get("coding")
    return isinstance(codings, list) and any(
        isinstance(coding, dict) and coding.get("code") == code for coding in codings
    )


def _demographics(
    resource: dict[str, Any], path: str, problems: Problems, paths: dict[str, str]
) -> Demographics:
    family = given = birth_date = sex = phone = ""
    names = resource.get("name")
    if isinstance(names, list) and names:
        official = [n for n in names if isinstance(n, dict) and n.get("use") == "official"]
        chosen = official[0] if official else names[0]
        index = names.index(chosen)
        if isinstance(chosen, dict):
            if isinstance(chosen.get("family"), str):
                family = chosen["family"]
                paths["demographics.family_name"] = f"{path}.name[{index}].family"
            givens = chosen.get("given")
            if isinstance(givens, list):
                given = " ".join(part for part in givens if isinstance(part, str))
                paths["demographics.given_name"] = f"{path}.name[{index}].given"
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
    return Demographics(family, given, birth_date, sex, phone)


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
    item: _Located, references: frozenset[str] | None, problems: Problems
) -> ClinicalEntry | None:
    resource_type = item.resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        problems.add(f"{item.path}.resourceType", "is required")
        return None
    if resource_type in CONTEXT_RESOURCE_TYPES:
        return None
    if resource_type not in RESOURCE_MAPPINGS:
        problems.add(f"{item.path}.resourceType", _unsupported_type())
        return None
    mapping = RESOURCE_MAPPINGS[resource_type]
    subject = item.resource.get(mapping.subject)
    subject_path = f"{item.path}.{mapping.subject}"
    if subject is not None and references is not None:
        if not isinstance(subject, dict):
            problems.add(subject_path, "must be a Reference")
        elif isinstance(subject.get("reference"), str) and not _refers_to_patient(
            subject["reference"], references
        ):
            problems.add(f"{subject_path}.reference", "must refer to the message's Patient")
    return entry_from_resource(item.resource, item.path, problems)


def entry_from_resource(
    resource: Mapping[str, Any], path: str, problems: Problems
) -> ClinicalEntry | None:
    """The canonical entry of one clinical FHIR resource, via :data:`RESOURCE_MAPPINGS`.

    ``path`` is where the resource sits in the message, for problem paths. Returns None (with
    problems recorded) when the resource cannot become a record.
    """
    resource_type = resource.get("resourceType")
    mapping = RESOURCE_MAPPINGS.get(resource_type) if isinstance(resource_type, str) else None
    if mapping is None:
        problems.add(f"{path}.resourceType", _unsupported_type())
        return None
    code = _code(resource, mapping, path, problems)
    effective = None
    for name in mapping.effective:
        if name in resource:
            effective = _datetime_at(resource[name], f"{path}.{name}", problems)
            break
    _check_quantity(resource, path, problems)
    if code is None:
        return None
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return ClinicalEntry(
        category=mapping.category,
        code=code,
        effective_time=effective,
        status=_status(resource.get(mapping.status)),
        resource=resource,
        path=path,
        severity=_severity(resource.get(mapping.severity)) if mapping.severity else "",
        source_version=version if isinstance(version, str) else "",
    )


def _code(
    resource: Mapping[str, Any], mapping: ResourceMapping, path: str, problems: Problems
) -> Coding | None:
    for name in mapping.code:
        if name in resource:
            return _concept(resource[name], f"{path}.{name}", problems)
    problems.add(f"{path}.{mapping.code[0]}", "is required")
    return None


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
