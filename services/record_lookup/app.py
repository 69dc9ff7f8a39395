"""Assembles the record-lookup service: the record store, keys, the summary cache, clients.

``clients`` (default: a factory carrying this service's own token) reaches identity,
consent, audit and archive. ``now`` (default: the UTC wall clock) stamps audit events and
summaries.
"""

from __future__ import annotations

from collections.abc import Callable

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, encode_token
from healthbank.core.config import Settings
from healthbank.record_lookup.v1 import record_lookup_pb2, record_lookup_pb2_grpc
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.record_lookup.servicer import SERVICE, RecordLookupServicer

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]


SERVICE_NAME = record_lookup_pb2.DESCRIPTOR.services_by_name["RecordLookupService"].full_name

# Summaries are small (a few KiB sealed); ten thousand cover a busy city's emergency rooms.
_SUMMARY_CACHE_ENTRIES = 10_000


# Like service_client_factory's own tokens: minted per call, valid briefly.
_SERVICE_TOKEN_SECONDS = 300


def _service_token(settings: Settings) -> Callable[[], str]:
    """Mints this service's own token (kind service), as ``service_client_factory`` does."""
    secret = settings.auth_secret.get_secret_value().encode()
    principal = Principal(PrincipalKind.SERVICE, SERVICE, purpose=Purpose.OPERATIONS)
    return lambda: encode_token(principal, secret, ttl_seconds=_SERVICE_TOKEN_SECONDS)


async def _assemble(resources: ServiceResources) -> Serving:
    records = await resources.open_record_store()
    cache = await resources.open_cache(max_entries=_SUMMARY_CACHE_ENTRIES)
    servicer = RecordLookupServicer(
        records=records,
        sealer=resources.sealer,
        cache=cache,
        clients=resources.clients,
        service_token=_service_token(resources.settings),
        cache_ttl_seconds=resources.settings.cache_ttl_seconds,
        now=resources.now,
    )
    return Serving(
        servicer,
        record_lookup_pb2_grpc.add_RecordLookupServiceServicer_to_server,
        readiness=[records, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
