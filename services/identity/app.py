"""Assembles the identity service: its store, keys, the audit client and the master patient index.

``clients`` reaches the audit service (every read of the index is audited); ``now``
(default: the UTC wall clock) stamps links and audit events and bounds birth dates.
"""

from __future__ import annotations

import asyncio
import logging

from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.identity.clients import GrpcReadAudit
from services.identity.index import MasterPatientIndex, MatchPolicy
from services.identity.matching import MatchThresholds
from services.identity.servicer import IdentityServicer
from services.identity.store import SqliteIdentityStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE = "identity"
SERVICE_NAME = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name

_log = logging.getLogger(__name__)


async def _follow_merges(index: MasterPatientIndex, interval_seconds: float) -> None:
    """Drop this replica's known-patient cache soon after another replica merges (ADR 33)."""
    while True:
        try:
            await index.follow_merges()
        except Exception as exc:  # the store is down: the next look will tell
            _log.warning("looking for merges failed with %s", type(exc).__name__)
        await asyncio.sleep(interval_seconds)


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(
        sqlite=SqliteIdentityStore,
        cassandra="services.identity.store_cassandra:CassandraIdentityStore",
    )
    audit = GrpcReadAudit(resources.clients, resources.now)
    settings = resources.settings
    policy = MatchPolicy(
        thresholds=MatchThresholds(
            link=settings.identity_match_link_threshold,
            review=settings.identity_match_review_threshold,
        ),
        newborn_days=settings.identity_newborn_days,
    )
    index = MasterPatientIndex(
        store, resources.keys, resources.sealer, resources.now, audit, policy
    )
    resources.run_in_background(
        "follow-merges", lambda: _follow_merges(index, settings.identity_merge_poll_seconds)
    )
    return Serving(
        IdentityServicer(index, resources.now),
        identity_pb2_grpc.add_IdentityServiceServicer_to_server,
        readiness=[store, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
