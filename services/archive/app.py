"""Assembles the archive service: its store, the shared record store, the object directory.

Objects (blobs, segments) live below ``<data_dir>/archive``, or in the S3-compatible
bucket of ``HEALTHBANK_ARCHIVE_S3_*`` when ``HEALTHBANK_ARCHIVE_BACKEND=s3`` (ADR 31).
``clients`` is accepted for the common service signature; the archive calls no other
service. ``now`` (default: the UTC wall clock) names segments and bounds tiering cutoffs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.core.config import Settings
from healthbank.records import open_record_store
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from healthbank.storage.backends import open_store
from services.archive.archive import Archive, ScrubReport
from services.archive.objects import (
    LocalObjectStore,
    ObjectStore,
    S3Limits,
    S3ObjectStore,
    s3_client,
)
from services.archive.servicer import MAX_BLOB_BYTES, ArchiveServicer
from services.archive.store import SqliteArchiveStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_object_store", "open_service", "scrub_archive"]

SERVICE = "archive"
SERVICE_NAME = archive_pb2.DESCRIPTOR.services_by_name["ArchiveService"].full_name

# A PutBlob request carries up to 64 MiB of content plus a little framing; grpc's default
# receive limit is 4 MiB.
MAX_RECEIVE_BYTES = MAX_BLOB_BYTES + 1024 * 1024


_CASSANDRA_STORE = "services.archive.store_cassandra:CassandraArchiveStore"


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(sqlite=SqliteArchiveStore, cassandra=_CASSANDRA_STORE)
    records = await resources.open_record_store()
    objects = open_object_store(resources.settings)
    archive = Archive(store, objects, records, resources.now)
    return Serving(
        ArchiveServicer(archive, resources.now),
        archive_pb2_grpc.add_ArchiveServiceServicer_to_server,
        readiness=[store, records, objects],
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
    )


def open_object_store(settings: Settings) -> ObjectStore:
    """The configured object store: the local directory or an S3-compatible bucket."""
    if settings.archive_backend == "local":
        return LocalObjectStore(settings.data_dir / SERVICE)
    key_id, secret = settings.archive_s3_access_key_id, settings.archive_s3_secret_access_key
    client = s3_client(
        settings.archive_s3_endpoint,
        settings.archive_s3_region,
        key_id.get_secret_value() if key_id else "",
        secret.get_secret_value() if secret else "",
        S3Limits.from_settings(settings),
    )
    return S3ObjectStore(
        client,
        settings.archive_s3_bucket,
        settings.archive_s3_prefix,
        lock_days=settings.archive_s3_object_lock_days,
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)


async def scrub_archive(
    settings: Settings, on_object: Callable[[str, bool], None] | None = None
) -> ScrubReport:
    """Check every segment's and blob's SHA-256 where the settings keep them (the
    ``healthbank archive scrub`` job: it reads the stores directly, as the service does)."""
    store = await open_store(
        settings, SERVICE, sqlite=SqliteArchiveStore, cassandra=_CASSANDRA_STORE
    )
    records = await open_record_store(settings)
    try:
        archive = Archive(store, open_object_store(settings), records, lambda: datetime.now(UTC))
        return await archive.scrub(on_object)
    finally:
        await records.close()
        await store.close()
