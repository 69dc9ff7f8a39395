"""Assembles the ai-alert service from its settings.

``async with open_service(settings) as host: await run_until_signal(host)``
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.core.config import Settings
from healthbank.crypto import build_key_provider, build_sealer
from healthbank.records import open_record_store
from healthbank.rpc import ClientFactory, ServiceHost, service_client_factory
from healthbank.rpc.gate import ConsentGate
from healthbank.rpc.server import readiness_of
from services.ai_alert.flow import AiAlertFlow
from services.ai_alert.servicer import SERVICE, AiAlertServicer

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE_NAME = ai_alert_pb2.DESCRIPTOR.services_by_name["AiAlertService"].full_name


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    clients: ClientFactory | None = None,
    now: Callable[[], datetime] | None = None,
) -> AsyncIterator[ServiceHost]:
    """Open the record store and keys; yield a not-yet-started host; close on exit.

    ``clients`` (default: a factory carrying this service's own token) reaches consent and
    audit. ``now`` (default: the UTC wall clock) fixes "today" for forecasts and trends. On
    exit the host is stopped (if it was started) and everything closed.
    """
    clock = now or (lambda: datetime.now(UTC))
    provider = build_key_provider(settings)
    records = await open_record_store(settings)
    own_clients = clients is None
    factory = clients or service_client_factory(settings, SERVICE)
    try:
        sealer = build_sealer(settings, provider)
        gate = ConsentGate(clients=factory, sealer=sealer, service=SERVICE, now=clock)
        servicer = AiAlertServicer(AiAlertFlow(records=records, gate=gate, now=clock))

        def register(server: grpc.aio.Server) -> None:
            ai_alert_pb2_grpc.add_AiAlertServiceServicer_to_server(servicer, server)

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
        await records.close()
