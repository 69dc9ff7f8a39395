"""Span conventions of every RPC, server and client side, and the request-id rule.

OpenTelemetry's RPC conventions: a span records ``rpc.system``, ``rpc.service``,
``rpc.method``, ``rpc.grpc.status_code`` and, for the statuses that mean the server failed
(:data:`FAULT_CODES`), ``error.type`` and an ERROR status. Refusals (INVALID_ARGUMENT,
NOT_FOUND, PERMISSION_DENIED, ALREADY_EXISTS, ...) are answers working as designed: they
are not marked errors, so error-rate alerts fire on faults only.

Request ids travel in ``x-request-id`` and end up in logs and spans, so a caller-supplied
one is adopted only when it has the shape this project mints (32 lowercase hex digits, or
a canonical UUID) and holds no run of ten or more digits, where a national ID, phone number
or MRN could hide even glued to letters; anything else is replaced
(:func:`adopt_request_id`), never echoed. Minted ids have no such run, so they survive
every hop.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.trace import Span, Status, StatusCode

from healthbank.core.phi import contains_phi

# The instrumentation scope of the spans and metrics of every call, server and client side.
RPC_INSTRUMENTATION = "healthbank.rpc"

__all__ = [
    "FAULT_CODES",
    "REQUEST_ID_PATTERN",
    "RPC_INSTRUMENTATION",
    "adopt_request_id",
    "new_request_id",
    "record_status",
    "rpc_attributes",
]

FAULT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Statuses that mean the call failed (a span error); every other non-OK is a refusal."""

REQUEST_ID_PATTERN = re.compile(
    r"^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
_DIGIT_RUN = re.compile(r"\d{10,}")


def _safe_request_id(candidate: str) -> bool:
    return REQUEST_ID_PATTERN.match(candidate) is not None and not _DIGIT_RUN.search(candidate)


def new_request_id() -> str:
    """A fresh request id: 32 lowercase hex digits without a run of ten digits."""
    while True:
        candidate = uuid.uuid4().hex
        if _safe_request_id(candidate):
            return candidate


def adopt_request_id(offered: str | None) -> str:
    """``offered`` when it is a well-formed id that cannot carry an identifier, else a fresh one."""
    if offered is not None and _safe_request_id(offered) and not contains_phi(offered):
        return offered
    return new_request_id()


def rpc_attributes(full_method: str) -> dict[str, Any]:
    """The RPC attributes of a span for ``/package.Service/Method`` (no payload, no metadata)."""
    rpc_service, _, rpc_method = full_method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method}


def record_status(span: Span, code: grpc.StatusCode) -> None:
    """Record the final status on ``span``; only a fault makes it an error."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in FAULT_CODES:
        span.set_attribute("error.type", code.name)
        span.set_status(Status(StatusCode.ERROR, code.name))
