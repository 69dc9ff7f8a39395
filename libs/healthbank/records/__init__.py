"""The canonical record and the hot record store (SQLite embedded, Cassandra at scale)."""

from healthbank.core.config import Settings
from healthbank.records.model import (
    MAX_PAYLOAD_BYTES,
    PLACED_PAYLOAD_CONTENT_TYPE,
    ClaimedByEarlierAttempt,
    EmergencyFact,
    MessageIdConflict,
    MessageReceipt,
    PutOutcome,
    RecordStore,
    StoredRecord,
    SurveillanceCase,
    blob_aad,
    fact_aad,
    from_micros,
    is_placed_payload_stub,
    payload_aad,
    placed_payload_stub,
    record_name,
    to_micros,
)
from healthbank.records.sqlite import SqliteRecordStore
from healthbank.storage.backends import open_store


async def open_record_store(settings: Settings) -> RecordStore:
    """The hot record store the settings select, opened (and migrated)."""
    return await open_store(
        settings,
        "records",
        sqlite=SqliteRecordStore,
        cassandra="healthbank.records.cassandra:CassandraRecordStore",
    )


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PLACED_PAYLOAD_CONTENT_TYPE",
    "ClaimedByEarlierAttempt",
    "EmergencyFact",
    "MessageIdConflict",
    "MessageReceipt",
    "PutOutcome",
    "RecordStore",
    "SqliteRecordStore",
    "StoredRecord",
    "SurveillanceCase",
    "blob_aad",
    "fact_aad",
    "from_micros",
    "is_placed_payload_stub",
    "open_record_store",
    "payload_aad",
    "placed_payload_stub",
    "record_name",
    "to_micros",
]
