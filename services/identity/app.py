"""Assembles the identity service: its store, keys and the master patient index.

``clients`` is accepted for the common service signature; identity calls no other service.
``now`` (default: the UTC wall clock) stamps links and bounds birth dates.
"""

from __future__ import annotations

from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.identity.index import MasterPatientIndex
from services.identity.servicer import IdentityServicer
from services.identity.store import SqliteIdentityStore

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE = "identity"
SERVICE_NAME = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


async def _assemble(resources: ServiceResources) -> Serving:
    store = await resources.open_store(
        sqlite=SqliteIdentityStore,
        cassandra="services.identity.store_cassandra:CassandraIdentityStore",
    )
    index = MasterPatientIndex(store, resources.keys, resources.sealer, resources.now)
    return Serving(
        IdentityServicer(index, resources.now),
        identity_pb2_grpc.add_IdentityServiceServicer_to_server,
        readiness=[store, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
