"""The server bootstrap every healthbank service uses.

:class:`ServiceHost` owns one ``grpc.aio`` server with the standard interceptors, the
``grpc.health.v1`` service (driven by a readiness check) and server reflection.
:func:`run_until_signal` runs a host until SIGTERM/SIGINT and drains it: health turns
NOT_SERVING first, then in-flight calls get ``shutdown_grace_seconds`` to finish while
new ones are refused.

The drain keeps the listener open until the in-flight calls are done: health checks are
answered (NOT_SERVING) and new application calls are refused with UNAVAILABLE
(reason ``SHUTTING_DOWN``, retryable elsewhere) by the host's own interceptor. Only then
does grpc's ``server.stop`` run. Calling ``server.stop`` straight away would make gRPC
core cancel every call that had reached the server but was not yet picked up, so a
client checking health during the drain could get CANCELLED instead of an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from healthbank.rpc.errors import ServiceError, to_status
from healthbank.rpc.interceptors import (
    RpcSettings,
    RpcTelemetry,
    _AroundInterceptor,
    await_first_message,
    default_interceptors,
)

__all__ = ["READY_LINE_PREFIX", "ServiceHost", "run_until_signal"]

_log = logging.getLogger(__name__)

READY_LINE_PREFIX = "HEALTHBANK_READY"
"""First word of the line printed to stdout once a host serves: ``HEALTHBANK_READY name port``."""

Registrar = Callable[[grpc.aio.Server], None]
Readiness = Callable[[], Awaitable[bool]]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# How long one readiness check may take before it counts as "not ready".
_READINESS_TIMEOUT_SECONDS = 5.0

# Without this, grpc sets SO_REUSEPORT and a second process on the same port "binds"
# fine and silently shares traffic; a misconfigured port must fail loudly instead.
_DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.so_reuseport", 0),)

# Methods that keep answering during a drain and do not hold it open: health (probes
# must see NOT_SERVING; Watch streams last until the server stops) and reflection.
_DRAIN_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# How long past the grace period stop() waits for grpc before giving up.
_STOP_OVERRUN_SECONDS = 5.0


class _DrainInterceptor(_AroundInterceptor):
    """Counts the application calls in flight; once draining, refuses new ones."""

    def __init__(self) -> None:
        super().__init__()
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        """Leave health and reflection alone; wrap every other method."""
        if str(handler_call_details.method).startswith(_DRAIN_EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)

    @asynccontextmanager
    async def around(
        self, method: str, context: Any, requests: AsyncIterator[Any] | None
    ) -> AsyncIterator[None]:
        """Refuse the call while draining (once a request stream's first message is in);
        otherwise count it until it finishes."""
        if self.draining:
            await await_first_message(requests)
            refusal = ServiceError.unavailable(
                "the service is shutting down; retry on another instance",
                reason="SHUTTING_DOWN",
            )
            await context.abort_with_status(to_status(refusal))
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no application call is in flight."""
        await self._idle.wait()


class ServiceHost:
    """One gRPC server for one healthbank service, with health, reflection and drain.

    Args:
        name: the service name ("ingest", "identity", ...), used in logs and telemetry.
        settings: the service settings (bind address, grace period, token secret).
        register: callables adding the service's servicers to the server
            (e.g. ``lambda s: ingest_pb2_grpc.add_IngestServicer_to_server(impl, s)``).
        service_names: full proto service names served, for health and reflection.
        readiness: async check of the service's dependencies; None means always ready.
        interceptors: server interceptors; defaults to :func:`default_interceptors`.
        telemetry: tracer and meter for the default interceptors.
        credentials: server credentials (mTLS); None serves plaintext (development).
        options: extra grpc channel arguments for the server.
        readiness_interval: seconds between readiness checks.
        port: port to bind instead of ``settings.listen_port(name)``; 0 picks a free port.
    """

    def __init__(
        self,
        name: str,
        settings: RpcSettings,
        *,
        register: Sequence[Registrar],
        service_names: Sequence[str],
        readiness: Readiness | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None,
        telemetry: RpcTelemetry | None = None,
        credentials: grpc.ServerCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        readiness_interval: float = 1.0,
        port: int | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._register = list(register)
        self._service_names = list(dict.fromkeys(service_names))
        self._readiness = readiness
        self._drain = _DrainInterceptor()
        self._interceptors = [
            self._drain,
            *(
                interceptors
                if interceptors is not None
                else default_interceptors(name, settings, telemetry)
            ),
        ]
        self._credentials = credentials
        self._options = [*_DEFAULT_OPTIONS, *options]
        self._readiness_interval = readiness_interval
        self._server: Any = None
        self._health: Any = None
        self._readiness_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._ready: bool | None = None
        self._requested_port = port
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (only after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def health_names(self) -> list[str]:
        """The names whose health status this host reports ("" is the whole server)."""
        return ["", *self._service_names]

    async def start(self, port: int | None = None) -> int:
        """Bind, start serving and return the bound port.

        The port is ``port`` if given, else the one passed to the constructor, else
        ``settings.listen_port(name)``; 0 picks a free port (tests, parallel local stacks).
        """
        if self._server is not None:
            raise RuntimeError("server already started")
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        for register in self._register:
            register(server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        # NOT_SERVING until the first successful readiness check.
        for service_name in self.health_names:
            await self._health.set(service_name, _NOT_SERVING)
        if port is None:
            port = self._requested_port
        bind_port = self._settings.listen_port(self.name) if port is None else port
        address = f"{self._settings.host}:{bind_port}"
        if self._credentials is not None:
            bound = server.add_secure_port(address, self._credentials)
        else:
            bound = server.add_insecure_port(address)
        if not bound:
            # Older grpc versions report a failed bind as port 0 instead of raising.
            raise RuntimeError(f"{self.name}: could not bind {address}")
        self._server = server
        self._port = bound
        await server.start()
        self._readiness_task = asyncio.create_task(
            self._watch_readiness(), name=f"{self.name}-readiness"
        )
        return bound

    async def _check_ready(self) -> bool:
        if self._readiness is None:
            return True
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # stop() sends, leaving this loop running and stop() waiting for it forever.
            async with asyncio.timeout(_READINESS_TIMEOUT_SECONDS):
                return bool(await self._readiness())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Raising means "not ready". Log the type only: a dependency's error text could
            # echo request data.
            _log.warning("%s: readiness check failed with %s", self.name, type(exc).__name__)
            return False

    async def _watch_readiness(self) -> None:
        while True:
            ready = await self._check_ready()
            if ready != self._ready:
                status = _SERVING if ready else _NOT_SERVING
                for service_name in self.health_names:
                    await self._health.set(service_name, status)
                _log.info("%s: health %s", self.name, "SERVING" if ready else "NOT_SERVING")
                self._ready = ready
            await asyncio.sleep(self._readiness_interval)

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, then stop, letting in-flight calls finish for ``grace`` s.

        ``grace`` defaults to ``settings.shutdown_grace_seconds``. Safe to call twice:
        the second call waits for the first.
        """
        if self._server is None:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(grace), name=f"{self.name}-stop")
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float | None) -> None:
        if self._readiness_task is not None:
            self._readiness_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readiness_task
        # Refuse new application calls first: entering graceful shutdown yields to the loop,
        # and a call admitted then would hold the drain open. Probes and load balancers must
        # see NOT_SERVING before the listener goes away.
        self._drain.draining = True
        await self._health.enter_graceful_shutdown()
        grace_seconds = self._settings.shutdown_grace_seconds if grace is None else grace
        _log.info("%s: draining for up to %.1f s", self.name, grace_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        # The listener stays open while calls are in flight (see the module docstring).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds):
                await self._drain.wait_idle()
        remaining = max(0.0, deadline - loop.time())
        try:
            # grpc.aio's stop can, rarely, never return after the grace ran out (a shutdown
            # race inside grpc); a stuck pod would block the rollout, so bound the wait.
            await asyncio.wait_for(self._server.stop(remaining), remaining + _STOP_OVERRUN_SECONDS)
        except TimeoutError:
            _log.warning("%s: server did not stop after its grace period; exiting", self.name)
        _log.info("%s: stopped", self.name)

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        if self._server is None:
            raise RuntimeError("server not started")
        await self._server.wait_for_termination()
        if self._stop_task is not None:
            await asyncio.shield(self._stop_task)


async def run_until_signal(host: ServiceHost) -> None:
    """Start ``host``, serve until SIGTERM or SIGINT, drain and return.

    Prints ``HEALTHBANK_READY <name> <port>`` on stdout once serving, so a parent process
    (the local stack, tests) can learn a port chosen at runtime.
    """
    port = await host.start()
    _log.info("serving name=%s port=%d", host.name, port)
    # What the process built to serve (modules, descriptors, the driver, its connections)
    # lives as long as it does: frozen out of the collector, a full collection no longer
    # walks those ~250,000 objects each time (40-103 ms, every call in flight waiting; ADR 50).
    gc.freeze()

    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: signal.Signals) -> None:
        if stopping:
            _log.info("%s: %s again, still draining", host.name, signum.name)
            return
        _log.info("%s: %s received, shutting down", host.name, signum.name)
        stopping.append(loop.create_task(host.stop()))

    handled = (signal.SIGTERM, signal.SIGINT)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    # Ready only once a SIGTERM would drain: a parent that stops us right after this line
    # gets a clean exit, not a process killed by the default handler.
    print(f"{READY_LINE_PREFIX} {host.name} {port}", flush=True)
    try:
        await host.wait_for_termination()
        for task in stopping:
            await task
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


class Checkable(Protocol):
    """A dependency whose check() raises while it is unusable (store, key provider)."""

    async def check(self) -> None:
        """Return when usable now; raise otherwise."""
        ...


def readiness_of(*dependencies: Checkable) -> Callable[[], Awaitable[bool]]:
    """A readiness probe for ServiceHost: ready while every dependency's check() passes."""

    async def ready() -> bool:
        for dependency in dependencies:
            await dependency.check()
        return True

    return ready
