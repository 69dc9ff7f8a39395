"""The canonical record and the hot record store (SQLite embedded, Cassandra at scale)."""

from healthbank.core.config import Settings
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


async def open_record_store(settings: Settings) -> RecordStore:
    """The hot record store the settings select, opened (and migrated)."""
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.records.cassandra import MIGRATIONS, CassandraRecordStore
        from healthbank.storage.cassandra import keyspace_for

        return await CassandraRecordStore(keyspace_for(settings, "records", MIGRATIONS)).open()
    return await SqliteRecordStore(settings.data_dir / "records.db").open()


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
    "open_record_store",
    "payload_aad",
    "record_name",
    "to_micros",
]
