"""Channels keep subchannels of their own (healthbank.rpc.clients.OWN_SUBCHANNELS): a new
channel to an address whose earlier server went away reaches the server listening there now.

A CI run (2026-12-03) failed a service test with "failed to connect to all addresses ...
Connection refused" on a service that was SERVING: its port (bound as port 0) had served an
earlier test's service, and a channel still open to that one held the shared subchannel in
reconnect backoff.

Every channel is opened by healthbank.rpc.clients.open_channel, which adds the option; the
last test keeps direct ``grpc.aio.insecure_channel``/``secure_channel`` calls out of libs,
services, tools and tests. This file calls them on purpose: they show the shared pool.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from repo_paths import REPO

from healthbank.core.config import Settings
from healthbank.rpc.clients import OWN_SUBCHANNELS, ClientFactory, open_channel

Opener = Callable[[str], grpc.aio.Channel]


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


# A reconnect backoff far longer than a test: a subchannel that failed to connect stays in
# backoff for the whole test, however slow the machine (gRPC's default, ~1 s with jitter,
# made the shared pool's demonstration flaky on a loaded CI machine).
LONG_BACKOFF = [
    ("grpc.initial_reconnect_backoff_ms", 60_000),
    ("grpc.min_reconnect_backoff_ms", 60_000),
    ("grpc.max_reconnect_backoff_ms", 60_000),
]


def raw(*options: tuple[str, Any]) -> Opener:
    """Opens channels straight from grpc.aio (no project default) with ``options`` and a
    long reconnect backoff."""
    return lambda target: grpc.aio.insecure_channel(target, options=[*options, *LONG_BACKOFF])


def project(target: str) -> grpc.aio.Channel:
    """A channel from open_channel, with the same long reconnect backoff."""
    return open_channel(target, options=LONG_BACKOFF)


async def in_backoff(channel: grpc.aio.Channel) -> None:
    """Returns once ``channel``'s subchannel failed to connect and sits in reconnect backoff.

    A failed call alone does not say so: a call that races the server's GOAWAY fails while
    the subchannel goes IDLE, with no backoff (a CI run on 2026-12-04 met that race)."""
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
        await asyncio.wait_for(channel.wait_for_state_change(state), timeout=10)
        state = channel.get_state(try_to_connect=True)


async def reused_port(opener: Opener, stale_opener: Opener | None = None) -> grpc.StatusCode:
    """A server goes away while a channel to it stays open (in backoff); a new server takes
    the same port: what a new channel from ``opener`` gets from it. The stale channel comes
    from ``stale_opener`` (default: ``opener``)."""
    first, port = await serve()
    stale = (stale_opener or opener)(f"127.0.0.1:{port}")
    try:
        assert await check(stale) == grpc.StatusCode.OK
        await first.stop(None)
        assert await check(stale) == grpc.StatusCode.UNAVAILABLE
        await in_backoff(stale)
        second, _ = await serve(port)
        fresh = opener(f"127.0.0.1:{port}")
        try:
            return await check(fresh)
        finally:
            await fresh.close()
            await second.stop(None)
    finally:
        await stale.close()


async def test_a_shared_subchannel_carries_a_gone_servers_backoff_to_a_new_channel() -> None:
    """Why the option exists: gRPC's default, process-wide subchannel pool."""
    assert await reused_port(raw()) == grpc.StatusCode.UNAVAILABLE


async def test_a_channel_with_its_own_subchannels_reaches_the_new_server() -> None:
    assert await reused_port(raw(OWN_SUBCHANNELS)) == grpc.StatusCode.OK


async def test_open_channel_reaches_the_new_server_on_a_reused_port() -> None:
    assert await reused_port(project) == grpc.StatusCode.OK


async def test_open_channel_ignores_a_stale_channel_in_the_shared_pool() -> None:
    # The stale channel was opened without the option (a library's, say): still no backoff.
    assert await reused_port(project, stale_opener=raw()) == grpc.StatusCode.OK


class _Opened:
    """Stands in for grpc.aio's channel constructors: records how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorder(self, kind: str) -> Callable[..., str]:
        def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((kind, args, kwargs))
            return kind

        return record


def test_open_channel_puts_own_subchannels_before_the_callers_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = _Opened()
    monkeypatch.setattr(grpc.aio, "insecure_channel", opened.recorder("insecure"))
    monkeypatch.setattr(grpc.aio, "secure_channel", opened.recorder("secure"))
    credentials = grpc.ssl_channel_credentials()
    override = ("grpc.ssl_target_name_override", "audit")
    interceptors = [object()]

    assert open_channel("a:1") == "insecure"
    assert open_channel("a:2", options=[("grpc.max_receive_message_length", 1)]) == "insecure"
    secure = open_channel("a:3", credentials=credentials, options=[override])
    assert secure == "secure"
    assert open_channel("a:4", interceptors=interceptors) == "insecure"

    assert opened.calls == [
        ("insecure", ("a:1",), {"options": [OWN_SUBCHANNELS], "interceptors": None}),
        (
            "insecure",
            ("a:2",),
            {
                "options": [OWN_SUBCHANNELS, ("grpc.max_receive_message_length", 1)],
                "interceptors": None,
            },
        ),
        (
            "secure",
            ("a:3", credentials),
            {"options": [OWN_SUBCHANNELS, override], "interceptors": None},
        ),
        ("insecure", ("a:4",), {"options": [OWN_SUBCHANNELS], "interceptors": interceptors}),
    ]


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


# Only these may open a grpc.aio channel directly: open_channel itself, and this file's
# demonstration of the shared pool.
DIRECT_CHANNEL_ALLOWED = {
    Path("libs/healthbank/rpc/clients.py"),
    Path("tests/unit/libs/healthbank/rpc/test_rpc_channels.py"),
}
CHANNEL_CONSTRUCTORS = {"insecure_channel", "secure_channel"}
SCANNED_ROOTS = ("libs", "services", "tools", "tests")


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def direct_channels(source: str, filename: str = "<source>") -> list[int]:
    """Lines of ``source`` that reach grpc.aio's channel constructors directly: a
    ``grpc.aio.insecure_channel``/``aio.secure_channel`` (called or not) or an import of
    them from grpc.aio."""
    lines = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Attribute) and node.attr in CHANNEL_CONSTRUCTORS:
            owner = _dotted(node.value)
            if owner is not None and owner.split(".")[-1] == "aio":
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "grpc.aio"
            and any(alias.name in CHANNEL_CONSTRUCTORS for alias in node.names)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def _scanned_files() -> list[Path]:
    return sorted(
        path
        for root in SCANNED_ROOTS
        for path in (REPO / root).rglob("*.py")
        if "_pb2" not in path.name and not {".venv", ".venvs"} & set(path.parts)
    )


@pytest.mark.parametrize(
    "source",
    [
        "import grpc.aio\nchannel = grpc.aio.insecure_channel('a:1')\n",
        "import grpc\nasync def f(c):\n    async with grpc.aio.secure_channel('a:1', c) as x:\n"
        "        pass\n",
        "from grpc import aio\nopen = aio.insecure_channel\n",
        "from grpc.aio import secure_channel\n",
    ],
)
def test_the_guard_sees_a_direct_channel(source: str) -> None:
    assert direct_channels(source)


def test_the_guard_lets_open_channel_and_synchronous_channels_pass() -> None:
    source = (
        "import grpc\nfrom healthbank.rpc.clients import open_channel\n"
        "a = open_channel('a:1')\nb = grpc.insecure_channel('a:1')\n"
        "# grpc.aio.insecure_channel in a comment\n"
    )
    assert direct_channels(source) == []


def test_every_channel_is_opened_by_open_channel() -> None:
    """No grpc.aio.insecure_channel/secure_channel outside open_channel (and this file):
    a channel opened directly shares gRPC's subchannel pool (module docstring)."""
    scanned = {path.relative_to(REPO): path for path in _scanned_files()}
    # The scan reaches the code it guards, and sees the one place allowed to open channels.
    assert scanned.keys() >= DIRECT_CHANNEL_ALLOWED
    assert scanned.keys() >= {Path("libs/healthbank/cli.py"), Path("tools/bench/run.py")}
    clients = scanned[Path("libs/healthbank/rpc/clients.py")]
    assert direct_channels(clients.read_text(), str(clients))
    found = [
        f"{relative}:{line}"
        for relative, path in scanned.items()
        if relative not in DIRECT_CHANNEL_ALLOWED
        for line in direct_channels(path.read_text(), str(path))
    ]
    assert found == [], (
        "open gRPC channels with healthbank.rpc.clients.open_channel, not grpc.aio directly"
    )
