"""The canonical record and the hot record store (SQLite embedded, Cassandra at scale)."""

from healthbank.records.model import (
    EmergencyFact,
    MessageIdConflict,
    MessageReceipt,
    PutOutcome,
    RecordStore,
    StoredRecord,
    fact_aad,
    from_micros,
    payload_aad,
    record_name,
    to_micros,
)
from healthbank.records.sqlite import SqliteRecordStore

__all__ = [
    "EmergencyFact",
    "MessageIdConflict",
    "MessageReceipt",
    "PutOutcome",
    "RecordStore",
    "SqliteRecordStore",
    "StoredRecord",
    "fact_aad",
    "from_micros",
    "payload_aad",
    "record_name",
    "to_micros",
]
