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
from healthbank.storage.backends import open_store
from services.consent.clients import GrpcChangeLog, GrpcResearchLog
from services.consent.registry import ConsentRegistry
from services.consent.research_desk import CommitteeRules, ResearchDesk
from services.consent.servicer import ConsentServicer
from services.consent.store import SqliteConsentStore
from services.consent.store_research import SqliteResearchStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE = "consent"
SERVICE_NAME = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(
        sqlite=SqliteConsentStore,
        cassandra="services.consent.store_cassandra:CassandraConsentStore",
    )
    cache = await resources.open_cache()
    # The committee's own store ("research.db" / keyspace <prefix>_research, ADR 26).
    research_store = await open_store(
        resources.settings,
        "research",
        sqlite=SqliteResearchStore,
        cassandra="services.consent.store_research_cassandra:CassandraResearchStore",
    )
    resources.close_on_exit(research_store.close)
    access_log = AccessLog(clients=resources.clients, service=SERVICE, now=resources.now)
    changes = GrpcChangeLog(access_log)
    registry = ConsentRegistry(
        store,
        resources.sealer,
        resources.now,
        changes,
        cache,
        resources.settings.cache_ttl_seconds,
    )
    settings = resources.settings
    desk = ResearchDesk(
        research_store,
        GrpcResearchLog(access_log),
        CommitteeRules(
            quorum=settings.research_committee_quorum,
            veto_allowed=settings.research_committee_veto,
        ),
        resources.now,
    )
    return Serving(
        ConsentServicer(registry, resources.now, desk, settings.research_max_epsilon),
        consent_pb2_grpc.add_ConsentServiceServicer_to_server,
        readiness=[store, research_store, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
