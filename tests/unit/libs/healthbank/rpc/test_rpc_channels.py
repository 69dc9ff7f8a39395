"""Channels keep subchannels of their own (healthbank.rpc.clients.OWN_SUBCHANNELS): a new
channel to an address whose earlier server went away reaches the server listening there now.

A CI run (2026-12-03) failed a service test with "failed to connect to all addresses ...
Connection refused" on a service that was SERVING: its port (bound as port 0) had served an
earlier test's service, and a channel still open to that one held the shared subchannel in
reconnect backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from healthbank.core.config import Settings
from healthbank.rpc.clients import OWN_SUBCHANNELS, ClientFactory


async def serve(port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def check(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def reused_port(options: Sequence[tuple[str, Any]]) -> grpc.StatusCode:
    """A server goes away while a channel to it stays open (in backoff); a new server takes
    the same port: what a new channel with ``options`` gets from it."""
    first, port = await serve()
    stale = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    try:
        assert await check(stale) == grpc.StatusCode.OK
        await first.stop(None)
        assert await check(stale) == grpc.StatusCode.UNAVAILABLE
        second, _ = await serve(port)
        fresh = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        try:
            return await check(fresh)
        finally:
            await fresh.close()
            await second.stop(None)
    finally:
        await stale.close()


async def test_a_shared_subchannel_carries_a_gone_servers_backoff_to_a_new_channel() -> None:
    """Why the option exists: gRPC's default, process-wide subchannel pool."""
    assert await reused_port([]) == grpc.StatusCode.UNAVAILABLE


async def test_a_channel_with_its_own_subchannels_reaches_the_new_server() -> None:
    assert await reused_port([OWN_SUBCHANNELS]) == grpc.StatusCode.OK


async def test_client_factory_channels_reach_a_new_server_on_a_reused_port() -> None:
    first, port = await serve()
    address = {"identity": f"127.0.0.1:{port}"}
    stale = ClientFactory(Settings(), addresses=address, default_timeout=2.0)
    fresh = ClientFactory(Settings(), addresses=address, default_timeout=2.0)
    try:
        assert await check(stale.channel("identity")) == grpc.StatusCode.OK
        await first.stop(None)
        assert await check(stale.channel("identity")) == grpc.StatusCode.UNAVAILABLE
        second, _ = await serve(port)
        try:
            assert await check(fresh.channel("identity")) == grpc.StatusCode.OK
        finally:
            await second.stop(None)
    finally:
        await stale.close()
        await fresh.close()
