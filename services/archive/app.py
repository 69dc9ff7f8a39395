"""Builds the archive service from its settings: stores, object directory, servicer, host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.core.config import Settings
from healthbank.records import RecordStore, open_record_store
from healthbank.rpc import ClientFactory, ServiceHost
from healthbank.rpc.server import readiness_of
from services.archive.archive import Archive, utc_now
from services.archive.objects import LocalObjectStore
from services.archive.servicer import MAX_BLOB_BYTES, ArchiveServicer
from services.archive.store import ArchiveStore, SqliteArchiveStore

SERVICE = "archive"
SERVICE_NAME = archive_pb2.DESCRIPTOR.services_by_name["ArchiveService"].full_name

# A PutBlob request carries up to 64 MiB of content plus a little framing; grpc's default
# receive limit is 4 MiB.
MAX_RECEIVE_BYTES = MAX_BLOB_BYTES + 1024 * 1024


async def open_store(settings: Settings) -> ArchiveStore:
    """Open (and migrate) the archive's own store ``settings.storage_backend`` names."""
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.storage.cassandra import keyspace_for
        from services.archive.store_cassandra import MIGRATIONS, CassandraArchiveStore

        return await CassandraArchiveStore(keyspace_for(settings, SERVICE, MIGRATIONS)).open()
    return await SqliteArchiveStore(settings.data_dir / f"{SERVICE}.db").open()


async def open_stores(settings: Settings) -> tuple[ArchiveStore, RecordStore]:
    """Open the archive's own store and the shared hot record store."""
    archive_store = await open_store(settings)
    try:
        records = await open_record_store(settings)
    except BaseException:
        await archive_store.close()
        raise
    return archive_store, records


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open the archive's stores and yield a not-yet-started host serving archive.v1.

    Objects (blobs, segments) live below ``<data_dir>/archive``. ``clients`` is accepted
    for the common service signature; the archive calls no other service. ``now``
    (default: the UTC wall clock) names segments and bounds tiering cutoffs. On exit the
    host is stopped (if it was started) and the stores closed.
    """
    clock = now or utc_now
    store, records = await open_stores(settings)
    try:
        objects = LocalObjectStore(settings.data_dir / SERVICE)
        servicer = ArchiveServicer(Archive(store, objects, records, clock), clock)

        def register(server: grpc.aio.Server) -> None:
            archive_pb2_grpc.add_ArchiveServiceServicer_to_server(servicer, server)

        host = ServiceHost(
            SERVICE,
            settings,
            register=[register],
            service_names=[SERVICE_NAME],
            readiness=readiness_of(store, records, objects),
            options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
        )
        try:
            yield host
        finally:
            await host.stop()
    finally:
        await records.close()
        await store.close()
