"""ai-alert's ports: consent's research grants and the audit log (the black room); the
patients' opt-ins (consent Check as this service) and their archived records (archive
FetchRecords) for personal insights.

Calls carry ai-alert's own credentials (the ClientFactory's); a failed call follows the one
downstream policy, so consent's refusals (PRIVACY_BUDGET_EXHAUSTED, RESEARCH_GRANT_EXPIRED,
RESEARCH_NOT_FOUND) reach the researcher with their reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.audit.v1 import audit_pb2
from healthbank.common.v1 import common_pb2
from healthbank.consent.v1 import consent_pb2, consent_pb2_grpc
from healthbank.contracts.names import person_name
from healthbank.contracts.principal import (
    Principal,
    PrincipalKind,
    Purpose,
    principal_to_proto,
)
from healthbank.contracts.research import research_grant_name, research_ledger_token
from healthbank.core.ids import derived_ulid
from healthbank.rpc.access_log import AccessLog, AuditAppender
from healthbank.rpc.clients import ClientFactory
from healthbank.rpc.downstream import downstream_error
from services.ai_alert.research_flow import GrantView


class GrpcOptIns:
    """:class:`~services.ai_alert.flow.OptIns` over consent.v1 Check, asking as the service
    itself (``service``): permitted means an active PERSONAL_INSIGHTS grant names it."""

    def __init__(self, clients: ClientFactory, service: str) -> None:
        """Reach "consent" through ``clients``; ask as the service named ``service``."""
        self._clients = clients
        self._accessor = principal_to_proto(
            Principal(PrincipalKind.SERVICE, service, purpose=Purpose.OPERATIONS)
        )

    async def opted_in(self, person_token: str) -> bool:
        """See OptIns.opted_in."""
        stub = consent_pb2_grpc.ConsentServiceStub(self._clients.channel("consent"))
        try:
            decision = await stub.Check(
                consent_pb2.CheckRequest(
                    person_token=person_token,
                    accessor=self._accessor,
                    categories=[common_pb2.RECORD_CATEGORY_PERSONAL_INSIGHTS],
                )
            )
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "consent") from None
        return bool(decision.decision == consent_pb2.DECISION_PERMIT)


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
            create_time=grant.create_time.ToDatetime(tzinfo=UTC),
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
    grant's research ledger token (the grant's id is its request's), and in each cohort
    person's own log.

    A person's event has an id derived from the grant and the person, so however many
    queries or processes record it the log holds it once; this process remembers whom it
    has recorded per grant and use and sends only the others.
    """

    def __init__(self, log: AccessLog, clients: ClientFactory, now: Callable[[], datetime]) -> None:
        """Append steps through ``log`` and cohort events through one more appender on
        ``clients`` (the audit log sets recorded_by); ``now`` stamps the cohort events."""
        self._log = log
        self._appender = AuditAppender(clients)
        self._now = now
        self._recorded: dict[tuple[str, str], set[str]] = {}

    async def cohort_used(
        self, actor: Principal, grant: GrantView, person_tokens: frozenset[str], use: str
    ) -> None:
        """See ResearchLog.cohort_used."""
        recorded = self._recorded.setdefault((grant.grant_id, use), set())
        fresh = sorted(person_tokens - recorded)
        basis = f"RESEARCH_USE {research_grant_name(grant.grant_id)} {use}"
        events = []
        for person_token in fresh:
            event = audit_pb2.AccessEvent(
                event_id=derived_ulid(
                    grant.create_time, f"{grant.grant_id}:{use}:{person_token}".encode()
                ),
                actor=principal_to_proto(actor),
                action=audit_pb2.ACTION_RESEARCH,
                person_token=person_token,
                resource_names=[person_name(person_token)],
                basis=basis,
            )
            event.occur_time.FromDatetime(self._now())
            events.append(event)
        try:
            await asyncio.gather(*(self._appender.append(event) for event in events))
        except grpc.aio.AioRpcError as error:
            raise downstream_error(error, "audit") from None
        recorded.update(fresh)

    async def research_step(self, actor: Principal, grant_id: str, step: str) -> None:
        """See ResearchLog.research_step."""
        ledger_token = research_ledger_token(grant_id)
        await self._log.record(
            actor, audit_pb2.ACTION_RESEARCH, ledger_token, [person_name(ledger_token)], basis=step
        )
