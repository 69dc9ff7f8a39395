"""From a parsed, resolved message to canonical records and emergency facts (pure).

Sealing is the caller's job (it needs the key provider): this module says *what* is sealed
with *which* associated data, and builds the stored rows around the sealed bytes.

Emergency facts
---------------

Every ALLERGY, PROCEDURE and CONDITION record, and every medication (MedicationRequest,
MedicationStatement, MedicationAdministration) and Device record (anticoagulants and
implanted cardiac devices colour the light), also yields an emergency fact, stored next to
the record in the hot store forever (``healthbank.records.EmergencyFact``), sealed with
``healthbank.records.fact_aad(person_token, record_id)``. Its plaintext is written by
:func:`emergency_fact_json` with the one codec, ``healthbank.contracts.facts`` (the shape is
documented there). ``severity`` comes from the parsers: for an allergy the FHIR criticality
(HL7 v2 AL1-4 ``SV`` → high, ``MO``/``MI`` → low, ``U`` → unable-to-assess); for a condition
the severity's text or first coding display; empty for procedures.

Surveillance cases
------------------

:func:`surveillance_cases` turns the message's CONDITION entries into ILI case rows with the
one case definition, ``healthbank.surveillance`` (ADR 30): one per local visit day,
district and age band of the patient, stored by the same ``put_message`` as the records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from healthbank.contracts.facts import Fact, encode_fact
from healthbank.core.digest import sha256_hex
from healthbank.core.ids import new_ulid
from healthbank.records import (
    EmergencyFact,
    MessageReceipt,
    StoredRecord,
    SurveillanceCase,
    fact_aad,
    payload_aad,
    record_name,
)
from healthbank.surveillance import visit_cells
from services.ingest.model import Category, ClinicalEntry, ParsedMessage, SourceFormat

FACT_CATEGORIES = frozenset({Category.ALLERGY, Category.PROCEDURE, Category.CONDITION})
"""Categories that feed the emergency summary."""

FACT_RESOURCE_TYPES = frozenset(
    {"MedicationRequest", "MedicationStatement", "MedicationAdministration", "Device"}
)
"""Other resource types that feed the emergency summary, whatever their category."""


def feeds_emergency_summary(entry: ClinicalEntry) -> bool:
    """Tell whether an entry gets an emergency fact next to its record."""
    return (
        entry.category in FACT_CATEGORIES
        or entry.resource.get("resourceType") in FACT_RESOURCE_TYPES
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def content_hash(content: bytes) -> str:
    """SHA-256 of the message bytes, lowercase hex (the receipt's idempotency check)."""
    return sha256_hex(content)


@dataclass(frozen=True)
class MessageSource:
    """Where a message came from: the same for every record it produces."""

    hospital_id: str
    message_id: str
    source_format: SourceFormat
    content_hash: str


@dataclass(frozen=True)
class PlannedRecord:
    """A record before sealing: its id, metadata, payload plaintext and fact plaintext."""

    record_id: str
    person_token: str
    entry: ClinicalEntry
    effective_time: datetime
    payload: bytes
    fact: bytes | None

    @property
    def name(self) -> str:
        """Resource name of the record."""
        return record_name(self.person_token, self.record_id)

    @property
    def payload_aad(self) -> bytes:
        """Associated data to seal the payload with."""
        return payload_aad(self.person_token, self.record_id)

    @property
    def fact_aad(self) -> bytes:
        """Associated data to seal the emergency fact with."""
        return fact_aad(self.person_token, self.record_id)

    def stored(self, source: MessageSource, sealed_payload: bytes, blob_name: str) -> StoredRecord:
        """The stored row, around the sealed payload, naming ``blob_name`` (its image, or its
        whole payload when the record keeps a stub; ADR 22)."""
        code = self.entry.code
        return StoredRecord(
            record_id=self.record_id,
            person_token=self.person_token,
            source_hospital=source.hospital_id,
            source_format=int(source.source_format),
            message_id=source.message_id,
            source_version=self.entry.source_version,
            content_hash=source.content_hash,
            category=int(self.entry.category),
            code_system=code.system,
            code=code.code,
            # A text-only concept's text is free text written by a clinician: it stays in the
            # sealed payload and fact, never in the clear columns.
            code_display=code.display if code.code else "",
            effective_time=self.effective_time,
            status=self.entry.status,
            sealed_payload=sealed_payload,
            blob_name=blob_name,
        )

    def emergency_fact(self, sealed_fact: bytes) -> EmergencyFact:
        """The stored emergency fact, around the sealed fact JSON."""
        return EmergencyFact(
            person_token=self.person_token,
            record_id=self.record_id,
            category=int(self.entry.category),
            sealed_fact=sealed_fact,
        )


def plan_records(
    message: ParsedMessage,
    person_token: str,
    source: MessageSource,
    now: datetime,
    record_ids: Sequence[str] | None = None,
) -> list[PlannedRecord]:
    """One planned record per clinical entry, with fresh ULIDs and resolved effective times.

    An entry without a time of its own takes the message time, else ``now``. Record ids are
    ULIDs of the effective time (so ids sort by clinical time), or of ``now`` for facts from
    before 1970, which a ULID cannot encode. ``record_ids`` (one per entry) are the ids an
    earlier attempt claimed: given with that attempt's ``now``, the plan is the same as its.
    """
    if record_ids is not None and len(record_ids) != len(message.entries):
        raise ValueError("one record id per entry")
    planned = []
    for index, entry in enumerate(message.entries):
        effective = entry.effective_time or message.message_time or now
        record_id = (
            record_ids[index]
            if record_ids is not None
            else new_ulid(effective if effective >= _EPOCH else now)
        )
        planned.append(
            PlannedRecord(
                record_id=record_id,
                person_token=person_token,
                entry=entry,
                effective_time=effective,
                payload=payload_json(entry.resource),
                fact=(
                    emergency_fact_json(
                        entry, effective, source.hospital_id, person_token, record_id
                    )
                    if feeds_emergency_summary(entry)
                    else None
                ),
            )
        )
    return planned


def payload_json(resource: Mapping[str, Any]) -> bytes:
    """The FHIR JSON stored (sealed) as a record's payload: compact UTF-8."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


def emergency_fact_json(
    entry: ClinicalEntry,
    effective_time: datetime,
    source_hospital: str,
    person_token: str,
    record_id: str,
) -> bytes:
    """The emergency fact plaintext (``healthbank.contracts.facts``)."""
    return encode_fact(
        Fact(
            category=int(entry.category),
            system=entry.code.system,
            code=entry.code.code,
            display=entry.code.display,
            severity=entry.severity,
            status=entry.status,
            effective_time=effective_time,
            source_hospital=source_hospital,
            record_name=record_name(person_token, record_id),
        )
    )


def receipt_for(
    source: MessageSource, person_token: str, records: Sequence[PlannedRecord]
) -> MessageReceipt:
    """The idempotency receipt of a message and the records it produced."""
    return MessageReceipt(
        hospital_id=source.hospital_id,
        message_id=source.message_id,
        content_hash=source.content_hash,
        person_token=person_token,
        record_ids=tuple(record.record_id for record in records),
    )


def surveillance_cases(message: ParsedMessage, person_token: str) -> list[SurveillanceCase]:
    """The ILI cases the message's diagnoses make of its patient (none if it has none)."""
    if message.patient is None:
        return []
    diagnoses = [
        # The visit's time: the diagnosis's recorded date, else the message's time; the
        # entry's own time (often the onset, which patients remember loosely) comes last.
        (entry.resource, message.message_time or entry.effective_time)
        for entry in message.entries
        if entry.category == Category.CONDITION
    ]
    cells = visit_cells(
        message.patient.district, _birth_date(message.patient.demographics.birth_date), diagnoses
    )
    return [
        SurveillanceCase(cell.day, cell.district, cell.age_band, person_token)
        for cell in sorted(cells, key=lambda cell: (cell.day, cell.district, cell.age_band))
    ]


def _birth_date(value: str) -> date | None:
    """A full YYYY-MM-DD birth date; a year or month alone gives no age band."""
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None
