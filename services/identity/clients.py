"""The identity index's port over gRPC: an audit event for every read of the index.

The ClientFactory given must call as identity itself (``service_client_factory(settings,
"identity")``): the audit service records the calling service as ``recorded_by``, and the
reader travels in ``AccessEvent.actor``. Appends go through the one audit client
(:class:`healthbank.rpc.access_log.AccessLog`): an audit that cannot record answers
UNAVAILABLE ``AUDIT_UNAVAILABLE``, so the read is refused, never made unaudited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from healthbank.audit.v1 import audit_pb2
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import Principal
from healthbank.rpc import ClientFactory
from healthbank.rpc.access_log import AccessLog
from services.identity.domain import IdentityChange, IdentityRead

RECORDED_BY = "identity"
AUDIT_BASIS = "IDENTITY"

_ACTIONS = {
    IdentityRead.NATIONAL_ID_LOOKUP: audit_pb2.ACTION_LOOKUP_NATIONAL_ID,
    IdentityRead.PERSON: audit_pb2.ACTION_READ_PERSON,
}


class GrpcReadAudit:
    """ReadAudit over the audit service."""

    def __init__(self, clients: ClientFactory, now: Callable[[], datetime]) -> None:
        """Call the "audit" service through ``clients``; ``now`` stamps the events."""
        self._log = AccessLog(clients=clients, service=RECORDED_BY, now=now)

    async def record_read(self, actor: Principal, person_token: str, read: IdentityRead) -> None:
        """See ReadAudit.record_read."""
        await self._log.record(
            actor, _ACTIONS[read], person_token, [person_name(person_token)], basis=AUDIT_BASIS
        )

    async def record_change(
        self,
        actor: Principal,
        person_tokens: Sequence[str],
        change: IdentityChange,
        resource: str,
    ) -> None:
        """See ReadAudit.record_change: one event per person, the change in ``basis``."""
        await asyncio.gather(
            *(
                self._log.record(
                    actor,
                    audit_pb2.ACTION_IDENTITY_CHANGE,
                    person_token,
                    [f"{person_name(person_token)}/{resource}"],
                    basis=change.value,
                )
                for person_token in person_tokens
            )
        )
