"""Assembles the record-lookup service: the record store, keys, the summary cache, clients.

``clients`` (default: a factory carrying this service's own token) reaches identity,
consent, audit and archive (cold records and imaging blobs). ``now`` (default: the UTC
wall clock) stamps audit events and summaries.
"""

from __future__ import annotations

from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.rpc.cold_archive import GrpcColdArchive
from healthbank.rpc.gate import ConsentGate
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.record_lookup.clients import (
    GrpcImageArchive,
    GrpcPersonDirectory,
)
from services.record_lookup.flow import RecordLookupFlow
from services.record_lookup.servicer import SERVICE, RecordLookupServicer

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]


SERVICE_NAME = record_lookup_pb2.DESCRIPTOR.services_by_name["RecordLookupService"].full_name

# Summaries are small (a few KiB sealed); ten thousand cover a busy city's emergency rooms.
_SUMMARY_CACHE_ENTRIES = 10_000


async def _assemble(resources: ServiceResources) -> Serving:
    records = await resources.open_record_store()
    cache = await resources.open_cache(max_entries=_SUMMARY_CACHE_ENTRIES)
    sealer = resources.sealer
    flow = RecordLookupFlow(
        records=records,
        gate=ConsentGate(
            clients=resources.clients, sealer=sealer, service=SERVICE, now=resources.now
        ),
        directory=GrpcPersonDirectory(resources.clients),
        archive=GrpcColdArchive(resources.clients),
        images=GrpcImageArchive(resources.clients),
        sealer=sealer,
        cache=cache,
        cache_ttl_seconds=resources.settings.cache_ttl_seconds,
        now=resources.now,
    )
    return Serving(
        RecordLookupServicer(flow, now=resources.now),
        record_lookup_pb2_grpc.add_RecordLookupServiceServicer_to_server,
        readiness=[records, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
