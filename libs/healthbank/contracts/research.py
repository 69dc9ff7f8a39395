"""What consent's committee and ai-alert's black room agree on about research (ADR 26).

- The **extract catalog**: the fields of the de-identified research extract (one row per
  person of a cohort), which of them results may be grouped by, and the bounds of the
  numeric ones (differential privacy needs each person's contribution bounded).
- The **direct identifiers** a request may ask for by name only to be screened out.
- Resource names ``researchRequests/{id}`` and ``researchGrants/{id}`` (ids are ULIDs).
- The **research ledger token**: audit events are filed under a person token; research
  touches no single person, so each request gets a token of its own (a hash of its id, in
  the person-token shape), and every step of that request is found under it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from healthbank.core.ids import is_ulid

__all__ = [
    "DIRECT_IDENTIFIERS",
    "EXTRACT_FIELDS",
    "GRANT_NAME_RULE",
    "REQUEST_NAME_RULE",
    "ExtractField",
    "parse_research_grant_name",
    "parse_research_request_name",
    "research_grant_name",
    "research_ledger_token",
    "research_request_name",
]


@dataclass(frozen=True)
class ExtractField:
    """One column of the research extract.

    ``dimension``: categorical, results may be grouped by it (when the grant allows).
    ``lower``/``upper``: the clamp of a numeric column (its values are clipped into it
    before any sum, so one person moves a sum by at most ``max(|lower|, |upper|)``).
    """

    name: str
    description: str
    dimension: bool
    lower: int = 0
    upper: int = 0


EXTRACT_FIELDS: dict[str, ExtractField] = {
    field.name: field
    for field in (
        ExtractField("hospital", "hospital of the person's first cohort record", True),
        ExtractField("cohort_code", "the cohort code of the person's first cohort record", True),
        ExtractField("first_year", "year of the first cohort record (shifted per grant)", True),
        ExtractField(
            "first_quarter", "quarter (1-4) of the first cohort record (shifted per grant)", True
        ),
        ExtractField("record_count", "records in the period", False, 0, 200),
        ExtractField("condition_count", "condition records in the period", False, 0, 100),
        ExtractField("observation_count", "observation records in the period", False, 0, 200),
        ExtractField("medication_count", "medication records in the period", False, 0, 100),
        ExtractField("encounter_count", "encounter records in the period", False, 0, 100),
        ExtractField("span_days", "days from the first to the last record", False, 0, 3660),
    )
}
"""The extract's columns by name. Rows are persons; nothing in a row names anyone."""

DIRECT_IDENTIFIERS = frozenset(
    {
        "name",
        "given_name",
        "family_name",
        "national_id",
        "national_id_number",
        "ssn",
        "mrn",
        "medical_record_number",
        "phone",
        "phone_number",
        "email",
        "address",
        "street",
        "postal_code",
        "birth_date",
        "date_of_birth",
        "person_token",
        "photo",
    }
)
"""Field names that identify a person directly: asking for one fails screening."""

_REQUEST_NAME = re.compile(r"researchRequests/([0-9A-HJKMNP-TV-Z]{26})")
_GRANT_NAME = re.compile(r"researchGrants/([0-9A-HJKMNP-TV-Z]{26})")
REQUEST_NAME_RULE = "must be researchRequests/{id} (a ULID)"
GRANT_NAME_RULE = "must be researchGrants/{id} (a ULID)"

# Domain separation: a research ledger token can never equal a person's HMAC pseudonym
# (which is keyed); the prefix only keeps the two derivations apart in intent.
_LEDGER_PREFIX = b"healthbank research ledger v1:"


def research_request_name(request_id: str) -> str:
    """``researchRequests/{request_id}``."""
    return f"researchRequests/{request_id}"


def research_grant_name(grant_id: str) -> str:
    """``researchGrants/{grant_id}``."""
    return f"researchGrants/{grant_id}"


def parse_research_request_name(name: str) -> str | None:
    """The id of a research request name, or None when malformed."""
    matched = _REQUEST_NAME.fullmatch(name)
    return matched.group(1) if matched and is_ulid(matched.group(1)) else None


def parse_research_grant_name(name: str) -> str | None:
    """The id of a research grant name, or None when malformed."""
    matched = _GRANT_NAME.fullmatch(name)
    return matched.group(1) if matched and is_ulid(matched.group(1)) else None


def research_ledger_token(request_id: str) -> str:
    """The audit log's subject for every step of research request ``request_id`` (and of
    the grant it became): 64 lowercase hex digits, like a person token."""
    return hashlib.sha256(_LEDGER_PREFIX + request_id.encode()).hexdigest()
