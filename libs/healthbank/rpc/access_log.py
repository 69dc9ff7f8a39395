"""Appending access events to the audit log: the one client every recording service uses.

The consent gate records reads with it (record-lookup, ai-alert); consent records grants,
revocations, proxy changes and break-glass sessions. Calls carry the recording service's own
token (the ClientFactory's); the end user travels in ``AccessEvent.actor``. A failed append
follows the one downstream policy (:func:`healthbank.rpc.downstream.downstream_error`):
UNAVAILABLE ``AUDIT_UNAVAILABLE`` when the log cannot be reached, so a caller that must not
act unrecorded ("no audit, no read", "no audit, no change") just lets it propagate.

Appends of one process go through one :class:`AuditAppender`: the events that arrive while
an append is in flight leave together in one ``AppendEvents`` call (group commit,
:mod:`healthbank.core.group_commit`), so a busy service makes one call per round, not one
per event, and each caller still returns only once its own event is logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import Principal, principal_to_proto
from healthbank.core.group_commit import GroupCommit
from healthbank.core.ids import new_ulid
from healthbank.rpc.clients import ClientFactory
from healthbank.rpc.downstream import downstream_error

__all__ = ["AccessLog", "AuditAppender"]

# The audit service takes at most 1,000 events per AppendEvents call.
MAX_EVENTS_PER_CALL = 1000
# Refusals that name one event of a batch: the batch's events are then sent one by one, so
# only the faulty event fails.
_ONE_EVENTS_FAULT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)


class AuditAppender:
    """Appends events to the audit log, concurrent ones in one ``AppendEvents`` call.

    :meth:`append` raises the call's ``grpc.aio.AioRpcError`` (each caller maps it to its
    own error policy). Appends are idempotent by event id, so a failed batch's callers may
    each retry.
    """

    def __init__(self, clients: ClientFactory) -> None:
        """Reach "audit" through ``clients`` (with this service's own credentials)."""
        self._clients = clients
        self._group: GroupCommit[audit_pb2.AccessEvent, audit_pb2.AppendEventResponse] = (
            GroupCommit(self._send, max_batch=MAX_EVENTS_PER_CALL)
        )

    async def append(self, event: audit_pb2.AccessEvent) -> audit_pb2.AppendEventResponse:
        """Append ``event``; its leaf index and the tree size once it is logged."""
        (appended,) = await self.append_all([event])
        return appended

    async def append_all(
        self, events: Sequence[audit_pb2.AccessEvent]
    ) -> list[audit_pb2.AppendEventResponse]:
        """Append ``events`` in one batch (one call unless others queued beside them); one
        response each, in order, once all are logged; raises if any one failed."""
        return await self._group.append(events)

    async def _send(
        self, events: list[audit_pb2.AccessEvent]
    ) -> list[audit_pb2.AppendEventResponse | BaseException]:
        stub = audit_pb2_grpc.AuditServiceStub(self._clients.channel("audit"))
        if len(events) > 1:
            try:
                response = await stub.AppendEvents(audit_pb2.AppendEventsRequest(events=events))
                return list(response.results)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _ONE_EVENTS_FAULT:
                    raise
        # One event, or a batch refused for one event's fault: each on its own.
        return await asyncio.gather(
            *(stub.AppendEvent(audit_pb2.AppendEventRequest(event=event)) for event in events),
            return_exceptions=True,
        )


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
        self._appender = AuditAppender(clients)
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
        merged_tokens: Sequence[str] = (),
    ) -> int:
        """Append one event and return its leaf index; raises the downstream error of a
        failed append (UNAVAILABLE ``AUDIT_UNAVAILABLE`` when the log is unreachable).

        ``merged_tokens``: persons merged into ``person_token`` (ADR 33) whose data the
        access reads too. Each gets the same event in its own trail, naming only itself (an
        event names resources of its own person), so a person's access log shows the reads
        made through the person they were merged into. All are appended in one batch and
        the call returns once every one is logged.
        """
        now = self._now()
        events = []
        for token, names in (
            (person_token, resource_names),
            *((merged, [person_name(merged)]) for merged in merged_tokens),
        ):
            event = audit_pb2.AccessEvent(
                event_id=new_ulid(now),
                actor=principal_to_proto(actor),
                action=action,
                person_token=token,
                resource_names=names,
                basis=basis,
                flagged_for_review=flagged_for_review,
                recorded_by=self._service,
            )
            event.occur_time.FromDatetime(now)
            events.append(event)
        try:
            responses = await self._appender.append_all(events)
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "audit") from None
        return int(responses[0].leaf_index)
