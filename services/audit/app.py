"""Builds the audit service from its settings: store, key provider, log, servicer, host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.core.config import Settings
from healthbank.crypto import build_key_provider
from healthbank.rpc import ClientFactory, ServiceHost
from healthbank.rpc.server import readiness_of
from services.audit.log import AuditLog
from services.audit.servicer import AuditServicer
from services.audit.store import AuditStore, SqliteAuditStore

SERVICE = "audit"
SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def open_store(settings: Settings) -> AuditStore:
    """Open (and migrate) the audit store ``settings.storage_backend`` names."""
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.storage.cassandra import keyspace_for
        from services.audit.store_cassandra import MIGRATIONS, CassandraAuditStore

        return await CassandraAuditStore(keyspace_for(settings, SERVICE, MIGRATIONS)).open()
    return await SqliteAuditStore(settings.data_dir / f"{SERVICE}.db").open()


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open the audit store and keys and yield a not-yet-started host serving audit.v1.

    ``clients`` is accepted for the common service signature; audit calls no other
    service. ``now`` (default: the UTC wall clock) timestamps signed tree heads.
    On exit the host is stopped (if it was started) and the store closed.
    """
    clock = now or _utc_now
    keys = build_key_provider(settings)
    store = await open_store(settings)
    try:
        servicer = AuditServicer(AuditLog(store, keys, clock))

        def register(server: grpc.aio.Server) -> None:
            audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)

        host = ServiceHost(
            SERVICE,
            settings,
            register=[register],
            service_names=[SERVICE_NAME],
            readiness=readiness_of(store, keys),
        )
        try:
            yield host
        finally:
            await host.stop()
    finally:
        await store.close()
