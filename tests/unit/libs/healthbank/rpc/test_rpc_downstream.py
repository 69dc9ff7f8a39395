"""The one downstream-error policy (healthbank.rpc.downstream)."""

from __future__ import annotations

import grpc
import pytest

from healthbank.rpc import ServiceError, to_rich_status
from healthbank.rpc.downstream import downstream_error

Code = grpc.StatusCode


def failed_call(error: ServiceError | None, code: Code = Code.UNKNOWN) -> grpc.aio.AioRpcError:
    """The error a client sees when a healthbank service answered ``error`` (with its rich
    status trailer), or a bare status ``code`` as a proxy or the transport reports it."""
    trailers = grpc.aio.Metadata()
    if error is not None:
        code = error.code
        trailers.add("grpc-status-details-bin", to_rich_status(error).SerializeToString())
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), trailers, details=error.message if error else "failed"
    )


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED])
def test_transient_failures_are_unavailable_and_retryable(code: Code) -> None:
    mapped = downstream_error(failed_call(None, code), "record-lookup")
    assert mapped.code == Code.UNAVAILABLE
    assert mapped.reason == "RECORD_LOOKUP_UNAVAILABLE"
    assert mapped.retry_delay is not None and mapped.retry_delay > 0


def test_a_dependencys_own_unavailable_reason_becomes_ours() -> None:
    # Our caller learns which of our dependencies failed, not which of theirs.
    inner = ServiceError.unavailable("storage down", reason="STORAGE_UNAVAILABLE")
    assert downstream_error(failed_call(inner), "audit").reason == "AUDIT_UNAVAILABLE"


@pytest.mark.parametrize(
    "error",
    [
        ServiceError.invalid_argument([("parent", "is required")], reason="BAD_PARENT"),
        ServiceError.permission_denied("no", reason="NO_GRANT"),
        ServiceError.not_found("no person with that national ID is known", "PERSON_NOT_FOUND"),
        ServiceError.failed_precondition("linked elsewhere", reason="MRN_LINKED"),
        ServiceError(Code.DATA_LOSS, "payload failed its check", reason="PAYLOAD_TAMPERED"),
        ServiceError(Code.RESOURCE_EXHAUSTED, "slow down", reason="QUOTA", retry_delay=2.0),
    ],
)
def test_refusals_pass_through_with_reason_message_and_fields(error: ServiceError) -> None:
    mapped = downstream_error(failed_call(error), "identity")
    assert (mapped.code, mapped.reason, mapped.message) == (error.code, error.reason, error.message)
    assert mapped.field_violations == error.field_violations
    assert mapped.retry_delay == error.retry_delay


def test_a_refusal_without_details_is_named_after_the_dependency() -> None:
    mapped = downstream_error(failed_call(None, Code.PERMISSION_DENIED), "consent")
    assert (mapped.code, mapped.reason) == (Code.PERMISSION_DENIED, "CONSENT_REFUSED")


@pytest.mark.parametrize(
    "code", [Code.INTERNAL, Code.UNKNOWN, Code.UNIMPLEMENTED, Code.UNAUTHENTICATED, Code.CANCELLED]
)
def test_anything_else_is_internal_and_not_retryable(code: Code) -> None:
    mapped = downstream_error(failed_call(None, code), "archive")
    assert (mapped.code, mapped.reason) == (Code.INTERNAL, "DEPENDENCY_FAILED")
    assert mapped.retry_delay is None
    assert "failed" in mapped.message
