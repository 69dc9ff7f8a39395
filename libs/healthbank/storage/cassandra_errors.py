"""What a Cassandra driver error means for the caller: retry later, or never (ADR 32).

Unavailable replicas, timeouts (the coordinator's or the driver's), an overloaded or
bootstrapping coordinator, a failed replica and a lost connection may all pass on retry:
:class:`StorageUnavailable`, answered UNAVAILABLE with RetryInfo. A query the cluster
refuses as such (too large, a table or keyspace that does not exist, bad syntax, a
configuration or permission problem) fails the same way every time: :class:`StorageRefused`
with the cause, answered as a permanent error. Anything else is not a driver error and is
left to the caller (a bug surfaces as INTERNAL).
"""

from __future__ import annotations

from cassandra import (
    AuthenticationFailed,
    ConfigurationException,
    CoordinationFailure,
    DriverException,
    FunctionFailure,
    InvalidRequest,
    OperationTimedOut,
    Timeout,
    Unauthorized,
    Unavailable,
    UnsupportedOperation,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.protocol import (
    BadCredentials,
    ErrorMessage,
    IsBootstrappingErrorMessage,
    OverloadedErrorMessage,
    ProtocolException,
    ServerError,
    SyntaxException,
    TruncateError,
    UnauthorizedErrorMessage,
)
from cassandra.protocol import ConfigurationException as ConfigurationErrorMessage
from cassandra.protocol import InvalidRequestException as InvalidRequestMessage

from healthbank.storage.errors import StorageRefused, StorageUnavailable

__all__ = ["storage_error"]

# Transient by nature: the same statement may succeed once a replica or coordinator recovers.
_TRANSIENT = (
    Unavailable,
    Timeout,
    CoordinationFailure,
    OperationTimedOut,
    NoHostAvailable,
    ConnectionException,
    ConnectionError,
    OverloadedErrorMessage,
    IsBootstrappingErrorMessage,
    TruncateError,
    ServerError,
)
_UNAUTHORIZED = (Unauthorized, UnauthorizedErrorMessage, AuthenticationFailed, BadCredentials)
_CONFIGURATION = (ConfigurationException, ConfigurationErrorMessage)
_INVALID = (InvalidRequest, InvalidRequestMessage)
_INVALID_QUERY = (SyntaxException, FunctionFailure, ProtocolException, UnsupportedOperation)
# Server texts of a statement too big to apply ("Batch too large", "Rejected an oversized
# mutation", a frame over native_transport_max_frame_size).
_TOO_LARGE_MARKERS = ("too large", "oversized", "exceeds", "max_mutation_size", "frame size")
# Server texts of a statement naming a table, keyspace or column the schema does not have.
_SCHEMA_MARKERS = ("unconfigured table", "does not exist", "undefined column", "unknown column")


def storage_error(
    keyspace: str, error: BaseException
) -> StorageUnavailable | StorageRefused | None:
    """The storage error ``error`` (raised by the driver for ``keyspace``) stands for.

    None if ``error`` is not a driver error. The returned error's message names the
    keyspace, the driver's error class and the cause, never the statement or its values.
    """
    kind = type(error).__name__
    if isinstance(error, _TRANSIENT):
        return StorageUnavailable(f"cassandra keyspace {keyspace}: {kind}")
    cause = _refusal_cause(error)
    if cause is not None:
        return StorageRefused(f"cassandra keyspace {keyspace}: {kind} ({cause})", cause=cause)
    if isinstance(error, (DriverException, ErrorMessage)):
        # A driver failure not named above (e.g. unresolvable contact points): may pass later.
        return StorageUnavailable(f"cassandra keyspace {keyspace}: {kind}")
    return None


def _refusal_cause(error: BaseException) -> str | None:
    text = str(error).lower()
    if isinstance(error, (*_INVALID, *_INVALID_QUERY)) and any(
        marker in text for marker in _TOO_LARGE_MARKERS
    ):
        return "REQUEST_TOO_LARGE"
    if isinstance(error, _UNAUTHORIZED):
        return "UNAUTHORIZED"
    if isinstance(error, _CONFIGURATION):
        return "CONFIGURATION"
    if isinstance(error, (*_INVALID, *_INVALID_QUERY)):
        if any(marker in text for marker in _SCHEMA_MARKERS):
            return "SCHEMA_MISSING"
        return "INVALID_QUERY"
    return None
