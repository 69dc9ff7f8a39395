"""Code systems recognised by FHIR URI and by HL7 v2 coding-system name."""

from __future__ import annotations

import pytest

from healthbank.contracts import terminology
from healthbank.contracts.terminology import canonical_system, is_system, system_for_hl7_name


@pytest.mark.parametrize(
    ("name", "uri"),
    [
        ("SCT", terminology.SNOMED_CT),
        ("sct", terminology.SNOMED_CT),
        ("SNM", terminology.SNOMED_CT),
        ("I10", terminology.ICD10),
        ("I10C", terminology.ICD10),
        ("ICD10CN", terminology.ICD10_CN),
        ("I9", terminology.ICD9),
        ("I9CM", terminology.ICD9),
        ("I9C", terminology.ICD9),
        ("LN", terminology.LOINC),
        ("RX", terminology.RXNORM),
        ("RXN", terminology.RXNORM),
        ("CVX", terminology.CVX),
        ("ATC", terminology.ATC),
        ("I10P", terminology.ICD10_PCS),
    ],
)
def test_hl7_v2_names_map_to_canonical_uris(name: str, uri: str) -> None:
    assert system_for_hl7_name(name) == uri
    assert canonical_system(name) == uri


@pytest.mark.parametrize(
    ("system", "uri"),
    [
        ("http://snomed.info/sct", terminology.SNOMED_CT),
        ("urn:oid:2.16.840.1.113883.6.96", terminology.SNOMED_CT),
        ("http://hl7.org/fhir/sid/icd-10-cm", terminology.ICD10),
        ("http://hl7.org/fhir/sid/icd-10", terminology.ICD10),
        ("http://hl7.org/fhir/sid/icd-9-cm", terminology.ICD9),
        ("http://loinc.org", terminology.LOINC),
        ("http://www.nlm.nih.gov/research/umls/rxnorm", terminology.RXNORM),
        ("http://hl7.org/fhir/sid/cvx", terminology.CVX),
        ("http://www.whocc.no/atc", terminology.ATC),
    ],
)
def test_fhir_uris_and_oids_map_to_canonical_uris(system: str, uri: str) -> None:
    assert canonical_system(system) == uri
    assert is_system(system, uri)


def test_unknown_systems_are_kept_as_they_are() -> None:
    assert canonical_system("http://hospital-a.example/codes") == "http://hospital-a.example/codes"
    assert system_for_hl7_name("99LOCAL") is None
    assert not is_system("99LOCAL", terminology.SNOMED_CT)


def test_every_alias_belongs_to_one_terminology() -> None:
    uris = [uri for t in terminology.TERMINOLOGIES for uri in t.uris]
    names = [name for t in terminology.TERMINOLOGIES for name in t.hl7_names]
    assert len(uris) == len(set(uris))
    assert len(names) == len(set(names))
