"""gRPC plumbing shared by every healthbank service.

Errors (:class:`ServiceError`, :class:`Violations`), the caller of each call, the
standard server interceptors, the :class:`ServiceHost` bootstrap and the
:class:`ClientFactory` for calling other services.
"""

from healthbank.rpc.auth import (
    AUTHORIZATION_KEY,
    current_principal,
    inbound_token,
    require_principal,
)
from healthbank.rpc.clients import (
    ClientFactory,
    OutboundInterceptor,
    caller_metadata,
    service_client_factory,
)
from healthbank.rpc.errors import (
    ErrorDetails,
    ServiceError,
    Violations,
    error_details,
    to_rich_status,
    to_status,
)
from healthbank.rpc.interceptors import (
    REQUEST_ID_KEY,
    CallInterceptor,
    RpcSettings,
    RpcTelemetry,
    default_interceptors,
    inbound_deadline,
)
from healthbank.rpc.server import READY_LINE_PREFIX, ServiceHost, run_until_signal

__all__ = [
    "AUTHORIZATION_KEY",
    "READY_LINE_PREFIX",
    "REQUEST_ID_KEY",
    "CallInterceptor",
    "ClientFactory",
    "ErrorDetails",
    "OutboundInterceptor",
    "RpcSettings",
    "RpcTelemetry",
    "ServiceError",
    "ServiceHost",
    "Violations",
    "caller_metadata",
    "current_principal",
    "default_interceptors",
    "error_details",
    "inbound_deadline",
    "inbound_token",
    "require_principal",
    "run_until_signal",
    "service_client_factory",
    "to_rich_status",
    "to_status",
]
