"""ai-alert's ports to consent's research grants and to the audit log (the black room).

Calls carry ai-alert's own credentials (the ClientFactory's); a failed call follows the one
downstream policy, so consent's refusals (PRIVACY_BUDGET_EXHAUSTED, RESEARCH_GRANT_EXPIRED,
RESEARCH_NOT_FOUND) reach the researcher with their reason.
"""

from __future__ import annotations

from datetime import UTC

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import Principal
from healthbank.contracts.research import research_grant_name, research_ledger_token
from healthbank.rpc.access_log import AccessLog
from healthbank.rpc.clients import ClientFactory
from healthbank.rpc.downstream import downstream_error
from services.ai_alert.research_flow import GrantView


class GrpcResearchGrants:
    """:class:`~services.ai_alert.research_flow.Grants` over consent.v1."""

    def __init__(self, clients: ClientFactory) -> None:
        """Reach "consent" through ``clients``."""
        self._clients = clients

    def _stub(self) -> consent_pb2_grpc.ConsentServiceAsyncStub:
        return consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))

    async def grant(self, grant_id: str) -> GrantView:
        """See Grants.grant."""
        try:
            grant = await self._stub().GetResearchGrant(
                consent_pb2.GetResearchGrantRequest(name=research_grant_name(grant_id))
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "consent") from None
        return GrantView(
            grant_id=grant_id,
            researcher_id=grant.researcher_id,
            code_system=grant.cohort.code_system,
            codes=frozenset(grant.cohort.codes),
            fields=tuple(grant.fields),
            groupings=tuple(grant.groupings),
            output_kind=int(grant.output_kind),
            period_start=grant.period_start.ToDatetime(tzinfo=UTC),
            period_end=grant.period_end.ToDatetime(tzinfo=UTC),
            expire_time=grant.expire_time.ToDatetime(tzinfo=UTC),
        )

    async def spend(self, grant_id: str, epsilon: float, query_id: str) -> float:
        """See Grants.spend."""
        try:
            spent = await self._stub().SpendPrivacyBudget(
                consent_pb2.SpendPrivacyBudgetRequest(
                    grant_name=research_grant_name(grant_id), epsilon=epsilon, query_id=query_id
                )
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "consent") from None
        return float(spent.epsilon_remaining)


class GrpcResearchLog:
    """:class:`~services.ai_alert.research_flow.ResearchLog`: ACTION_RESEARCH under the
    grant's research ledger token (the grant's id is its request's)."""

    def __init__(self, log: AccessLog) -> None:
        """Append through ``log`` (recorded_by "ai-alert")."""
        self._log = log

    async def research_step(self, actor: Principal, grant_id: str, step: str) -> None:
        """See ResearchLog.research_step."""
        ledger_token = research_ledger_token(grant_id)
        await self._log.record(
            actor, audit_pb2.ACTION_RESEARCH, ledger_token, [person_name(ledger_token)], basis=step
        )
