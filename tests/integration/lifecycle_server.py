"""A tiny service for the SIGTERM drain test: ServiceHost + run_until_signal, one slow method.

Run as a subprocess; prints ``HEALTHBANK_READY lifecycle <port>`` once serving and
``SLOW_STARTED frozen=<n>`` when a Slow call begins (n: the objects the serving process
froze out of the garbage collector); a Slow call answers once a line arrives on stdin,
so the test decides how long it stays in flight. Collect joins a request stream. Settings
come from the environment (``HEALTHBANK_SHUTDOWN_GRACE_SECONDS`` ...); the port is always
picked freely.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.core.config import load_settings
from healthbank.core.logs import configure_logging
from healthbank.rpc import ServiceHost, default_interceptors, run_until_signal
from healthbank.rpc.authz import with_public_methods

SERVICE = "healthbank.test.v1.Lifecycle"


async def slow(request: bytes, context: Any) -> bytes:
    """Answer once the test writes a line to stdin (it is in flight until then)."""
    print(f"SLOW_STARTED frozen={gc.get_freeze_count()}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    return b"done:" + request


async def collect(requests: Any, context: Any) -> bytes:
    """The request stream's messages, joined."""
    return b"".join([message async for message in requests])


def register(server: grpc.aio.Server) -> None:
    """Add the Lifecycle service (bytes in, bytes out) to ``server``."""
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
        },
    )
    server.add_generic_rpc_handlers((handler,))


async def main() -> None:
    """Serve until SIGTERM/SIGINT, then drain and exit 0."""
    settings = load_settings()
    configure_logging("lifecycle", settings.log_level)
    host = ServiceHost(
        "lifecycle",
        settings,
        register=[register],
        service_names=[SERVICE],
        port=0,
        readiness_interval=0.1,
        interceptors=default_interceptors(
            "lifecycle",
            settings,
            authorization=with_public_methods(
                f"/{SERVICE}/Slow", f"/{SERVICE}/Collect", why="test"
            ),
        ),
    )
    await run_until_signal(host)


if __name__ == "__main__":
    asyncio.run(main())
