"""Assembles the ai-alert service: the record store, keys and clients.

``clients`` (default: a factory carrying this service's own token) reaches consent and
audit. ``now`` (default: the UTC wall clock) fixes "today" for forecasts and trends.
"""

from __future__ import annotations

from healthbank.ai_alert.v1 import ai_alert_pb2, ai_alert_pb2_grpc
from healthbank.rpc.gate import ConsentGate
from healthbank.rpc.service import ServiceResources, Serving, service_opener
from services.ai_alert.flow import AiAlertFlow
from services.ai_alert.servicer import SERVICE, AiAlertServicer

__all__ = ["SERVICE", "SERVICE_NAME", "open_service"]

SERVICE_NAME = ai_alert_pb2.DESCRIPTOR.services_by_name["AiAlertService"].full_name


async def _assemble(resources: ServiceResources) -> Serving:
    records = await resources.open_record_store()
    gate = ConsentGate(
        clients=resources.clients, sealer=resources.sealer, service=SERVICE, now=resources.now
    )
    servicer = AiAlertServicer(AiAlertFlow(records=records, gate=gate, now=resources.now))
    return Serving(
        servicer,
        ai_alert_pb2_grpc.add_AiAlertServiceServicer_to_server,
        readiness=[records, resources.keys],
    )


open_service = service_opener(SERVICE, SERVICE_NAME, _assemble)
