"""gRPC plumbing shared by every healthbank service.

Errors (:class:`ServiceError`, :class:`Violations`), principals and their tokens, the
standard server interceptors, the :class:`ServiceHost` bootstrap and the
:class:`ClientFactory` for calling other services.
"""

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
    DeadlineInterceptor,
    ErrorInterceptor,
    PrincipalInterceptor,
    RequestIdInterceptor,
    RpcSettings,
    RpcTelemetry,
    TelemetryInterceptor,
    default_interceptors,
    inbound_deadline,
)
from healthbank.rpc.principal import (
    AUTHORIZATION_KEY,
    Principal,
    PrincipalKind,
    Purpose,
    current_principal,
    decode_token,
    encode_token,
    inbound_token,
    require_principal,
)
from healthbank.rpc.server import READY_LINE_PREFIX, ServiceHost, run_until_signal

__all__ = [
    "AUTHORIZATION_KEY",
    "READY_LINE_PREFIX",
    "REQUEST_ID_KEY",
    "ClientFactory",
    "DeadlineInterceptor",
    "ErrorDetails",
    "ErrorInterceptor",
    "OutboundInterceptor",
    "Principal",
    "PrincipalInterceptor",
    "PrincipalKind",
    "Purpose",
    "RequestIdInterceptor",
    "RpcSettings",
    "RpcTelemetry",
    "ServiceError",
    "ServiceHost",
    "TelemetryInterceptor",
    "Violations",
    "caller_metadata",
    "current_principal",
    "decode_token",
    "default_interceptors",
    "encode_token",
    "error_details",
    "inbound_deadline",
    "inbound_token",
    "require_principal",
    "run_until_signal",
    "service_client_factory",
    "to_rich_status",
    "to_status",
]
