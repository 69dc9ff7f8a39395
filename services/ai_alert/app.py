"""Assembles the ai-alert service: the record store, keys and clients.

``clients`` (default: a factory carrying this service's own token) reaches consent (the
consent gate; opt-ins to personal insights; research grants and their budgets), audit and
archive (archived lab results). ``now`` (default: the UTC wall
clock) fixes "today" for forecasts and trends and the expiry of research grants.
"""

from __future__ import annotations

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.rpc.access_log import AccessLog
from healthbank.rpc.cold_archive import GrpcColdArchive
from healthbank.rpc.gate import ConsentGate
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.ai_alert.clients import (
    GrpcOptIns,
    GrpcResearchGrants,
    GrpcResearchLog,
)
from services.ai_alert.flow import AiAlertFlow
from services.ai_alert.research_flow import ResearchFlow
from services.ai_alert.servicer import SERVICE, AiAlertServicer

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE_NAME = ai_alert_pb2.DESCRIPTOR.services_by_name["AiAlertService"].full_name


async def _assemble(resources: ServiceResources) -> Serving:
    records = await resources.open_record_store()
    gate = ConsentGate(
        clients=resources.clients, sealer=resources.sealer, service=SERVICE, now=resources.now
    )
    # The black room (ADR 26): grants and their budgets in consent, its steps in audit.
    research = ResearchFlow(
        records=records,
        grants=GrpcResearchGrants(resources.clients),
        log=GrpcResearchLog(
            AccessLog(clients=resources.clients, service=SERVICE, now=resources.now),
            resources.clients,
            resources.now,
        ),
        now=resources.now,
        min_cell_size=resources.settings.research_min_cell_size,
        default_epsilon=resources.settings.research_query_epsilon,
    )
    flow = AiAlertFlow(
        records=records,
        gate=gate,
        opt_ins=GrpcOptIns(resources.clients, SERVICE),
        cold=GrpcColdArchive(resources.clients),
        now=resources.now,
    )
    servicer = AiAlertServicer(flow, research)
    return Serving(
        servicer,
        ai_alert_pb2_grpc.add_AiAlertServiceServicer_to_server,
        readiness=[records, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
