"""Storage plumbing shared by the services: embedded SQLite and Apache Cassandra."""

from healthbank.storage.errors import StorageRefused, StorageUnavailable
from healthbank.storage.sqlite import SqliteDatabase

__all__ = ["SqliteDatabase", "StorageRefused", "StorageUnavailable"]
