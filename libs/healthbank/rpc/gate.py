"""What every service that reads clinical data does around the read: record the access in
the audit log first (no audit, no read), and open sealed payloads for the caller.

Shared by record-lookup and ai-alert, so the rules are written once: an access that cannot
be audited is refused with UNAVAILABLE; a refused access is audited on a best-effort basis;
a payload that fails authentication is DATA_LOSS, never silently skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import grpc

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.contracts.principal import Principal, principal_to_proto
from healthbank.core.ids import new_ulid
from healthbank.crypto import KeyProviderUnavailable, Sealer, TamperedPayload
from healthbank.rpc import ClientFactory, ServiceError

_log = logging.getLogger(__name__)


class AccessAuditor:
    """Appends access events to the audit service as ``service`` (the recorder)."""

    def __init__(self, clients: ClientFactory, service: str, now: Callable[[], datetime]) -> None:
        """Call audit through ``clients``; stamp events with ``now()`` (UTC)."""
        self._clients = clients
        self._service = service
        self._now = now

    async def record(
        self,
        principal: Principal,
        action: audit_pb2.Action,
        person_token: str,
        resource_names: Sequence[str],
        *,
        basis: str,
        flagged_for_review: bool = False,
    ) -> int:
        """Append an access event and return its leaf index; UNAVAILABLE if it cannot."""
        now = self._now()
        event = audit_pb2.AccessEvent(
            event_id=new_ulid(now),
            actor=principal_to_proto(principal),
            action=action,
            person_token=person_token,
            resource_names=resource_names,
            basis=basis,
            flagged_for_review=flagged_for_review,
            recorded_by=self._service,
        )
        event.occur_time.FromDatetime(now)
        stub = audit_pb2_grpc.AuditServiceStub(self._clients.channel("audit"))
        try:
            response = await stub.AppendEvent(audit_pb2.AppendEventRequest(event=event))
        except grpc.aio.AioRpcError as error:
            _log.warning("audit append failed with %s; access refused", error.code().name)
            raise ServiceError.unavailable(
                "the access could not be audited, so it was refused", reason="AUDIT_UNAVAILABLE"
            ) from None
        return int(response.leaf_index)

    async def record_denial(self, principal: Principal, person_token: str, basis: str) -> None:
        """Record a refused read; a failure here does not change the refusal."""
        try:
            await self.record(
                principal,
                audit_pb2.ACTION_DENIED,
                person_token,
                [f"persons/{person_token}"],
                basis=basis,
            )
        except ServiceError:
            _log.warning("denied read of %s could not be audited", person_token)


async def open_sealed(sealer: Sealer, blob: bytes, aad: bytes) -> bytes:
    """Open a sealed payload for the caller, mapping key and integrity failures to statuses."""
    try:
        return await sealer.open(blob, aad)
    except KeyProviderUnavailable:
        raise ServiceError.unavailable(
            "the key service is unavailable", reason="KEYS_UNAVAILABLE"
        ) from None
    except TamperedPayload:
        _log.error("a sealed payload failed authentication")
        raise ServiceError(
            grpc.StatusCode.DATA_LOSS,
            "a stored payload failed its integrity check",
            reason="PAYLOAD_TAMPERED",
        ) from None
