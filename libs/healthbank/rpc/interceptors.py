"""grpc.aio server interceptors shared by every healthbank service.

An interceptor wraps the method handler's behaviour (all four arities) in an async
context manager that runs inside the RPC's own task, so ContextVars it sets are visible
to the servicer and to outgoing calls the servicer makes. Streaming responses are driven
by the wrapper itself with ``context.write`` so that clean-up always happens in that task,
even when the client cancels mid-stream.

One interceptor, :class:`CallInterceptor`, does every step (ADR 65), in this order:
request id → telemetry → errors → deadline → principal → authorization → rate limit.
Telemetry sits outside the error mapping so that it sees the final status code; the
later steps sit inside it so that their refusals become proper rich statuses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
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
    "CallInterceptor",
    "RpcSettings",
    "RpcTelemetry",
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


# A per-call context manager, given the call's context and its request stream (None for a
# unary request); what it yields is the per-message check of the request (or of each
# message of a request stream), or None when the messages need none.
MessageCheck = Callable[[Any], None]
_Around = Callable[
    [Any, AsyncIterator[Any] | None], AbstractAsyncContextManager[MessageCheck | None]
]


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
    first: Any, rest: AsyncIterator[Any], check: MessageCheck | None
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


def _checked(request: Any, check: MessageCheck | None) -> Any:
    if check is not None:
        check(request)
    return request


async def _checked_stream(requests: AsyncIterator[Any], check: MessageCheck | None) -> Any:
    if check is None:
        return requests
    # Decide once the first message (or the end of the stream) is in (see
    # await_first_message).
    first = await anext(requests, _END_OF_STREAM)
    return _each_checked(first, requests, check)


async def await_first_message(requests: AsyncIterator[Any] | None) -> None:
    """Before refusing a call, wait for its request stream's first message (or its end; a
    unary request is in already): a refusal sent while the client is still writing reaches
    grpc.aio clients as INTERNAL now and then, a permanent error in place of the refusal."""
    if requests is not None:
        await anext(requests, None)


def _wrap_handler(handler: Any, around: _Around) -> Any:
    """Return ``handler`` with each behaviour run inside ``around(context, requests)``
    (``requests``: the request stream, None for a unary request), whose per-message check
    (if any) sees the request (unary) or every message of the request stream as it arrives."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def wrapped_unary_unary(request: Any, context: Any) -> Any:
            async with around(context, None) as check:
                return await _finish(unary_unary(_checked(request, check), context))

        return grpc.unary_unary_rpc_method_handler(wrapped_unary_unary, **common)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def wrapped_unary_stream(request: Any, context: Any) -> None:
            async with around(context, None) as check:
                await _drive_stream(unary_stream(_checked(request, check), context), context)

        return grpc.unary_stream_rpc_method_handler(wrapped_unary_stream, **common)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def wrapped_stream_unary(request_iterator: Any, context: Any) -> Any:
            requests = aiter(request_iterator)
            async with around(context, requests) as check:
                checked = await _checked_stream(requests, check)
                return await _finish(stream_unary(checked, context))

        return grpc.stream_unary_rpc_method_handler(wrapped_stream_unary, **common)
    if handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        async def wrapped_stream_stream(request_iterator: Any, context: Any) -> None:
            requests = aiter(request_iterator)
            async with around(context, requests) as check:
                checked = await _checked_stream(requests, check)
                await _drive_stream(stream_stream(checked, context), context)

        return grpc.stream_stream_rpc_method_handler(wrapped_stream_stream, **common)
    return handler


class _AroundInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc, unused-ignore]
    """Base: run every behaviour of every method inside :meth:`around`.

    Each method's handler is wrapped once and the wrapper reused (a generic handler that
    returns a new handler per call gets a new wrapper): wrapping on every call cost more
    than the interceptor's own work (ADR 65).
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        """Wrap the handler chosen by the rest of the chain (None: method unknown)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = _method_name(handler_call_details)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap_handler(handler, partial(self.around, method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def around(
        self, method: str, context: Any, requests: AsyncIterator[Any] | None
    ) -> AbstractAsyncContextManager[MessageCheck | None]:
        """The per-call context manager of ``method``; subclasses implement it."""
        raise NotImplementedError


class CallInterceptor(_AroundInterceptor):
    """Every service's per-call work, in one wrapper (ADR 65), outermost first:

    1. **Request id.** The caller's ``x-request-id`` is adopted if well-formed, else one is
       minted (:func:`healthbank.rpc.tracing.adopt_request_id`: an id that could carry an
       identifier is replaced, so it never reaches logs, spans or the response). The id
       the call was served under goes back in the trailing metadata, with the status
       (also with a refusal): a servicer adding trailers of its own keeps it there.
    2. **Telemetry.** A server span (continuing the caller's W3C trace), a duration histogram
       and an access log line, with the final status code. Only the method, status code and
       request id are recorded: never payloads or metadata values, which may hold PHI.
    3. **Errors.** ServiceError becomes a rich status; storage and key-engine failures their
       retryable or permanent statuses; anything else INTERNAL, logged with its type and
       redacted traceback only (its text may hold PHI).
    4. **Deadline.** A call already late is refused; what is left of it is exposed to
       outgoing calls in ``inbound_deadline``.
    5. **Principal.** The ``authorization: Bearer <token>`` metadata is verified; bad
       credentials, or a service or hospital-engine token over a certificate that is not its
       own (``healthbank.rpc.tls.bind_principal``), are UNAUTHENTICATED. A call without a
       token over an mTLS certificate acts as the service (or hospital engine) the
       certificate names. The servicer sees the principal in ``current_principal``.
    6. **Authorization.** :mod:`healthbank.rpc.authz` decides, in this one place for every
       service: a method not in its table is refused, a public method needs no
       credentials, any other needs them (UNAUTHENTICATED) and a principal the table admits
       (PERMISSION_DENIED otherwise). Scopes that read the request are checked on the
       request, or on each message of a request stream as the servicer reads it.
    7. **Rate limit.** A hospital engine's or clinician's call over its own limit is refused
       with RESOURCE_EXHAUSTED and RetryInfo (:mod:`healthbank.rpc.rate_limit`); a call that
       a token reaches within ``refusal_hold`` waits for it, a refused one is held that long.
    """

    def __init__(
        self,
        service: str,
        verify: Callable[[str], Principal],
        limiter: RateLimiter,
        telemetry: RpcTelemetry | None = None,
        authorization: authz.AuthorizationTable = authz.AUTHORIZATION_TABLE,
    ) -> None:
        super().__init__()
        self._service = service
        self._verify = verify
        self.limiter = limiter
        self._authorization = authorization
        self._tracer = (
            telemetry.tracer if telemetry is not None else trace.get_tracer(RPC_INSTRUMENTATION)
        )
        meter = telemetry.meter if telemetry is not None else metrics.get_meter(RPC_INSTRUMENTATION)
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )

    @asynccontextmanager
    async def around(
        self, method: str, context: Any, requests: AsyncIterator[Any] | None
    ) -> AsyncIterator[MessageCheck | None]:
        """Serve one call of ``method`` through the seven steps above."""
        metadata = context.invocation_metadata() or ()
        offered = metadata_value(metadata, REQUEST_ID_KEY)
        request_id = adopt_request_id(offered)
        request_id_reset = request_id_var.set(request_id)
        try:
            # In the trailers: they leave with the status, where initial metadata sent now
            # would cost a batch of its own (ADR 65).
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            with self._traced(method, metadata, request_id, context):
                async with _mapped_errors(self._service, method, context):
                    deadline_reset = _set_inbound_deadline(context)
                    try:
                        token, principal, check = await self._admit(
                            method, metadata, context, requests
                        )
                        principal_reset = current_principal.set(principal)
                        token_reset = inbound_token.set(token)
                        try:
                            yield check
                        finally:
                            _restore(inbound_token, token_reset)
                            _restore(current_principal, principal_reset)
                    finally:
                        _restore(inbound_deadline, deadline_reset)
        finally:
            _restore(request_id_var, request_id_reset)

    async def _admit(
        self,
        method: str,
        metadata: Iterable[tuple[str, Any]],
        context: Any,
        requests: AsyncIterator[Any] | None,
    ) -> tuple[str | None, Principal | None, MessageCheck | None]:
        """Steps 5 to 7: the caller's token, its verified principal and the per-message
        check; a refusal raised once a request stream's first message is in."""
        try:
            token = _bearer_token(metadata)
            principal = self._principal(token, context)
            check = authz.check_call(method, principal, self._authorization)
            await self._spend_rate(principal, context)
        except ServiceError:
            await await_first_message(requests)
            raise
        return token, principal, check

    def _principal(self, token: str | None, context: Any) -> Principal | None:
        """The verified caller; UNAUTHENTICATED for bad credentials."""
        principal: Principal | None = None
        if token is not None:
            try:
                principal = self._verify(token)
            except InvalidToken as error:
                raise ServiceError.unauthenticated(error.message, reason=error.reason) from None
        # Over mTLS the client certificate must back the token (and names a calling service).
        return bind_principal(principal, peer_identity(context))

    async def _spend_rate(self, principal: Principal | None, context: Any) -> None:
        """Spend one of the caller's tokens, or refuse the call."""
        hold = refusal_hold(context.time_remaining())
        admission = self.limiter.admit(principal, max_delay=hold)
        if admission.refused:
            await asyncio.sleep(hold)
            raise rate_limited(max(admission.delay - hold, 0.001))
        if admission.delay > 0:
            await asyncio.sleep(admission.delay)

    @contextmanager
    def _traced(
        self,
        method: str,
        metadata: Iterable[tuple[str, Any]],
        request_id: str,
        context: Any,
    ) -> Iterator[None]:
        """Trace, time and log the call, recording its final status code."""
        full_name = method.lstrip("/")
        rpc_service = full_name.partition("/")[0]
        # Continue the caller's trace (W3C traceparent) if it sent one.
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
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


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The bearer token of the ``authorization`` metadata (None: none sent);
    UNAUTHENTICATED for another scheme or an empty one."""
    header = metadata_value(metadata, AUTHORIZATION_KEY)
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ServiceError.unauthenticated(
            "unsupported authorization scheme", reason="UNSUPPORTED_AUTH_SCHEME"
        )
    return credentials.strip()


def _set_inbound_deadline(context: Any) -> Token[float | None]:
    """Expose the call's deadline to outgoing calls; refuse a call that is already late."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise ServiceError.deadline_exceeded("deadline expired before the call started")
    return inbound_deadline.set(None if remaining is None else time.monotonic() + remaining)


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


@asynccontextmanager
async def _mapped_errors(service: str, method: str, context: Any) -> AsyncIterator[None]:
    """Map whatever the call raises to a status the caller can act on: ServiceError → rich
    status, anything unexpected → INTERNAL (logged by type and redacted traceback only)."""
    try:
        yield
    except ServiceError as err:
        await _abort_with(context, to_status(err))
    except grpc.aio.AbortError:
        # The servicer already chose a status with context.abort.
        raise
    except grpc.RpcError as err:
        # A downstream call failed and the servicer did not name the dependency.
        _log.warning("unhandled downstream failure in %s", method)
        await _abort_with(context, to_status(downstream_error(err, "dependency")))
    except StorageRefused as exc:
        # Permanent: the same request fails the same way; the cause is in the reason.
        _log.warning("%s in %s: %s", type(exc).__name__, method, exc.cause)
        await _abort_with(context, to_status(storage_refusal(exc)))
    except (StorageUnavailable, KeyProviderUnavailable) as exc:
        # An engine (Cassandra, Vault) is down: retryable, and nothing was acknowledged.
        _log.warning("%s in %s: %s", type(exc).__name__, method, redact(str(exc)))
        await _abort_with(
            context,
            to_status(
                ServiceError.unavailable(
                    "a storage or key engine is unavailable", reason=_engine_reason(exc)
                )
            ),
        )
    except KeyProviderError as exc:
        # Permanent, as a storage refusal: the deployment's keys or credentials must change.
        _log.warning("%s in %s: %s", type(exc).__name__, method, redact(str(exc)))
        await _abort_with(context, to_status(key_provider_refusal()))
    except Exception as exc:
        request_id = request_id_var.get() or "-"
        _log.error(
            "unhandled %s in %s (service %s, request id %s)\n%s",
            type(exc).__qualname__,
            method,
            service,
            request_id,
            stack_without_text(exc),
        )
        await _abort(context, grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")


async def _abort_with(context: Any, status: grpc.Status) -> None:
    """End the call with ``status`` and its trailers (the rich error details)."""
    await _abort(context, status.code, status.details, status.trailing_metadata)


async def _abort(
    context: Any, code: grpc.StatusCode, details: str, trailers: tuple[Any, ...] = ()
) -> None:
    """End the call with ``code``, ``details`` and ``trailers``, keeping beside them the
    trailers :class:`CallInterceptor` set (the request id)."""
    await context.abort(code, details, (*trailers, *context.trailing_metadata()))


def _engine_reason(exc: Exception) -> str:
    if isinstance(exc, SchemaPending):
        return "SCHEMA_PENDING"
    if isinstance(exc, StorageUnavailable):
        return "STORAGE_UNAVAILABLE"
    return "KEY_PROVIDER_UNAVAILABLE"


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
    """The standard interceptors of ``service``: one :class:`CallInterceptor`.

    ``authorization`` is the table calls are checked against (tests that serve a service of
    their own extend the real one).
    """
    return [
        CallInterceptor(
            service,
            token_verifier(settings, service),
            RateLimiter(rates_of(settings)),
            telemetry,
            authorization,
        )
    ]
