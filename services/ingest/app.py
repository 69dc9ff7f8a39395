"""Assembles the ingest service: stores, keys, clients, the pipeline and its audit repair.

``clients`` reaches identity, archive and audit and must call as ingest (default:
``service_client_factory(settings, "ingest")``, closed on exit). ``now`` (default: the UTC
wall clock) stamps records without a time of their own and audit events.
"""

from __future__ import annotations

import asyncio
import logging

from healthbank.core.memory import MemoryReleaser
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.ingest.clients import GrpcAuditLog, GrpcBlobArchive, GrpcIdentityResolver
from services.ingest.parse_pool import ParsePool
from services.ingest.pipeline import IngestPipeline
from services.ingest.servicer import MAX_CONTENT_BYTES, IngestServicer
from services.ingest.store import SqliteIngestStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

_log = logging.getLogger(__name__)

SERVICE = "ingest"
SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name

# Room for the request's other fields and framing around a 64 MiB message.
MAX_MESSAGE_BYTES = MAX_CONTENT_BYTES + 1024 * 1024
# Ingest's own store on Cassandra ("module:Class"; imported only when that backend is chosen).
CASSANDRA_STORE = "services.ingest.store_cassandra:CassandraIngestStore"
# How often committed messages whose audit event is still missing are looked for.
PENDING_AUDIT_INTERVAL_SECONDS = 60.0


async def _flush_pending_audits(pipeline: IngestPipeline) -> None:
    """Background loop: append audit events of messages stored without one (crash repair)."""
    while True:
        try:
            await pipeline.flush_pending_audits()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Type only; the next round tries again.
            _log.warning("pending audit flush failed with %s", type(exc).__name__)
        await asyncio.sleep(PENDING_AUDIT_INTERVAL_SECONDS)


async def _assemble(resources: ServiceResources) -> Serving:
    records = await resources.open_record_store()
    store = await resources.open_store(sqlite=SqliteIngestStore, cassandra=CASSANDRA_STORE)
    # Calls go out as ingest itself. gRPC clients send messages of any size by default, so
    # 64 MiB DICOM blobs reach the archive (whose server accepts them).
    clients = resources.clients
    parsers = ParsePool(
        resources.settings.ingest_parse_workers,
        large_message_bytes=resources.settings.ingest_parse_large_message_bytes,
    )
    resources.close_on_exit(parsers.close)
    await parsers.start()
    pipeline = IngestPipeline(
        records=records,
        store=store,
        identity=GrpcIdentityResolver(clients),
        archive=GrpcBlobArchive(clients),
        audit=GrpcAuditLog(clients),
        sealer=resources.sealer,
        now=resources.now,
        parsers=parsers,
    )
    resources.run_in_background("audit-repair", lambda: _flush_pending_audits(pipeline))
    # After a large message its freed heap goes back to the system (ADR 22).
    memory = MemoryReleaser()
    resources.close_on_exit(memory.close)
    return Serving(
        IngestServicer(
            pipeline,
            memory=memory,
            large_message_bytes=resources.settings.ingest_parse_large_message_bytes,
        ),
        ingest_pb2_grpc.add_IngestServiceServicer_to_server,
        # Identity, archive and audit are not part of readiness: when one is down, each
        # message gets a retryable UNAVAILABLE; going out of rotation too would turn a
        # partial outage into a full one.
        readiness=[records, store, resources.keys],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
