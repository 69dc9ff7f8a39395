"""Assembles the audit service: its store, the key provider, the Merkle log.

``clients`` is accepted for the common service signature; audit calls no other service.
``now`` (default: the UTC wall clock) timestamps signed tree heads.
"""

from __future__ import annotations

import asyncio
import logging

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.audit.log import HEAD_INTERVAL, AuditLog
from services.audit.servicer import AuditServicer
from services.audit.store import SqliteAuditStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE = "audit"
SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


_log = logging.getLogger(__name__)


async def _sign_heads(log: AuditLog) -> None:
    """Background loop: a signed tree head at a steady interval (HEAD_INTERVAL)."""
    while True:
        try:
            await log.sign_heads()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Type only; signing resumes after the interval.
            _log.warning("signing the tree head failed with %s", type(exc).__name__)
        await asyncio.sleep(HEAD_INTERVAL.total_seconds())


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(
        sqlite=SqliteAuditStore, cassandra="services.audit.store_cassandra:CassandraAuditStore"
    )
    log = AuditLog(store, resources.keys, resources.now)
    resources.run_in_background("tree-heads", lambda: _sign_heads(log))
    return Serving(
        AuditServicer(log),
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
        readiness=[store, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
