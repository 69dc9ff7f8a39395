"""Appending access events to the audit log: the one client every recording service uses.

The consent gate records reads with it (record-lookup, ai-alert); consent records grants,
revocations, proxy changes and break-glass sessions. Calls carry the recording service's own
token (the ClientFactory's); the end user travels in ``AccessEvent.actor``. A failed append
follows the one downstream policy (:func:`healthbank.rpc.downstream.downstream_error`):
UNAVAILABLE ``AUDIT_UNAVAILABLE`` when the log cannot be reached, so a caller that must not
act unrecorded ("no audit, no read", "no audit, no change") just lets it propagate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.contracts.principal import Principal, principal_to_proto
from healthbank.core.ids import new_ulid
from healthbank.rpc.clients import ClientFactory
from healthbank.rpc.downstream import downstream_error

__all__ = ["AccessLog"]


class AccessLog:
    """Appends access events recorded by the service ``service``.

    Args:
        clients: reaches "audit" with this service's own credentials.
        service: the recording service (``AccessEvent.recorded_by``).
        now: the clock (UTC) stamping events and their ids.
    """

    def __init__(
        self, *, clients: ClientFactory, service: str, now: Callable[[], datetime]
    ) -> None:
        self._clients = clients
        self._service = service
        self._now = now

    async def record(
        self,
        actor: Principal,
        action: audit_pb2.Action,
        person_token: str,
        resource_names: Sequence[str],
        *,
        basis: str = "",
        flagged_for_review: bool = False,
    ) -> int:
        """Append one event and return its leaf index; raises the downstream error of a
        failed append (UNAVAILABLE ``AUDIT_UNAVAILABLE`` when the log is unreachable)."""
        now = self._now()
        event = audit_pb2.AccessEvent(
            event_id=new_ulid(now),
            actor=principal_to_proto(actor),
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
            raise downstream_error(error, "audit") from None
        return int(response.leaf_index)
