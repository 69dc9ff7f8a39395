"""Assembles the record-lookup service from its settings.

``async with open_service(settings) as host: await run_until_signal(host)``
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.core.config import Settings
from healthbank.crypto import build_key_provider, build_sealer
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.records import open_record_store
from healthbank.rpc import ClientFactory, ServiceHost, service_client_factory
from healthbank.rpc.gate import ConsentGate
from healthbank.rpc.server import readiness_of
from healthbank.storage.cache import open_cache
from services.record_lookup.clients import GrpcColdArchive, GrpcPersonDirectory
from services.record_lookup.flow import RecordLookupFlow
from services.record_lookup.servicer import SERVICE, RecordLookupServicer

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]


SERVICE_NAME = record_lookup_pb2.DESCRIPTOR.services_by_name["RecordLookupService"].full_name

# Summaries are small (a few KiB sealed); ten thousand cover a busy city's emergency rooms.
_SUMMARY_CACHE_ENTRIES = 10_000


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open the record store, keys and cache; yield a not-yet-started host; close on exit.

    ``clients`` (default: a factory carrying this service's own token) reaches identity,
    consent, audit and archive. ``now`` (default: the UTC wall clock) stamps audit events
    and summaries. On exit the host is stopped (if it was started) and everything closed.
    """
    clock = now or (lambda: datetime.now(UTC))
    provider = build_key_provider(settings)
    sealer = build_sealer(settings, provider)
    records = await open_record_store(settings)
    try:
        cache = await open_cache(settings, max_entries=_SUMMARY_CACHE_ENTRIES)
    except BaseException:
        await records.close()
        raise
    own_clients = clients is None
    factory = clients or service_client_factory(settings, SERVICE)
    try:
        flow = RecordLookupFlow(
            records=records,
            gate=ConsentGate(clients=factory, sealer=sealer, service=SERVICE, now=clock),
            directory=GrpcPersonDirectory(factory),
            archive=GrpcColdArchive(factory),
            sealer=sealer,
            cache=cache,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            now=clock,
        )
        servicer = RecordLookupServicer(flow, now=clock)

        def register(server: grpc.aio.Server) -> None:
            record_lookup_pb2_grpc.add_RecordLookupServiceServicer_to_server(servicer, server)

        host = ServiceHost(
            SERVICE,
            settings,
            register=[register],
            service_names=[SERVICE_NAME],
            readiness=readiness_of(records, provider),
        )
        try:
            yield host
        finally:
            await host.stop()
    finally:
        if own_clients:
            await factory.close()
        await cache.close()
        await records.close()
