"""Builds the consent service from its settings: store, key provider, servicer, host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.core.config import Settings
from healthbank.crypto import build_key_provider, build_sealer
from healthbank.rpc import ClientFactory, ServiceHost
from healthbank.rpc.server import readiness_of
from healthbank.storage.cache import open_cache
from services.consent.registry import ConsentRegistry
from services.consent.servicer import ConsentServicer
from services.consent.store import ConsentStore, SqliteConsentStore

SERVICE = "consent"
SERVICE_NAME = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def open_store(settings: Settings) -> ConsentStore:
    """Open (and migrate) the consent store ``settings.storage_backend`` names."""
    if settings.storage_backend == "cassandra":
        # Imported only here: the embedded default never loads the Cassandra driver.
        from healthbank.storage.cassandra import keyspace_for
        from services.consent.store_cassandra import MIGRATIONS, CassandraConsentStore

        return await CassandraConsentStore(keyspace_for(settings, SERVICE, MIGRATIONS)).open()
    return await SqliteConsentStore(settings.data_dir / f"{SERVICE}.db").open()


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open the consent store and keys and yield a not-yet-started host serving consent.v1.

    ``clients`` is accepted for the common service signature; consent calls no other
    service. ``now`` (default: the UTC wall clock) drives expiry and validity checks.
    On exit the host is stopped (if it was started) and the store closed.
    """
    clock = now or _utc_now
    keys = build_key_provider(settings)
    store = await open_store(settings)
    cache = await open_cache(settings)
    try:
        registry = ConsentRegistry(
            store, build_sealer(settings, keys), clock, cache, settings.cache_ttl_seconds
        )
        servicer = ConsentServicer(registry, clock)

        def register(server: grpc.aio.Server) -> None:
            consent_pb2_grpc.add_ConsentServiceServicer_to_server(servicer, server)

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
        await cache.close()
        await store.close()
