"""docs/research.md states the extract catalog, the identifiers screened out and the
screening rules as the code has them."""

from __future__ import annotations

from repo_paths import REPO

from healthbank.contracts.research import DIRECT_IDENTIFIERS, EXTRACT_FIELDS
from services.consent.committee import DENY_LISTED_PURPOSES, SCREENING_RULES

DOC = (REPO / "docs" / "research.md").read_text()


def test_every_extract_field_is_documented_with_its_kind() -> None:
    for field in EXTRACT_FIELDS.values():
        kind = "dimension" if field.dimension else f"clamped to {field.lower}-{field.upper}"
        assert f"| `{field.name}` |" in DOC
        assert kind in DOC.split(f"| `{field.name}` |", 1)[1].split("\n", 1)[0]


def test_screening_rules_identifiers_and_purposes_are_documented() -> None:
    assert all(f"`{rule}`" in DOC for rule in SCREENING_RULES)
    assert all(f"`{name}`" in DOC for name in DIRECT_IDENTIFIERS)
    assert all(purpose in DOC for purpose in DENY_LISTED_PURPOSES)
