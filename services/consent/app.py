"""Assembles the consent service: its store, keys, the decision cache, the audit log and
the registry.

``clients`` (default: a factory carrying consent's own token) reaches audit, where every
consent change and break-glass is recorded before it is stored. ``now`` (default: the UTC
wall clock) drives expiry and validity checks and stamps the events.
"""

from __future__ import annotations

from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.rpc.access_log import AccessLog
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.consent.clients import GrpcChangeLog
from services.consent.registry import ConsentRegistry
from services.consent.servicer import ConsentServicer
from services.consent.store import SqliteConsentStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE = "consent"
SERVICE_NAME = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(
        sqlite=SqliteConsentStore,
        cassandra="services.consent.store_cassandra:CassandraConsentStore",
    )
    cache = await resources.open_cache()
    changes = GrpcChangeLog(
        AccessLog(clients=resources.clients, service=SERVICE, now=resources.now)
    )
    registry = ConsentRegistry(
        store,
        resources.sealer,
        resources.now,
        changes,
        cache,
        resources.settings.cache_ttl_seconds,
    )
    return Serving(
        ConsentServicer(registry, resources.now),
        consent_pb2_grpc.add_ConsentServiceServicer_to_server,
        readiness=[store, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
