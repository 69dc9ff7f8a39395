"""The emergency fact: what ingest seals next to every allergy, procedure and condition, and
what record-lookup opens to colour the emergency traffic light. Written and read only here.

A stored fact (``healthbank.records.EmergencyFact``) is sealed with
``healthbank.records.fact_aad(person_token, record_id)`` and opens to compact UTF-8 JSON::

    {
      "v": 1,                                   # shape version
      "category": "RECORD_CATEGORY_ALLERGY",    # healthbank.common.v1.RecordCategory name
      "system": "http://snomed.info/sct",       # main code system ("" for a text-only concept)
      "code": "764146007",                      # main code ("" for a text-only concept)
      "display": "Penicillin",                  # coding display, or the concept's text
      "severity": "high",                       # lower case; "" when the source has none
      "status": "active",                       # clinicalStatus code / Procedure.status
      "effective_time": "2019-05-02T10:00:00Z", # ISO 8601, UTC, "Z" suffix
      "source_hospital": "hospital-a",
      "record_name": "persons/{person_token}/records/{record_id}"
    }

``severity`` is the FHIR allergy criticality (``high``, ``low``, ``unable-to-assess``), the
condition severity (``severe``, ``moderate``, ``mild``) or empty (procedures).

Readers ignore keys they do not know, so fields can be added without bumping ``v``. The
reader is lenient where facts written before this codec differ (a category given as its
number or short name, a date without a zone) and strict where a wrong type would hide a
fact: a summary that silently drops a fact could show green over an anaphylaxis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from healthbank.common.v1 import common_pb2

__all__ = ["FACT_SHAPE_VERSION", "Fact", "MalformedFact", "decode_fact", "encode_fact"]

FACT_SHAPE_VERSION = 1

_CATEGORY_PREFIX = "RECORD_CATEGORY_"
# Category names a fact may carry: the enum name (what is written), the same lower case or
# without the prefix, and FHIR's resource name for allergies.
_CATEGORIES: dict[str, int] = {
    **{
        name.lower().removeprefix(_CATEGORY_PREFIX.lower()): number
        for name, number in common_pb2.RecordCategory.items()
        if number
    },
    "allergyintolerance": common_pb2.RECORD_CATEGORY_ALLERGY,
}


@dataclass(frozen=True)
class Fact:
    """One emergency fact, opened. ``category`` is a ``RecordCategory`` number."""

    category: int
    system: str
    code: str
    display: str
    severity: str
    status: str
    effective_time: datetime | None
    source_hospital: str
    record_name: str

    def __repr__(self) -> str:
        # display may be a clinician's free text: keep it out of logs.
        return f"Fact({self.category}, {self.system}|{self.code}, {self.record_name})"


class MalformedFact(ValueError):
    """An opened fact document does not have the shape :func:`encode_fact` writes."""


def encode_fact(fact: Fact) -> bytes:
    """The fact's sealed-to-be JSON (shape in the module docstring)."""
    document = {
        "v": FACT_SHAPE_VERSION,
        "category": common_pb2.RecordCategory.Name(fact.category),
        "system": fact.system,
        "code": fact.code,
        "display": fact.display,
        "severity": fact.severity,
        "status": fact.status,
        "effective_time": _iso_utc(fact.effective_time) if fact.effective_time else "",
        "source_hospital": fact.source_hospital,
        "record_name": fact.record_name,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_fact(document: bytes, category: int) -> Fact:
    """Parse an opened fact; ``category`` (the store row's) is used when the document names
    none it knows. Severity and status are vocabulary: returned lower case."""
    try:
        raw: Any = json.loads(document)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedFact("fact is not JSON") from error
    if not isinstance(raw, dict):
        raise MalformedFact("fact is not a JSON object")
    return Fact(
        category=_category(raw.get("category"), category),
        system=_text(raw, "system"),
        code=_text(raw, "code"),
        display=_text(raw, "display"),
        severity=_text(raw, "severity").lower(),
        status=_text(raw, "status").lower(),
        effective_time=_time(raw.get("effective_time")),
        source_hospital=_text(raw, "source_hospital"),
        record_name=_text(raw, "record_name"),
    )


def _iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedFact(f"fact field {key} is not text")
    return value.strip()


def _category(value: object, fallback: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value in _CATEGORIES.values() else fallback
    if isinstance(value, str):
        key = value.strip().lower().removeprefix(_CATEGORY_PREFIX.lower())
        return _CATEGORIES.get(key, fallback)
    return fallback


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # A date without a zone is a clinical date, not a local time: read it as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
