"""Which earlier exams count as the one being ordered (``FindRecentExams``, ADR 34).

An imaging exam is a DICOM modality and a body site; a lab test a LOINC code. A rule groups
what a radiologist or a lab would accept in place of one another: a head CT and a brain CT
are one exam; HbA1c by HPLC and by IFCC are one test. An order that no rule covers matches
only itself (rule ``same-exam``). The table is docs/exam-equivalence.md; a test holds the
two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

SAME_EXAM = "same-exam"


@dataclass(frozen=True)
class ImagingRule:
    """Modalities and body sites (normalized: lower case, single spaces) that are one exam."""

    name: str
    modalities: frozenset[str]
    body_sites: frozenset[str]


@dataclass(frozen=True)
class LabRule:
    """LOINC codes that are one test."""

    name: str
    loinc_codes: frozenset[str]


def normalize_site(site: str) -> str:
    """Lower case, underscores and runs of spaces as one space (DICOM sends "L_SPINE")."""
    return " ".join(site.replace("_", " ").lower().split())


def _sites(*names: str) -> frozenset[str]:
    return frozenset(normalize_site(name) for name in names)


IMAGING_RULES = (
    ImagingRule("ct-head", frozenset({"CT"}), _sites("head", "brain", "skull", "头部", "颅脑")),
    ImagingRule("ct-chest", frozenset({"CT"}), _sites("chest", "thorax", "lung", "胸部")),
    ImagingRule("ct-abdomen", frozenset({"CT"}), _sites("abdomen", "abdomen pelvis", "腹部")),
    ImagingRule("mr-head", frozenset({"MR"}), _sites("head", "brain", "头部", "颅脑")),
    ImagingRule("mr-lumbar-spine", frozenset({"MR"}), _sites("lspine", "lumbar spine", "腰椎")),
    ImagingRule("xray-chest", frozenset({"CR", "DX"}), _sites("chest", "thorax", "胸部")),
)

LAB_RULES = (
    LabRule("hba1c", frozenset({"4548-4", "17856-6", "4549-2", "59261-8"})),
    LabRule("fasting-glucose", frozenset({"1558-6", "14771-0"})),
    LabRule("ldl-cholesterol", frozenset({"2089-1", "13457-7", "18262-6"})),
    LabRule("creatinine", frozenset({"2160-0", "14682-9"})),
)


def imaging_rule(modality: str, body_site: str) -> ImagingRule:
    """The rule covering an imaging order, or one matching only that exam."""
    modality, site = modality.upper(), normalize_site(body_site)
    for rule in IMAGING_RULES:
        if modality in rule.modalities and site in rule.body_sites:
            return rule
    return ImagingRule(SAME_EXAM, frozenset({modality}), frozenset({site}))


def lab_rule(loinc_code: str) -> LabRule:
    """The rule covering a lab order, or one matching only that code."""
    for rule in LAB_RULES:
        if loinc_code in rule.loinc_codes:
            return rule
    return LabRule(SAME_EXAM, frozenset({loinc_code}))
