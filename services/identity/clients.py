"""The identity index's port over gRPC: audit.AppendEvent for every read of the index.

The ClientFactory given must call as identity itself (``service_client_factory(settings,
"identity")``): the audit service records the calling service as ``recorded_by``, and the
reader travels in ``AccessEvent.actor``. Failures follow the one downstream policy
(:func:`healthbank.rpc.downstream.downstream_error`): an audit that cannot record answers
UNAVAILABLE ``AUDIT_UNAVAILABLE``, so the read is refused, never made unaudited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.timestamp_pb2 import Timestamp

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import Principal, principal_to_proto
from healthbank.core.ids import new_ulid
from healthbank.rpc import ClientFactory
from healthbank.rpc.downstream import downstream_error
from services.identity.domain import IdentityRead

RECORDED_BY = "identity"
AUDIT_BASIS = "IDENTITY"

_ACTIONS = {
    IdentityRead.NATIONAL_ID_LOOKUP: audit_pb2.ACTION_LOOKUP_NATIONAL_ID,
    IdentityRead.PERSON: audit_pb2.ACTION_READ_PERSON,
}


class GrpcReadAudit:
    """ReadAudit over audit.v1.AuditService/AppendEvent."""

    def __init__(self, clients: ClientFactory, now: Callable[[], datetime]) -> None:
        """Call the "audit" service through ``clients``; ``now`` stamps the events."""
        self._clients = clients
        self._now = now

    async def record_read(self, actor: Principal, person_token: str, read: IdentityRead) -> None:
        """See ReadAudit.record_read."""
        occur_time = Timestamp()
        occur_time.FromDatetime(self._now())
        event = audit_pb2.AccessEvent(
            event_id=new_ulid(),
            actor=principal_to_proto(actor),
            action=_ACTIONS[read],
            person_token=person_token,
            resource_names=[person_name(person_token)],
            basis=AUDIT_BASIS,
            flagged_for_review=False,
            occur_time=occur_time,
            recorded_by=RECORDED_BY,
        )
        stub = audit_pb2_grpc.AuditServiceStub(self._clients.channel("audit"))
        try:
            await stub.AppendEvent(audit_pb2.AppendEventRequest(event=event))
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "audit") from None
