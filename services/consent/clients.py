"""Consent's port to the audit log over gRPC: the registry's :class:`ChangeLog`.

Events carry consent's own credentials (the ClientFactory's) and the caller who made the
change as the actor; a failed append raises (UNAVAILABLE ``AUDIT_UNAVAILABLE`` when the log
is unreachable) and the registry then stores nothing.
"""

from __future__ import annotations

from healthbank.audit.v1 import audit_pb2
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import Principal
from healthbank.contracts.research import research_ledger_token
from healthbank.rpc.access_log import AccessLog
from services.consent.domain import BASIS_BREAK_GLASS


class GrpcChangeLog:
    """ChangeLog over audit.v1.AuditService/AppendEvent."""

    def __init__(self, log: AccessLog) -> None:
        """Append through ``log`` (recorded_by "consent")."""
        self._log = log

    async def consent_changed(
        self, actor: Principal, person_token: str, resource_name: str, change: str
    ) -> None:
        """See ChangeLog.consent_changed: ACTION_CONSENT_CHANGE, the change as its basis."""
        await self._log.record(
            actor,
            audit_pb2.ACTION_CONSENT_CHANGE,
            person_token,
            [person_name(person_token), resource_name],
            basis=change,
        )

    async def glass_broken(self, actor: Principal, person_token: str, session_name: str) -> None:
        """See ChangeLog.glass_broken: ACTION_BREAK_GLASS, always flagged for review."""
        await self._log.record(
            actor,
            audit_pb2.ACTION_BREAK_GLASS,
            person_token,
            [person_name(person_token), session_name],
            basis=BASIS_BREAK_GLASS,
            flagged_for_review=True,
        )


class GrpcResearchLog:
    """The committee desk's :class:`~services.consent.research_desk.ResearchLog` over audit:
    ACTION_RESEARCH under the request's research ledger token, the step as its basis."""

    def __init__(self, log: AccessLog) -> None:
        """Append through ``log`` (recorded_by "consent")."""
        self._log = log

    async def research_step(self, actor: Principal, request_id: str, step: str) -> None:
        """See ResearchLog.research_step."""
        ledger_token = research_ledger_token(request_id)
        await self._log.record(
            actor,
            audit_pb2.ACTION_RESEARCH,
            ledger_token,
            [person_name(ledger_token)],
            basis=step,
        )
