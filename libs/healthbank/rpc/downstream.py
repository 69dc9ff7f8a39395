"""The one policy for a failed call to another healthbank service.

Whatever service makes the call, our caller sees the same thing:

- transient (UNAVAILABLE, DEADLINE_EXCEEDED): UNAVAILABLE with reason
  ``<DEPENDENCY>_UNAVAILABLE`` and RetryInfo, so the caller retries later;
- a refusal the caller can act on (INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND,
  FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE, RESOURCE_EXHAUSTED, ABORTED, DATA_LOSS)
  passes through with its code, message, reason and field violations (our services'
  messages and reasons are PHI-free by contract);
- anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED, UNAUTHENTICATED — our own credentials
  were refused —, CANCELLED …): INTERNAL ``DEPENDENCY_FAILED``, never presented as
  retryable.
"""

from __future__ import annotations

import logging

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.rpc.errors import REASON_PATTERN, TRANSIENT_CODES, ServiceError, error_details

__all__ = ["downstream_error"]

_log = logging.getLogger(__name__)

_PASSED_THROUGH = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def downstream_error(error: grpc.RpcError, dependency: str) -> ServiceError:
    """What our caller sees when the call to ``dependency`` (e.g. "audit") failed with
    ``error``; see the module docstring."""
    details = error_details(error)
    code = details.code
    # The code name only: a foreign message could echo request data.
    _log.warning("%s call failed with %s", dependency, getattr(code, "name", code))
    label = dependency.replace("-", "_").upper()
    if code in TRANSIENT_CODES:
        return ServiceError.unavailable(
            f"{dependency} is unavailable", reason=f"{label}_UNAVAILABLE"
        )
    if code in _PASSED_THROUGH:
        reason = details.reason if REASON_PATTERN.match(details.reason) else f"{label}_REFUSED"
        return ServiceError(
            code,
            details.message or f"{dependency} refused the request",
            reason=reason,
            field_violations=details.field_violations,
            retry_delay=details.retry_delay,
        )
    return ServiceError(
        grpc.StatusCode.INTERNAL, f"{dependency} call failed", reason="DEPENDENCY_FAILED"
    )
