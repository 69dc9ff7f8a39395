"""The exam equivalence rules (ADR 34) and their table in docs/exam-equivalence.md."""

from __future__ import annotations

from repo_paths import REPO

from services.record_lookup import exam_equivalence as eq


def documented_rows() -> set[tuple[str, str, str, str]]:
    text = (REPO / "docs" / "exam-equivalence.md").read_text()
    rows = set()
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows.add((cells[0].strip("`"), cells[1], cells[2], cells[3]))
    return rows


def test_the_documented_table_is_the_table_the_code_uses() -> None:
    def listed(values: frozenset[str]) -> str:
        return ", ".join(sorted(values))

    coded = {
        (rule.name, "imaging", listed(rule.modalities), listed(rule.body_sites))
        for rule in eq.IMAGING_RULES
    } | {(rule.name, "lab", "LOINC", listed(rule.loinc_codes)) for rule in eq.LAB_RULES}
    assert documented_rows() == coded


def test_dicom_body_parts_are_compared_as_words() -> None:
    assert eq.imaging_rule("ct", "BRAIN").name == "ct-head"
    assert eq.imaging_rule("MR", "LSPINE").name == "mr-lumbar-spine"
    assert eq.imaging_rule("MR", "LUMBAR_SPINE").name == "mr-lumbar-spine"
    assert eq.imaging_rule("CT", "BRAIN").name != eq.imaging_rule("MR", "BRAIN").name
    assert eq.normalize_site("  Abdomen   PELVIS ") == "abdomen pelvis"


def test_an_order_no_rule_covers_matches_only_itself() -> None:
    rule = eq.imaging_rule("US", "thyroid")
    assert (rule.name, rule.modalities, rule.body_sites) == ("same-exam", {"US"}, {"thyroid"})
    assert eq.lab_rule("718-7") == eq.LabRule("same-exam", frozenset({"718-7"}))
