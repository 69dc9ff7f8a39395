"""FHIR R4 facts that the ingest service and the bulk loader share."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["DIRECTORY_RESOURCE_TYPES", "PATIENT_ELEMENTS", "group_by_patient", "reference_key"]

DIRECTORY_RESOURCE_TYPES = frozenset(
    {
        "Organization",
        "OrganizationAffiliation",
        "Practitioner",
        "PractitionerRole",
        "Location",
        "HealthcareService",
        "Endpoint",
    }
)
"""Resources describing a hospital, not a patient: stored as the hospital's directory (and
sent by the loader as one message of their own)."""

PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
"""Elements by which a clinical resource names the patient it is about."""


def reference_key(reference: str) -> str:
    """A reference as resources are looked up by: ``urn:`` and ``#local`` ones as they are,
    any other (relative or absolute URL) as its last ``Type/id``."""
    if reference.startswith(("urn:", "#")) or "/" not in reference:
        return reference
    return "/".join(reference.rsplit("/", 2)[-2:])


def group_by_patient(
    resources: Sequence[Mapping[str, Any]], full_urls: Sequence[str]
) -> tuple[list[list[int]], list[int]]:
    """Whose each resource of a message (or load) of several patients is.

    ``full_urls[i]`` is resource i's Bundle ``fullUrl`` ("" if none); a resource is also
    known by its ``Type/id``. Returns, per Patient in order, the indices of its resources
    (the Patient first, then the others in order), and the indices of resources that are
    nobody's. A resource is a patient's when it names the patient (:data:`PATIENT_ELEMENTS`);
    else (a Provenance, a Medication) it is the patient's of every resource it refers to,
    else of every resource that refers to it, so a Medication two patients' prescriptions
    share goes with each. Directory resources (:data:`DIRECTORY_RESOURCE_TYPES`) are nobody's
    and not listed: they are the hospital's.
    """
    keys = [_keys(resource, url) for resource, url in zip(resources, full_urls, strict=True)]
    patients = [i for i, r in enumerate(resources) if r.get("resourceType") == "Patient"]
    owner_of_key: dict[str, int] = {}
    for patient in patients:
        for key in keys[patient]:
            owner_of_key.setdefault(key, patient)
    owners: list[set[int]] = [set() for _ in resources]
    clinical = []
    for i, resource in enumerate(resources):
        kind = resource.get("resourceType")
        if kind == "Patient":
            owners[i].add(i)
        elif kind not in DIRECTORY_RESOURCE_TYPES:
            clinical.append(i)
            owner = _named_patient(resource, owner_of_key)
            if owner is not None:
                owners[i].add(owner)
    refers_to = [{reference_key(ref) for ref in _references(r)} for r in resources]
    # Owners so far, by every key their resource is known by.
    owners_of_key: dict[str, set[int]] = {}
    for i, found in enumerate(owners):
        for key in keys[i]:
            owners_of_key.setdefault(key, set()).update(found)
    unnamed = [i for i in clinical if not owners[i]]
    for i in unnamed:
        for key in refers_to[i]:
            owners[i].update(owners_of_key.get(key, ()))
    referrers: dict[str, list[int]] = {}
    for j, references in enumerate(refers_to):
        for key in references:
            referrers.setdefault(key, []).append(j)
    for i in unnamed:
        if not owners[i]:  # referred to by others instead: a Medication, a Substance
            for key in keys[i]:
                for j in referrers.get(key, ()):
                    owners[i].update(owners[j])
    groups = [[patient] for patient in patients]
    position = {patient: n for n, patient in enumerate(patients)}
    for i in clinical:
        for owner in sorted(owners[i]):
            groups[position[owner]].append(i)
    return groups, [i for i in clinical if not owners[i]]


def _keys(resource: Mapping[str, Any], full_url: str) -> frozenset[str]:
    keys = {reference_key(full_url)} if full_url else set()
    kind, resource_id = resource.get("resourceType"), resource.get("id")
    if isinstance(kind, str) and isinstance(resource_id, str) and resource_id:
        keys.add(f"{kind}/{resource_id}")
    return frozenset(keys)


def _named_patient(resource: Mapping[str, Any], owner_of_key: Mapping[str, int]) -> int | None:
    for element in PATIENT_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            owner = owner_of_key.get(reference_key(value["reference"]))
            if owner is not None:
                return owner
    return None


def _references(value: object) -> Iterator[str]:
    """Every ``reference`` string inside a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)
