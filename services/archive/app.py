"""Assembles the archive service: its store, the shared record store, the object directory.

Objects (blobs, segments) live below ``<data_dir>/archive``. ``clients`` is accepted for the
common service signature; the archive calls no other service. ``now`` (default: the UTC
wall clock) names segments and bounds tiering cutoffs.
"""

from __future__ import annotations

from healthbank.archive.v1 import archive_pb2, archive_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.archive.archive import Archive
from services.archive.objects import LocalObjectStore
from services.archive.servicer import MAX_BLOB_BYTES, ArchiveServicer
from services.archive.store import SqliteArchiveStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE = "archive"
SERVICE_NAME = archive_pb2.DESCRIPTOR.services_by_name["ArchiveService"].full_name

# A PutBlob request carries up to 64 MiB of content plus a little framing; grpc's default
# receive limit is 4 MiB.
MAX_RECEIVE_BYTES = MAX_BLOB_BYTES + 1024 * 1024


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(
        sqlite=SqliteArchiveStore,
        cassandra="services.archive.store_cassandra:CassandraArchiveStore",
    )
    records = await resources.open_record_store()
    objects = LocalObjectStore(resources.settings.data_dir / SERVICE)
    archive = Archive(store, objects, records, resources.now)
    return Serving(
        ArchiveServicer(archive, resources.now),
        archive_pb2_grpc.add_ArchiveServiceServicer_to_server,
        readiness=[store, records, objects],
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
