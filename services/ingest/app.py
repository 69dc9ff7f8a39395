"""Builds the ingest service from its settings: stores, keys, clients, pipeline, host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.core.config import Settings
from healthbank.crypto import build_key_provider, build_sealer
from healthbank.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from healthbank.records import RecordStore, open_record_store
from healthbank.rpc import ClientFactory, ServiceHost, service_client_factory
from healthbank.rpc.server import readiness_of
from healthbank.storage.cache import open_cache
from services.ingest.clients import GrpcAuditLog, GrpcBlobArchive, GrpcIdentityResolver
from services.ingest.pipeline import IngestPipeline
from services.ingest.servicer import MAX_CONTENT_BYTES, IngestServicer
from services.ingest.store import IngestStore, SqliteIngestStore

_log = logging.getLogger(__name__)

SERVICE = "ingest"
SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name

# Room for the request's other fields and framing around a 64 MiB message.
MAX_MESSAGE_BYTES = MAX_CONTENT_BYTES + 1024 * 1024
# How often committed messages whose audit event is still missing are looked for.
PENDING_AUDIT_INTERVAL_SECONDS = 60.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def open_store(settings: Settings) -> IngestStore:
    """Open (and migrate) ingest's own store ``settings.storage_backend`` names."""
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.storage.cassandra import keyspace_for
        from services.ingest.store_cassandra import MIGRATIONS, CassandraIngestStore

        return await CassandraIngestStore(keyspace_for(settings, SERVICE, MIGRATIONS)).open()
    return await SqliteIngestStore(settings.data_dir / f"{SERVICE}.db").open()


async def open_stores(settings: Settings) -> tuple[RecordStore, IngestStore]:
    """Open the shared hot record store and ingest's own store on the configured backend."""
    records = await open_record_store(settings)
    try:
        store = await open_store(settings)
    except BaseException:
        await records.close()
        raise
    return records, store


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


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open stores, keys and clients and yield a not-yet-started host serving ingest.v1.

    ``clients`` reaches identity, archive and audit and must call as ingest (default:
    ``service_client_factory(settings, "ingest")``, closed on exit). ``now`` (default: the
    UTC wall clock) stamps records without a time of their own and audit events. On exit
    the host is stopped (if it was started), the background audit repair cancelled and
    everything closed.
    """
    clock = now or _utc_now
    keys = build_key_provider(settings)
    records, store = await open_stores(settings)
    own_clients = clients is None
    # Calls go out as ingest itself. gRPC clients send messages of any size by default, so
    # 64 MiB DICOM blobs reach the archive (whose server accepts them).
    factory = clients or service_client_factory(settings, SERVICE)
    # Shared with record-lookup through Redis; in-process (and so unused) when embedded.
    cache = await open_cache(settings, max_entries=1)
    repair: asyncio.Task[None] | None = None
    try:
        pipeline = IngestPipeline(
            records=records,
            store=store,
            identity=GrpcIdentityResolver(factory),
            archive=GrpcBlobArchive(factory),
            audit=GrpcAuditLog(factory),
            sealer=build_sealer(settings, keys),
            now=clock,
            summaries=cache,
        )
        servicer = IngestServicer(pipeline)

        def register(server: grpc.aio.Server) -> None:
            ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)

        host = ServiceHost(
            SERVICE,
            settings,
            register=[register],
            service_names=[SERVICE_NAME],
            # Identity, archive and audit are not part of readiness: when one is down, each
            # message gets a retryable UNAVAILABLE; going out of rotation too would turn a
            # partial outage into a full one.
            readiness=readiness_of(records, store, keys),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        repair = asyncio.create_task(_flush_pending_audits(pipeline), name="ingest-audit-repair")
        try:
            yield host
        finally:
            await host.stop()
    finally:
        if repair is not None:
            repair.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repair
        if own_clients:
            await factory.close()
        await cache.close()
        await store.close()
        await records.close()
