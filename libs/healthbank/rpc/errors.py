"""Domain errors mapped to rich gRPC status (``google.rpc.Status``).

Servicers and domain code raise :class:`ServiceError` (or collect input problems in a
:class:`Violations`); the error interceptor turns it into a gRPC status whose
``grpc-status-details-bin`` trailer carries ``BadRequest``, ``ErrorInfo`` and ``RetryInfo``.
Clients read those details back with :func:`error_details`.

Messages travel to callers and into logs, so they must never contain PHI: say *which*
field is wrong, never *what* its value was.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import any_pb2, duration_pb2
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status

from healthbank.storage.errors import StorageRefused

__all__ = [
    "DEFAULT_DOMAIN",
    "MAX_REPORTED_VIOLATIONS",
    "VIOLATIONS_TOTAL_KEY",
    "ErrorDetails",
    "ServiceError",
    "Violations",
    "error_details",
    "fit_violations",
    "key_provider_refusal",
    "storage_refusal",
    "to_rich_status",
    "to_status",
]

DEFAULT_DOMAIN = "healthbank.io"

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The codes of a failure that may succeed when retried as it is; every other is permanent."""

# google.rpc.ErrorInfo.reason: UPPER_SNAKE_CASE, at most 63 characters.
REASON_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$")

# The trailer key grpc_status uses for the serialized google.rpc.Status.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"

MAX_REPORTED_VIOLATIONS = 50
"""At most this many field violations travel with an error; the rest are only counted."""

VIOLATIONS_TOTAL_KEY = "violations_total"
"""ErrorInfo metadata key: how many violations were found when some were left out."""

# gRPC clients refuse trailing metadata over 8 KiB (soft) / 16 KiB (hard) with
# RESOURCE_EXHAUSTED, which reads as "retry": the reported violations, base64-encoded in the
# details trailer beside the status message, must stay well under that.
_VIOLATIONS_BYTE_BUDGET = 3072
_MAX_FIELD_CHARS = 160
_MAX_DESCRIPTION_CHARS = 240
_MAX_FIELDS_IN_MESSAGE = 8


def fit_violations(
    violations: Sequence[tuple[str, str]],
) -> tuple[list[tuple[str, str]], int]:
    """The first violations that fit in a status trailer, and how many were left out.

    Keeps at most :data:`MAX_REPORTED_VIOLATIONS` and about 3 KiB of text (long paths and
    descriptions are shortened), so a message with thousands of problems still gets its
    INVALID_ARGUMENT through a default gRPC client instead of RESOURCE_EXHAUSTED.
    """
    kept: list[tuple[str, str]] = []
    used = 0
    for name, description in violations:
        name = _shorten(name, _MAX_FIELD_CHARS)
        description = _shorten(description, _MAX_DESCRIPTION_CHARS)
        cost = len(name.encode()) + len(description.encode()) + 8
        if len(kept) >= MAX_REPORTED_VIOLATIONS or used + cost > _VIOLATIONS_BYTE_BUDGET:
            break
        kept.append((name, description))
        used += cost
    return kept, len(violations) - len(kept)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ServiceError(Exception):
    """An expected failure that a servicer reports to its caller as a gRPC status.

    ``message`` is sent to the caller verbatim and logged, so it must be PHI-free.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        domain: str = DEFAULT_DOMAIN,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_delay: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if code == grpc.StatusCode.OK:
            raise ValueError("a ServiceError cannot carry StatusCode.OK")
        if not REASON_PATTERN.match(reason):
            raise ValueError(f"ErrorInfo reason must be UPPER_SNAKE_CASE: {reason!r}")
        if retry_delay is not None and (retry_delay < 0 or not math.isfinite(retry_delay)):
            raise ValueError("retry_delay must be a finite, non-negative number of seconds")
        reported, omitted = fit_violations(field_violations)
        self.metadata: dict[str, str] = dict(metadata or {})
        if omitted:
            self.metadata[VIOLATIONS_TOTAL_KEY] = str(len(field_violations))
            message = f"{message} ({omitted} more violations not listed)"
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.field_violations = reported
        self.retry_delay = retry_delay

    @property
    def retryable(self) -> bool:
        """True if the same request may succeed later (see TRANSIENT_CODES)."""
        return self.code in TRANSIENT_CODES

    def __repr__(self) -> str:
        return f"ServiceError({self.code.name}, {self.message!r}, reason={self.reason!r})"

    @classmethod
    def invalid_argument(
        cls, violations: Sequence[tuple[str, str]], reason: str = "INVALID_ARGUMENT"
    ) -> ServiceError:
        """Reject a request whose fields are wrong; ``violations`` are (field, description)."""
        return cls(
            grpc.StatusCode.INVALID_ARGUMENT,
            _invalid_request_message(violations),
            reason=reason,
            field_violations=violations,
        )

    @classmethod
    def not_found(cls, message: str, reason: str) -> ServiceError:
        """The named resource does not exist (or the caller may not know it exists)."""
        return cls(grpc.StatusCode.NOT_FOUND, message, reason=reason)

    @classmethod
    def permission_denied(cls, message: str, reason: str) -> ServiceError:
        """The caller is known but not allowed to do this (e.g. no consent)."""
        return cls(grpc.StatusCode.PERMISSION_DENIED, message, reason=reason)

    @classmethod
    def unauthenticated(cls, message: str, reason: str = "UNAUTHENTICATED") -> ServiceError:
        """The caller could not be identified (missing, malformed or expired credentials)."""
        return cls(grpc.StatusCode.UNAUTHENTICATED, message, reason=reason)

    @classmethod
    def failed_precondition(cls, message: str, reason: str) -> ServiceError:
        """The system is not in a state that allows this; retrying as-is will not help."""
        return cls(grpc.StatusCode.FAILED_PRECONDITION, message, reason=reason)

    @classmethod
    def already_exists(cls, message: str, reason: str) -> ServiceError:
        """The resource the caller tried to create already exists."""
        return cls(grpc.StatusCode.ALREADY_EXISTS, message, reason=reason)

    @classmethod
    def unavailable(cls, message: str, reason: str, retry_delay: float = 1.0) -> ServiceError:
        """A transient failure; the caller should retry after ``retry_delay`` seconds."""
        return cls(grpc.StatusCode.UNAVAILABLE, message, reason=reason, retry_delay=retry_delay)

    @classmethod
    def deadline_exceeded(cls, message: str, reason: str = "DEADLINE_EXCEEDED") -> ServiceError:
        """The caller's deadline passed before the work could be done."""
        return cls(grpc.StatusCode.DEADLINE_EXCEEDED, message, reason=reason)


def storage_refusal(refused: StorageRefused) -> ServiceError:
    """The permanent answer to a request the storage engine refused (never "retry").

    Too large: INVALID_ARGUMENT (this request can never be stored as it is); a missing
    schema, a bad query, a configuration or permission problem: FAILED_PRECONDITION (the
    deployment must change first). The reason is ``STORAGE_<cause>``.
    """
    if refused.cause == "REQUEST_TOO_LARGE":
        return ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request is too large for the storage engine",
            reason="STORAGE_REQUEST_TOO_LARGE",
        )
    cause = refused.cause.lower().replace("_", " ")
    return ServiceError.failed_precondition(
        f"the storage engine refused the request ({cause}); retrying will not help",
        reason=f"STORAGE_{refused.cause}",
    )


def key_provider_refusal() -> ServiceError:
    """The permanent answer when the key provider refuses a request (credentials denied or
    revoked, a key of the wrong type, a damaged keyring): FAILED_PRECONDITION, never
    "retry": the deployment's keys or credentials must change first."""
    return ServiceError.failed_precondition(
        "the key provider refused the request; retrying will not help",
        reason="KEY_PROVIDER_REFUSED",
    )


def _invalid_request_message(violations: Sequence[tuple[str, str]]) -> str:
    # Field names only: descriptions may be long and values never belong in a message. The
    # message travels as a header too, so only the first few fields are named.
    fields = list(dict.fromkeys(name for name, _ in violations))
    if not fields:
        return "invalid request"
    named = [_shorten(name, _MAX_FIELD_CHARS) for name in fields[:_MAX_FIELDS_IN_MESSAGE]]
    rest = len(fields) - len(named)
    return f"invalid request: {', '.join(named)}" + (f" and {rest} more fields" if rest else "")


_Parsed = TypeVar("_Parsed")


class Violations:
    """Collects every problem with a request so the caller learns them all at once.

    Descriptions must describe the rule ("must be 18 characters"), never echo the value.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        """Record that ``field`` breaks a rule described by ``description``."""
        self._items.append((field, description))

    def require(self, value: object, field: str) -> bool:
        """Record ``field`` as missing when ``value`` is None or empty; True if present."""
        missing = value is None or (isinstance(value, Sized) and len(value) == 0)
        if missing:
            self.add(field, "is required")
        return not missing

    def check(self, condition: bool, field: str, description: str) -> bool:
        """Record a violation of ``field`` unless ``condition`` holds; returns ``condition``."""
        if not condition:
            self.add(field, description)
        return condition

    def parse(
        self, value: str, field: str, parser: Callable[[str], _Parsed | None], rule: str
    ) -> _Parsed | None:
        """``parser(value)``, or None with the violation recorded: ``field`` missing, or
        ``value`` not parsing (``rule`` says what it must be)."""
        if not self.require(value, field):
            return None
        parsed = parser(value)
        self.check(parsed is not None, field, rule)
        return parsed

    @property
    def items(self) -> list[tuple[str, str]]:
        """The violations recorded so far, as (field, description) pairs."""
        return list(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_any(self, reason: str = "INVALID_ARGUMENT") -> None:
        """Raise an INVALID_ARGUMENT :class:`ServiceError` listing every violation, if any."""
        if self._items:
            raise ServiceError.invalid_argument(self._items, reason=reason)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rich_status(err: ServiceError) -> Any:
    """Build the ``google.rpc.Status`` message for ``err`` (details included)."""
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    if err.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=name, description=description)
                for name, description in err.field_violations
            ]
        )
        status.details.append(_pack(bad_request))
    status.details.append(
        _pack(
            error_details_pb2.ErrorInfo(reason=err.reason, domain=err.domain, metadata=err.metadata)
        )
    )
    if err.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(err.retry_delay * 1e9))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status


def to_status(err: ServiceError) -> grpc.Status:
    """Convert ``err`` to a ``grpc.Status`` for ``ServicerContext.abort_with_status``."""
    return rpc_status.to_status(to_rich_status(err))


@dataclass
class ErrorDetails:
    """What a client learns from a failed call: code, safe message and structured details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_delay: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def error_details(exc: grpc.aio.AioRpcError | grpc.RpcError) -> ErrorDetails:
    """Parse the rich status a healthbank service attached to a failed call.

    Works for both ``grpc.aio.AioRpcError`` and sync ``grpc.RpcError`` (which is also a
    ``grpc.Call``). A missing or unreadable details trailer yields just code and message.
    """
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    trailers_fn = getattr(exc, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    message = (details_fn() if callable(details_fn) else None) or ""
    result = ErrorDetails(code=code, message=message)
    trailers = (trailers_fn() if callable(trailers_fn) else None) or ()
    raw = next((value for key, value in trailers if key == _STATUS_DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return result
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:
        # A garbled trailer must not hide the status code the caller already has.
        return result
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            packed.Unpack(bad_request)
            result.field_violations.extend(
                (violation.field, violation.description)
                for violation in bad_request.field_violations
            )
        elif packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            result.reason = info.reason
            result.domain = info.domain
            result.metadata = dict(info.metadata)
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            result.retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    return result
