"""FHIR R4 facts that the ingest service and the bulk loader share."""

from __future__ import annotations

__all__ = ["DIRECTORY_RESOURCE_TYPES"]

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
