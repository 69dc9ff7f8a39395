"""ServiceHost lifecycle: health follows readiness, reflection lists services, SIGTERM drains.

Real servers on free ports and real channels; the drain test runs the server as a separate
process (tests/integration/lifecycle_server.py) and signals it like Kubernetes would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from repo_paths import REPO

from healthbank.core.config import Settings
from healthbank.rpc import READY_LINE_PREFIX, ServiceHost, default_interceptors, error_details
from healthbank.rpc.authz import with_public_methods
from healthbank.rpc.clients import open_channel

LIFECYCLE_SERVER = Path(__file__).with_name("lifecycle_server.py")
ECHO = "healthbank.test.v1.Echo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRACE_SECONDS = 10.0


async def echo(request: bytes, context: Any) -> bytes:
    return request


def register_echo(server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        ECHO, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Poll the async ``check`` until it returns True or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def ready_flag_host() -> AsyncIterator[tuple[ServiceHost, list[bool], grpc.aio.Channel]]:
    ready = [False]

    async def readiness() -> bool:
        return ready[0]

    settings = Settings(shutdown_grace_seconds=1.0)
    host = ServiceHost(
        "record-lookup",
        settings,
        register=[register_echo],
        service_names=[ECHO],
        readiness=readiness,
        readiness_interval=0.05,
        port=0,
        interceptors=default_interceptors(
            "record-lookup",
            settings,
            authorization=with_public_methods(f"/{ECHO}/Echo", why="test"),
        ),
    )
    port = await host.start()
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        yield host, ready, channel
    finally:
        await channel.close()
        await host.stop(grace=0)


async def test_health_follows_readiness(ready_flag_host: Any) -> None:
    _, ready, channel = ready_flag_host
    health = health_pb2_grpc.HealthStub(channel)

    async def status_is(expected: int, service: str = "") -> bool:
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return bool(response.status == expected)

    # Not serving until a readiness check has passed.
    await asyncio.sleep(0.2)
    assert await status_is(NOT_SERVING)
    assert await status_is(NOT_SERVING, ECHO)

    ready[0] = True
    await eventually(lambda: status_is(SERVING))
    assert await status_is(SERVING, ECHO)

    ready[0] = False
    await eventually(lambda: status_is(NOT_SERVING))
    assert await status_is(NOT_SERVING, ECHO)

    # The service itself keeps answering; health only tells load balancers to stay away.
    assert await channel.unary_unary(f"/{ECHO}/Echo")(b"ping", timeout=2) == b"ping"


async def test_reflection_lists_the_services(ready_flag_host: Any) -> None:
    _, _, channel = ready_flag_host
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(timeout=5)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {service.name for service in response.list_services_response.service}
    assert {ECHO, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def _read_line_starting(stream: asyncio.StreamReader, prefix: str) -> str:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"server exited before printing {prefix}")
        text = line.decode().strip()
        if text.startswith(prefix):
            return text


async def test_sigterm_drains_in_flight_calls_and_exits_cleanly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "libs"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "HEALTHBANK_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    stderr_path = tmp_path / "lifecycle.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LIFECYCLE_SERVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert process.stdout is not None and process.stdin is not None
    try:
        ready_line = await asyncio.wait_for(
            _read_line_starting(process.stdout, READY_LINE_PREFIX), timeout=20
        )
        _, name, port = ready_line.split()
        assert name == "lifecycle"
        async with open_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            while (await asyncio.wait_for(watch.read(), timeout=5)).status != SERVING:
                pass

            slow = asyncio.ensure_future(
                channel.unary_unary("/healthbank.test.v1.Lifecycle/Slow")(b"x", timeout=15)
            )
            started = await asyncio.wait_for(_read_line_starting(process.stdout, "SLOW_STARTED"), 5)
            # What the process built before serving is frozen out of the collector, so a
            # full collection does not walk it while calls wait (run_until_signal).
            assert int(started.removeprefix("SLOW_STARTED frozen=")) > 10_000, started
            signalled_at = time.monotonic()
            process.send_signal(signal.SIGTERM)

            # Load balancers are told first ...
            update = await asyncio.wait_for(watch.read(), timeout=5)
            assert update.status == NOT_SERVING
            watch.cancel()
            # ... health checks keep being answered NOT_SERVING while a call is in flight
            # (the listener stays open; none of them is cancelled by the shutdown) ...
            for _ in range(5):
                response = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                assert response.status == NOT_SERVING
            # ... and new application calls are refused, retryably, with the reason.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/healthbank.test.v1.Lifecycle/Slow")(b"y", timeout=2)
            details = error_details(refused.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE
            assert details.reason == "SHUTTING_DOWN"
            assert details.retry_delay is not None
            # A request stream is refused alike, once its first message is in (as the
            # authorization matrix's refused streams, over mTLS; this plain channel did not
            # show the INTERNAL that a refusal sent earlier gave there).
            collect = channel.stream_unary("/healthbank.test.v1.Lifecycle/Collect")
            for _ in range(20):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await collect(iter([b"a", b"b"]), timeout=2)
                details = error_details(refused.value)
                assert (details.code, details.reason) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "SHUTTING_DOWN",
                )

            # The in-flight call (released only now) still completes normally.
            assert not slow.done()
            process.stdin.write(b"release\n")
            await process.stdin.drain()
            assert await slow == b"done:x"

        returncode = await asyncio.wait_for(process.wait(), timeout=GRACE_SECONDS + 5)
        elapsed = time.monotonic() - signalled_at
        assert returncode == 0, stderr_path.read_text()
        assert elapsed < GRACE_SECONDS, f"took {elapsed:.1f} s to exit"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
