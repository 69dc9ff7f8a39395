"""grpc.aio server interceptors shared by every healthbank service.

Each interceptor wraps the method handler's behaviour (all four arities) in an async
context manager that runs inside the RPC's own task, so ContextVars it sets are visible
to the servicer and to outgoing calls the servicer makes. Streaming responses are driven
by the wrapper itself with ``context.write`` so that clean-up always happens in that task,
even when the client cancels mid-stream.

Order (outermost first, see :func:`default_interceptors`): request id → telemetry →
errors → deadline → principal. Telemetry sits outside the error mapping so that it sees
the final status code; deadline and principal sit inside it so that their refusals
become proper rich statuses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from contextvars import ContextVar, Token
from functools import partial
from typing import Any, Protocol, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind

from healthbank.contracts.principal import InvalidToken, Principal
from healthbank.core.logs import request_id_var, stack_without_text
from healthbank.core.phi import redact
from healthbank.crypto.keys import KeyProviderError, KeyProviderUnavailable
from healthbank.rpc import authz
from healthbank.rpc.auth import (
    AUTHORIZATION_KEY,
    TokenSettings,
    current_principal,
    inbound_token,
    token_verifier,
)
from healthbank.rpc.downstream import downstream_error
from healthbank.rpc.errors import (
    ServiceError,
    key_provider_refusal,
    storage_refusal,
    to_status,
)
from healthbank.rpc.rate_limit import RateLimiter, rate_limited, rates_of, refusal_hold
from healthbank.rpc.tls import bind_principal, peer_identity
from healthbank.rpc.tracing import (
    RPC_INSTRUMENTATION,
    adopt_request_id,
    record_status,
    rpc_attributes,
)
from healthbank.storage.errors import SchemaPending, StorageRefused, StorageUnavailable

__all__ = [
    "REQUEST_ID_KEY",
    "DeadlineInterceptor",
    "ErrorInterceptor",
    "PrincipalInterceptor",
    "RequestIdInterceptor",
    "RpcSettings",
    "RpcTelemetry",
    "TelemetryInterceptor",
    "default_interceptors",
    "inbound_deadline",
    "metadata_value",
]

_log = logging.getLogger(__name__)
_access_log = logging.getLogger("healthbank.rpc.access")

REQUEST_ID_KEY = "x-request-id"

# Infrastructure methods polled by probes; their access lines go to DEBUG to keep logs useful.
_QUIET_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})

inbound_deadline: ContextVar[float | None] = ContextVar("inbound_deadline", default=None)
"""Absolute ``time.monotonic()`` deadline of the RPC being served (None: no deadline)."""

_T = TypeVar("_T")


class RpcSettings(TokenSettings, Protocol):
    """The part of ``healthbank.core.config.Settings`` the rpc package relies on."""

    @property
    def host(self) -> str:
        """Interface the server binds to."""
        ...

    @property
    def shutdown_grace_seconds(self) -> float:
        """How long in-flight calls may run after a stop is requested."""
        ...

    def address_of(self, service: str) -> str:
        """``host:port`` of another healthbank service."""
        ...

    def listen_port(self, service: str) -> int:
        """The port ``service`` listens on (0: any free port)."""
        ...


class RpcTelemetry(Protocol):
    """The part of ``healthbank.core.telemetry.Telemetry`` the rpc package relies on."""

    @property
    def tracer(self) -> trace.Tracer:
        """Tracer for server spans."""
        ...

    @property
    def meter(self) -> metrics.Meter:
        """Meter for RPC metrics."""
        ...


def metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    """Return the first text value of ``key`` in gRPC ``metadata`` (keys are lowercase)."""
    for item_key, value in metadata or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


def _restore(var: ContextVar[_T], token: Token[_T]) -> None:
    # A token can only be reset in the Context that made it; if clean-up ever runs
    # elsewhere the RPC's context is being discarded anyway, so there is nothing to undo.
    with suppress(ValueError, RuntimeError):
        var.reset(token)


_Around = Callable[[Any], AbstractAsyncContextManager[None]]


async def _finish(result: Any) -> Any:
    # aio servers also accept plain (non-async) behaviours; treat both alike.
    if inspect.isawaitable(result):
        return await result
    return result


async def _drive_stream(result: Any, context: Any) -> None:
    """Send a streaming behaviour's responses from inside the wrapper's own frame."""
    if inspect.isawaitable(result):
        # The servicer writes with context.write itself.
        await result
        return
    if hasattr(result, "__aiter__"):
        try:
            async for message in result:
                await context.write(message)
        finally:
            aclose = getattr(result, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    if result is not None:
        for message in result:
            await context.write(message)


_END_OF_STREAM = object()


async def _each_checked(
    first: Any, rest: AsyncIterator[Any], check: Callable[[Any], None] | None
) -> AsyncIterator[Any]:
    """The request stream (``first``, then ``rest``), each message passed to ``check`` (which
    may raise) as it arrives."""
    if first is _END_OF_STREAM:
        return
    if check is not None:
        check(first)
    yield first
    async for message in rest:
        if check is not None:
            check(message)
        yield message


def _wrap_handler(
    handler: Any,
    around: _Around,
    check: Callable[[Any], Callable[[Any], None] | None] | None = None,
) -> Any:
    """Return ``handler`` with each behaviour run inside ``around(context)``.

    ``check(context)``, if given, is asked inside ``around`` for a per-message check, which
    then sees the request (unary) or every message of the request stream as it arrives.
    """

    def checked(request: Any, context: Any) -> Any:
        message_check = check(context) if check is not None else None
        if message_check is not None:
            message_check(request)
        return request

    async def checked_stream(request_iterator: Any, context: Any) -> Any:
        if check is None:
            return request_iterator
        # Decide once the first message (or the end of the stream) is in: a refusal sent
        # while the client is still writing reaches grpc.aio clients as INTERNAL now and then.
        requests = aiter(request_iterator)
        first = await anext(requests, _END_OF_STREAM)
        return _each_checked(first, requests, check(context))

    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def wrapped_unary_unary(request: Any, context: Any) -> Any:
            async with around(context):
                return await _finish(unary_unary(checked(request, context), context))

        return grpc.unary_unary_rpc_method_handler(wrapped_unary_unary, **common)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def wrapped_unary_stream(request: Any, context: Any) -> None:
            async with around(context):
                await _drive_stream(unary_stream(checked(request, context), context), context)

        return grpc.unary_stream_rpc_method_handler(wrapped_unary_stream, **common)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def wrapped_stream_unary(request_iterator: Any, context: Any) -> Any:
            async with around(context):
                requests = await checked_stream(request_iterator, context)
                return await _finish(stream_unary(requests, context))

        return grpc.stream_unary_rpc_method_handler(wrapped_stream_unary, **common)
    if handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        async def wrapped_stream_stream(request_iterator: Any, context: Any) -> None:
            async with around(context):
                requests = await checked_stream(request_iterator, context)
                await _drive_stream(stream_stream(requests, context), context)

        return grpc.stream_stream_rpc_method_handler(wrapped_stream_stream, **common)
    return handler


class _AroundInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc, unused-ignore]
    """Base: run every behaviour of every method inside :meth:`around`."""

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        """Wrap the handler chosen by the rest of the chain (None: method unknown)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap_handler(handler, partial(self.around, handler_call_details))

    def around(self, call_details: Any, context: Any) -> AbstractAsyncContextManager[None]:
        """The per-call context manager; subclasses implement it."""
        raise NotImplementedError


class RequestIdInterceptor(_AroundInterceptor):
    """Adopt the caller's ``x-request-id`` if well-formed (or mint one), expose it, echo it.

    See :func:`healthbank.rpc.tracing.adopt_request_id`: an id that could carry an
    identifier is replaced, so it never reaches logs, spans or the response.

    The id is echoed in the initial metadata, which this interceptor therefore sends
    before the servicer runs: servicers must put their own response metadata in the
    trailers (``context.set_trailing_metadata``), not in ``send_initial_metadata``.
    """

    @asynccontextmanager
    async def around(self, call_details: Any, context: Any) -> AsyncIterator[None]:
        """Set ``request_id_var`` for the call and send the id in initial metadata."""
        offered = metadata_value(call_details.invocation_metadata, REQUEST_ID_KEY)
        request_id = adopt_request_id(offered)
        token = request_id_var.set(request_id)
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            yield
        finally:
            _restore(request_id_var, token)


class TelemetryInterceptor(_AroundInterceptor):
    """A server span, a duration histogram and an access log line per RPC.

    Only the method, status code and request id are recorded: never payloads or
    metadata values, which may hold PHI.
    """

    def __init__(self, service: str, telemetry: RpcTelemetry | None = None) -> None:
        self._service = service
        self._tracer = (
            telemetry.tracer if telemetry is not None else trace.get_tracer(RPC_INSTRUMENTATION)
        )
        meter = telemetry.meter if telemetry is not None else metrics.get_meter(RPC_INSTRUMENTATION)
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )

    @asynccontextmanager
    async def around(self, call_details: Any, context: Any) -> AsyncIterator[None]:
        """Trace, time and log the call, recording its final status code."""
        method: str = call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        full_name = method.lstrip("/")
        rpc_service = full_name.partition("/")[0]
        # Continue the caller's trace (W3C traceparent) if it sent one.
        carrier = {
            key: value
            for key, value in call_details.invocation_metadata or ()
            if isinstance(value, str)
        }
        request_id = request_id_var.get() or ""
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        with self._tracer.start_as_current_span(
            full_name,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                **rpc_attributes(full_name),
                "healthbank.service": self._service,
                "healthbank.request_id": request_id,
            },
            # Exception messages may hold PHI: never copy them into spans.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
                code = context.code() or grpc.StatusCode.OK
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                duration_ms = (time.perf_counter() - started) * 1000.0
                record_status(span, code)
                self._duration.record(
                    duration_ms,
                    {"rpc.method": full_name, "rpc.grpc.status_code": code.value[0]},
                )
                level = logging.DEBUG if rpc_service in _QUIET_SERVICES else logging.INFO
                _access_log.log(
                    level,
                    "rpc method=%s code=%s duration_ms=%.1f request_id=%s",
                    full_name,
                    code.name,
                    duration_ms,
                    request_id,
                )


def _cancelled_code(context: Any) -> Any:
    # grpc cancels the handler task both when the client goes away and when the deadline
    # passes; tell the two apart for metrics.
    try:
        remaining = context.time_remaining()
    except Exception:
        remaining = None
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class ErrorInterceptor(_AroundInterceptor):
    """Turn exceptions into statuses: ServiceError → rich status, anything else → INTERNAL.

    Unexpected exceptions are logged with their type and (redacted) traceback only; their
    text never reaches the caller or the log because it may contain PHI.
    """

    def __init__(self, service: str) -> None:
        self._service = service

    @asynccontextmanager
    async def around(self, call_details: Any, context: Any) -> AsyncIterator[None]:
        """Map whatever the handler raises to a status the caller can act on."""
        try:
            yield
        except ServiceError as err:
            await context.abort_with_status(to_status(err))
        except grpc.aio.AbortError:
            # The servicer already chose a status with context.abort.
            raise
        except grpc.RpcError as err:
            # A downstream call failed and the servicer did not name the dependency.
            _log.warning("unhandled downstream failure in %s", call_details.method)
            await context.abort_with_status(to_status(downstream_error(err, "dependency")))
        except StorageRefused as exc:
            # Permanent: the same request fails the same way; the cause is in the reason.
            _log.warning("%s in %s: %s", type(exc).__name__, call_details.method, exc.cause)
            await context.abort_with_status(to_status(storage_refusal(exc)))
        except (StorageUnavailable, KeyProviderUnavailable) as exc:
            # An engine (Cassandra, Vault) is down: retryable, and nothing was acknowledged.
            _log.warning("%s in %s: %s", type(exc).__name__, call_details.method, redact(str(exc)))
            await context.abort_with_status(
                to_status(
                    ServiceError.unavailable(
                        "a storage or key engine is unavailable", reason=_engine_reason(exc)
                    )
                )
            )
        except KeyProviderError as exc:
            # Permanent, as a storage refusal: the deployment's keys or credentials must change.
            _log.warning("%s in %s: %s", type(exc).__name__, call_details.method, redact(str(exc)))
            await context.abort_with_status(to_status(key_provider_refusal()))
        except Exception as exc:
            request_id = request_id_var.get() or "-"
            _log.error(
                "unhandled %s in %s (service %s, request id %s)\n%s",
                type(exc).__qualname__,
                call_details.method,
                self._service,
                request_id,
                stack_without_text(exc),
            )
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
            )


def _engine_reason(exc: Exception) -> str:
    if isinstance(exc, SchemaPending):
        return "SCHEMA_PENDING"
    if isinstance(exc, StorageUnavailable):
        return "STORAGE_UNAVAILABLE"
    return "KEY_PROVIDER_UNAVAILABLE"


class DeadlineInterceptor(_AroundInterceptor):
    """Expose the call's deadline to outgoing calls; refuse calls that are already late."""

    @asynccontextmanager
    async def around(self, call_details: Any, context: Any) -> AsyncIterator[None]:
        """Set ``inbound_deadline`` (absolute, monotonic clock) for the call."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise ServiceError.deadline_exceeded("deadline expired before the call started")
        token = inbound_deadline.set(None if remaining is None else time.monotonic() + remaining)
        try:
            yield
        finally:
            _restore(inbound_deadline, token)


class PrincipalInterceptor(_AroundInterceptor):
    """Verify the ``authorization: Bearer <token>`` metadata, then apply the authorization table.

    Bad credentials, or a service or hospital-engine token over a certificate that is not its
    own (``healthbank.rpc.tls.bind_principal``), are refused with UNAUTHENTICATED before the
    servicer runs; a call without a token over an mTLS certificate acts as the service (or
    hospital engine) the certificate names. Then :mod:`healthbank.rpc.authz` decides, in this
    one place for every service: a method not in its table is refused, a public method needs
    no credentials, any other needs them (UNAUTHENTICATED) and a principal the table admits
    (PERMISSION_DENIED otherwise). Scopes that read the request are checked on the request,
    or on each message of a request stream as the servicer reads it. The servicer sees the
    principal in ``current_principal``.
    """

    def __init__(
        self,
        verify: Callable[[str], Principal],
        authorization: authz.AuthorizationTable = authz.AUTHORIZATION_TABLE,
    ) -> None:
        self._verify = verify
        self._authorization = authorization

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        """Wrap the handler so that each call is authenticated and authorized first."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = _method_name(handler_call_details)
        return _wrap_handler(
            handler,
            partial(self.around, handler_call_details),
            lambda _context: authz.check_call(method, current_principal.get(), self._authorization),
        )

    @asynccontextmanager
    async def around(self, call_details: Any, context: Any) -> AsyncIterator[None]:
        """Set ``current_principal`` and ``inbound_token`` for the call."""
        header = metadata_value(call_details.invocation_metadata, AUTHORIZATION_KEY)
        principal: Principal | None = None
        token: str | None = None
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                raise ServiceError.unauthenticated(
                    "unsupported authorization scheme", reason="UNSUPPORTED_AUTH_SCHEME"
                )
            token = credentials.strip()
            try:
                principal = self._verify(token)
            except InvalidToken as error:
                raise ServiceError.unauthenticated(error.message, reason=error.reason) from None
        # Over mTLS the client certificate must back the token (and names a calling service).
        principal = bind_principal(principal, peer_identity(context))
        principal_reset = current_principal.set(principal)
        token_reset = inbound_token.set(token)
        try:
            yield
        finally:
            _restore(inbound_token, token_reset)
            _restore(current_principal, principal_reset)


class RateLimitInterceptor(_AroundInterceptor):
    """Refuse a hospital engine's or clinician's call over its own rate limit with
    RESOURCE_EXHAUSTED and RetryInfo (:mod:`healthbank.rpc.rate_limit`), before the
    servicer runs; a call that a token reaches within ``refusal_hold`` waits for it, a
    refused one is held that long. Inside the principal interceptor: it limits the caller
    it verified."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    @asynccontextmanager
    async def around(self, call_details: Any, context: Any) -> AsyncIterator[None]:
        """Spend one of the caller's tokens, or refuse the call."""
        hold = refusal_hold(context.time_remaining())
        admission = self.limiter.admit(current_principal.get(), max_delay=hold)
        if admission.refused:
            await asyncio.sleep(hold)
            raise rate_limited(max(admission.delay - hold, 0.001))
        if admission.delay > 0:
            await asyncio.sleep(admission.delay)
        yield


def _method_name(call_details: Any) -> str:
    method = call_details.method
    if isinstance(method, bytes):
        return method.decode("utf-8", "replace")
    return str(method)


def default_interceptors(
    service: str,
    settings: RpcSettings,
    telemetry: RpcTelemetry | None = None,
    authorization: authz.AuthorizationTable = authz.AUTHORIZATION_TABLE,
) -> list[grpc.aio.ServerInterceptor]:
    """The standard interceptor chain for ``service``, outermost first.

    ``authorization`` is the table calls are checked against (tests that serve a service of
    their own extend the real one).
    """
    return [
        RequestIdInterceptor(),
        TelemetryInterceptor(service, telemetry),
        ErrorInterceptor(service),
        DeadlineInterceptor(),
        PrincipalInterceptor(token_verifier(settings, service), authorization),
        RateLimitInterceptor(RateLimiter(rates_of(settings))),
    ]
