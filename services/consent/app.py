"""Assembles the consent service: its store, keys, the decision cache and the registry.

``clients`` is accepted for the common service signature; consent calls no other service.
``now`` (default: the UTC wall clock) drives expiry and validity checks.
"""

from __future__ import annotations

from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
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
    registry = ConsentRegistry(
        store, resources.sealer, resources.now, cache, resources.settings.cache_ttl_seconds
    )
    return Serving(
        ConsentServicer(registry, resources.now),
        consent_pb2_grpc.add_ConsentServiceServicer_to_server,
        readiness=[store, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
