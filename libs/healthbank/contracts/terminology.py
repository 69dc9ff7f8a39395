"""Code systems: one canonical URI per terminology, whatever name a hospital used for it.

FHIR names a code system by URI (``http://snomed.info/sct``), HL7 v2 by a table 0396
mnemonic in the coding-system component (``SCT``, ``I10``, ``LN``), and real senders use
variants of both (``http://hl7.org/fhir/sid/icd-10-cm``, ``ICD10``, ``RXN``). Ingest stores
the system as the hospital sent it (the record must come back identical); readers that apply
rules to codes (the emergency value sets) ask :func:`canonical_system` which terminology a
stored system names, and HL7 v2 parsing asks :func:`system_for_hl7_name` which URI to record
in the FHIR resource it builds.

Pure data and functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ATC",
    "CVX",
    "ICD9",
    "ICD10",
    "ICD10_CN",
    "ICD10_PCS",
    "LOINC",
    "RXNORM",
    "SNOMED_CT",
    "TERMINOLOGIES",
    "Terminology",
    "canonical_system",
    "is_system",
    "system_for_hl7_name",
    "terminology_of",
]


@dataclass(frozen=True)
class Terminology:
    """A code system: its canonical FHIR URI, a short title, and every alias it goes by.

    ``uris`` are FHIR system URIs (and OIDs as ``urn:oid:``) meaning this system;
    ``hl7_names`` are HL7 v2 coding-system names (table 0396 and common variants), matched
    case-insensitively.
    """

    uri: str
    title: str
    uris: frozenset[str]
    hl7_names: frozenset[str]


SNOMED_CT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CN = "urn:oid:2.16.156.10011.2.3.3.11"
ICD10_PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ATC = "http://www.whocc.no/atc"

TERMINOLOGIES: tuple[Terminology, ...] = (
    Terminology(
        SNOMED_CT,
        "SNOMED CT",
        frozenset({SNOMED_CT, "urn:oid:2.16.840.1.113883.6.96", "http://snomed.info/sct/"}),
        frozenset({"SCT", "SNM", "SNOMED", "SNOMEDCT", "SNOMED-CT", "SNM3", "99SCT"}),
    ),
    # ICD-10 and its clinical modifications share stems: WHO, US (CM), Dutch, German.
    Terminology(
        ICD10,
        "ICD-10",
        frozenset(
            {
                ICD10,
                "http://hl7.org/fhir/sid/icd-10-cm",
                "http://hl7.org/fhir/sid/icd-10-nl",
                "http://hl7.org/fhir/sid/icd-10-de",
                "urn:oid:2.16.840.1.113883.6.3",
                "urn:oid:2.16.840.1.113883.6.90",
            }
        ),
        frozenset({"I10", "I10C", "ICD10", "ICD-10", "ICD10CM", "ICD-10-CM"}),
    ),
    # The Chinese national edition (GB/T 14396, national clinical version 2.0).
    Terminology(
        ICD10_CN,
        "ICD-10 (China)",
        frozenset({ICD10_CN, "http://healthbank.io/fhir/icd-10-cn"}),
        frozenset({"ICD10CN", "ICD-10-CN", "I10CN"}),
    ),
    Terminology(
        ICD10_PCS,
        "ICD-10-PCS",
        frozenset(
            {
                ICD10_PCS,
                "http://www.cms.gov/Medicare/Coding/ICD10/",
                "urn:oid:2.16.840.1.113883.6.4",
            }
        ),
        frozenset({"I10P", "ICD10PCS", "ICD-10-PCS"}),
    ),
    Terminology(
        ICD9,
        "ICD-9-CM",
        frozenset(
            {
                ICD9,
                "http://hl7.org/fhir/sid/icd-9",
                "urn:oid:2.16.840.1.113883.6.103",
                "urn:oid:2.16.840.1.113883.6.104",
                "urn:oid:2.16.840.1.113883.6.42",
            }
        ),
        frozenset({"I9", "I9C", "I9CM", "I9CDX", "I9CP", "ICD9", "ICD-9", "ICD9CM", "ICD-9-CM"}),
    ),
    Terminology(
        LOINC,
        "LOINC",
        frozenset({LOINC, "urn:oid:2.16.840.1.113883.6.1"}),
        frozenset({"LN", "LNC", "LOINC"}),
    ),
    Terminology(
        RXNORM,
        "RxNorm",
        frozenset({RXNORM, "urn:oid:2.16.840.1.113883.6.88"}),
        frozenset({"RX", "RXN", "RXNORM"}),
    ),
    Terminology(
        CVX,
        "CVX",
        frozenset({CVX, "urn:oid:2.16.840.1.113883.12.292"}),
        frozenset({"CVX", "HL70292"}),
    ),
    Terminology(
        ATC,
        "ATC",
        frozenset({ATC, "urn:oid:2.16.840.1.113883.6.73"}),
        frozenset({"ATC", "WC"}),
    ),
)
"""Every terminology recognised; canonical URIs first in each alias set."""

_BY_URI: Mapping[str, Terminology] = MappingProxyType(
    {uri: terminology for terminology in TERMINOLOGIES for uri in terminology.uris}
)
_BY_HL7_NAME: Mapping[str, Terminology] = MappingProxyType(
    {name: terminology for terminology in TERMINOLOGIES for name in terminology.hl7_names}
)


def terminology_of(system: str) -> Terminology | None:
    """The terminology a FHIR system URI or an HL7 v2 coding-system name means, or None."""
    name = system.strip()
    found = _BY_URI.get(name) or _BY_URI.get(name.rstrip("/"))
    if found is None:
        found = _BY_HL7_NAME.get(name.upper())
    return found


def canonical_system(system: str) -> str:
    """The canonical URI of a recognised system; any other system comes back unchanged."""
    found = terminology_of(system)
    return found.uri if found is not None else system


def system_for_hl7_name(name: str) -> str | None:
    """The canonical FHIR URI of an HL7 v2 coding-system name (``SCT`` → SNOMED CT), or None."""
    found = _BY_HL7_NAME.get(name.strip().upper())
    return found.uri if found is not None else None


def is_system(system: str, canonical_uri: str) -> bool:
    """Tell whether ``system`` (URI or HL7 v2 name) names the terminology ``canonical_uri``."""
    return canonical_system(system) == canonical_uri
