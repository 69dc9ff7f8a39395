"""Builds the identity service from its settings: store, key provider, servicer, host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.core.config import Settings
from healthbank.crypto import build_key_provider, build_sealer
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import ClientFactory, ServiceHost
from healthbank.rpc.server import readiness_of
from services.identity.index import MasterPatientIndex
from services.identity.servicer import IdentityServicer
from services.identity.store import IdentityStore, SqliteIdentityStore

SERVICE = "identity"
SERVICE_NAME = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def open_store(settings: Settings) -> IdentityStore:
    """Open (and migrate) the identity store ``settings.storage_backend`` names."""
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.storage.cassandra import keyspace_for
        from services.identity.store_cassandra import MIGRATIONS, CassandraIdentityStore

        return await CassandraIdentityStore(keyspace_for(settings, SERVICE, MIGRATIONS)).open()
    return await SqliteIdentityStore(settings.data_dir / f"{SERVICE}.db").open()


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open the identity store and keys and yield a not-yet-started host serving identity.v1.

    ``clients`` is accepted for the common service signature; identity calls no other
    service. ``now`` (default: the UTC wall clock) stamps links and bounds birth dates.
    On exit the host is stopped (if it was started) and the store closed.
    """
    clock = now or _utc_now
    keys = build_key_provider(settings)
    store = await open_store(settings)
    try:
        index = MasterPatientIndex(store, keys, build_sealer(settings, keys), clock)
        servicer = IdentityServicer(index, clock)

        def register(server: grpc.aio.Server) -> None:
            identity_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server)

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
