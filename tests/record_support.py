"""Records and receipts for tests of what stores them: a fasting glucose result of a person
at a moment, and the receipt of a message carrying some records."""

from __future__ import annotations

from datetime import datetime

from healthbank.core.ids import new_ulid
from healthbank.records import MessageReceipt, StoredRecord


def make_record(
    person: str, when: datetime, category: int = 4, code: str = "1558-6"
) -> StoredRecord:
    return StoredRecord(
        record_id=new_ulid(when),
        person_token=person,
        source_hospital="hospital-a",
        source_format=1,
        message_id="m",
        source_version="",
        content_hash="h",
        category=category,
        code_system="http://loinc.org",
        code=code,
        code_display="Fasting glucose",
        effective_time=when,
        status="final",
        sealed_payload=b"\x01sealed",
    )


def receipt_for(
    message_id: str, person: str, records: list[StoredRecord], digest: str = "h1"
) -> MessageReceipt:
    return MessageReceipt(
        hospital_id="hospital-a",
        message_id=message_id,
        content_hash=digest,
        person_token=person,
        record_ids=tuple(r.record_id for r in records),
    )
