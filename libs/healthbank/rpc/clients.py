"""Calling another healthbank service in one line.

``ConsentStub(factory.channel("consent"))`` is a stub on a cached channel whose
interceptor carries the request id, the caller's credentials, a deadline and the trace
context along, so servicers never thread them through by hand. Every outgoing call gets a
CLIENT span (the conventions of :mod:`healthbank.rpc.tracing`), the parent of the callee's
server span.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose, encode_token
from healthbank.core.config import Settings
from healthbank.core.group_commit import serving_a_shared_batch
from healthbank.core.logs import request_id_var
from healthbank.core.telemetry import links_to_other_callers
from healthbank.rpc.auth import AUTHORIZATION_KEY, BEARER_PREFIX, inbound_token
from healthbank.rpc.interceptors import REQUEST_ID_KEY, RpcSettings, inbound_deadline
from healthbank.rpc.tls import channel_credentials
from healthbank.rpc.tracing import (
    RPC_INSTRUMENTATION,
    new_request_id,
    record_status,
    rpc_attributes,
)

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "OWN_SUBCHANNELS",
    "ClientFactory",
    "OutboundInterceptor",
    "open_channel",
]

DEFAULT_TIMEOUT_SECONDS = 10.0
# Got once, not per call; a proxy until a provider is installed (see telemetry._TRACER).
_RPC_TRACER = trace.get_tracer(RPC_INSTRUMENTATION)

# A channel with subchannels of its own. By default gRPC shares a process-wide subchannel per
# address, so a new channel to an address whose earlier server went away inherits that
# subchannel's reconnect backoff and fails at once ("failed to connect to all addresses")
# though a new server now listens there. Ports are reused (tests bind port 0; a restarted
# service keeps its address), so every channel this project opens keeps its own.
OWN_SUBCHANNELS: tuple[str, int] = ("grpc.use_local_subchannel_pool", 1)


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[Any] | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to ``target``: plaintext, or TLS when ``credentials`` are given.

    Every channel in this project is opened here, so every one keeps subchannels of its own
    (:data:`OWN_SUBCHANNELS`, placed before ``options``): with gRPC's process-wide pool a
    channel to a reused port inherits a gone server's reconnect backoff and fails with
    UNAVAILABLE "failed to connect to all addresses" while the new server is SERVING.
    tests/unit/libs/healthbank/rpc/test_rpc_channels.py keeps direct calls out of the code.
    """
    merged = [OWN_SUBCHANNELS, *options]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=merged, interceptors=interceptors)


TokenSource = str | Callable[[], str]


class OutboundInterceptor:
    """Adds request id, credentials, deadline and W3C trace context to every outgoing call.

    Credentials: the factory's own service token, so the callee authorizes the calling
    service and the end user travels in request fields (CheckRequest.accessor,
    AccessEvent.actor). A factory without a token of its own forwards its caller's token;
    a call that must act as the caller passes :func:`caller_metadata` explicitly.
    Timeout: the smaller of the explicit (or default) timeout and what is left of the
    inbound call's deadline.
    """

    def __init__(
        self,
        default_timeout: float,
        token: TokenSource | None = None,
        *,
        forward_caller: bool = True,
    ) -> None:
        self._default_timeout = default_timeout
        self._token = token
        self._forward_caller = forward_caller

    def _own_token(self) -> str | None:
        if self._token is None or isinstance(self._token, str):
            return self._token
        return self._token()

    def _augment(self, details: Any, trace_context: Context) -> Any:
        """The call's details with request id, credentials, the trace context of
        ``trace_context`` and timeout added."""
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if REQUEST_ID_KEY not in metadata:
            metadata.add(REQUEST_ID_KEY, request_id_var.get() or new_request_id())
        if AUTHORIZATION_KEY not in metadata:
            # A service calls as itself (the end user travels in request fields); only a
            # factory without credentials of its own forwards its caller's token.
            token = self._own_token() or (inbound_token.get() if self._forward_caller else None)
            if token:
                metadata.add(AUTHORIZATION_KEY, f"Bearer {token}")
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace_context)
        for key, value in carrier.items():
            metadata[key] = value
        timeout = details.timeout if details.timeout is not None else self._default_timeout
        deadline = inbound_deadline.get()
        if deadline is not None and not serving_a_shared_batch():
            # Never outlive the caller: work past its deadline is wasted. Not so for a
            # batch (ADR 57): its first caller's deadline is not the others'.
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    def interceptors(self, address: str | None = None) -> list[Any]:
        """One grpc.aio interceptor per call type, for a channel to ``address``.

        grpc.aio files an interceptor under the first call type it implements only, so a
        single class implementing all four would leave streaming calls without credentials.
        """
        traced = _TracedCall(self._augment, address)
        return [
            _UnaryUnary(traced),
            _UnaryStream(traced),
            _StreamUnary(traced),
            _StreamStream(traced),
        ]


class _TracedCall:
    """Starts a CLIENT span, sends the call under it, ends the span with the final status."""

    def __init__(self, augment: Callable[[Any, Context], Any], address: str | None) -> None:
        self._augment = augment
        self._attributes: dict[str, Any] = {}
        if address:
            host, _, port = address.rpartition(":")
            self._attributes["server.address"] = host.strip("[]")
            if port.isdigit():
                self._attributes["server.port"] = int(port)
        # Tasks that end spans when their calls finish; held so they are not collected.
        self._finishing: set[asyncio.Task[None]] = set()

    async def __call__(
        self, continuation: Callable[[Any, Any], Any], details: Any, payload: Any
    ) -> Any:
        method = details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        span = _RPC_TRACER.start_span(
            method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={**rpc_attributes(method), **self._attributes},
            links=links_to_other_callers(),
            record_exception=False,
            set_status_on_exception=False,
        )
        # The callee's server span becomes this span's child (traceparent injected here).
        augmented = self._augment(details, trace.set_span_in_context(span))
        try:
            call = await continuation(augmented, payload)
        except BaseException:
            record_status(span, grpc.StatusCode.UNKNOWN)
            span.end()
            raise
        if not span.is_recording():
            # Nothing to record (no exporter, or not sampled): no task waiting for the
            # outcome, which cost each call more than the rest of this (ADR 65).
            span.end()
            return call
        task = asyncio.get_running_loop().create_task(_end_span_when_done(span, call))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return call


async def _end_span_when_done(span: Span, call: Any) -> None:
    code = grpc.StatusCode.CANCELLED  # if the loop stops first, the outcome is unknown
    try:
        code = await call.code()
    finally:
        record_status(span, code)
        span.end()


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc, unused-ignore]
    def __init__(self, traced: _TracedCall) -> None:
        self._traced = traced

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await self._traced(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc, unused-ignore]
    def __init__(self, traced: _TracedCall) -> None:
        self._traced = traced

    async def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await self._traced(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc, unused-ignore]
    def __init__(self, traced: _TracedCall) -> None:
        self._traced = traced

    async def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, requests: Any
    ) -> Any:
        return await self._traced(continuation, client_call_details, requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc, unused-ignore]
    def __init__(self, traced: _TracedCall) -> None:
        self._traced = traced

    async def intercept_stream_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, requests: Any
    ) -> Any:
        return await self._traced(continuation, client_call_details, requests)


class ClientFactory:
    """Creates stubs for other healthbank services over one cached channel per address.

    Args:
        settings: where services live (``settings.address_of(name)``).
        token: this service's own credentials: a token, or a callable minting a fresh one
            (so it never expires). Without it, the inbound caller's token is forwarded.
        addresses: overrides of ``address_of`` by service name (tests, local stack).
        default_timeout: timeout for calls that set none, in seconds.
        credentials: channel credentials (mTLS); None uses plaintext (development). With
            them, the server must hold a certificate in the service's own name.
        options: extra grpc channel arguments.
        forward_caller: without a token of its own, send the inbound caller's (default);
            False for a service known by its certificate, which calls as itself.
    """

    def __init__(
        self,
        settings: RpcSettings,
        *,
        token: TokenSource | None = None,
        addresses: Mapping[str, str] | None = None,
        default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        forward_caller: bool = True,
    ) -> None:
        self._settings = settings
        self._addresses = dict(addresses or {})
        self._credentials = credentials
        self._options = tuple(options)
        self._interceptor = OutboundInterceptor(
            default_timeout, token, forward_caller=forward_caller
        )
        self._channels: dict[str, Any] = {}
        self._closed = False

    def address_of(self, service: str) -> str:
        """The ``host:port`` used for ``service`` (override first, then settings)."""
        return self._addresses.get(service) or self._settings.address_of(service)

    def channel(self, service: str) -> grpc.aio.Channel:
        """The cached channel to ``service``, created on first use."""
        if self._closed:
            raise RuntimeError("ClientFactory is closed")
        address = self.address_of(service)
        # Over TLS a channel expects one service's certificate, so it serves only that name.
        key = address if self._credentials is None else f"{service}@{address}"
        channel = self._channels.get(key)
        if channel is None:
            options = self._options
            if self._credentials is not None:
                # Whatever the address, the peer must prove it is this service.
                options = (("grpc.ssl_target_name_override", service), *options)
            channel = open_channel(
                address,
                credentials=self._credentials,
                options=options,
                interceptors=self._interceptor.interceptors(address),
            )
            self._channels[key] = channel
        return channel

    async def close(self, grace: float | None = None) -> None:
        """Close every channel (pending calls get ``grace`` seconds)."""
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)

    async def __aenter__(self) -> ClientFactory:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def service_client_factory(
    settings: Settings, service: str, *, addresses: Mapping[str, str] | None = None
) -> ClientFactory:
    """The ClientFactory a service uses: every call is made as ``service``.

    With mTLS on, the service's certificate says so; while development tokens are on, each
    call also carries a fresh hb1 token of the service (checked against the certificate).
    Without development tokens no token travels, and the caller's is never forwarded.
    """
    credentials = channel_credentials(settings)
    if not settings.dev_tokens:
        return ClientFactory(
            settings, addresses=addresses, credentials=credentials, forward_caller=False
        )
    secret = settings.auth_secret.get_secret_value().encode()
    principal = Principal(PrincipalKind.SERVICE, service, purpose=Purpose.OPERATIONS)

    def mint() -> str:
        # Short-lived and minted per call: an HMAC is cheaper than tracking expiry.
        return encode_token(principal, secret, ttl_seconds=300)

    return ClientFactory(settings, token=mint, addresses=addresses, credentials=credentials)


def caller_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that makes one outgoing call act as the inbound caller (e.g. break-glass)."""
    token = inbound_token.get()
    return ((AUTHORIZATION_KEY, f"{BEARER_PREFIX}{token}"),) if token else ()
