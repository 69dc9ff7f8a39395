"""The service skeleton (healthbank.rpc.service): what it opens it closes, in reverse order.

Real SQLite stores (the audit store, which notes when it is closed), a real ServiceHost on
a free port and real gRPC health checks; nothing is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.core.config import Settings, load_settings
from healthbank.rpc import ClientFactory, service_client_factory
from healthbank.rpc.clients import open_channel
from healthbank.rpc.service import ServiceResources, Serving, service_opener, utc_now
from services.audit.log import AuditLog
from services.audit.servicer import AuditServicer
from services.audit.store import SqliteAuditStore

SERVICE = "audit"
SERVICE_NAME = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
UNUSED_CASSANDRA_STORE = "services.audit.store_cassandra:CassandraAuditStore"
FIXED_NOW = datetime(2026, 3, 1, tzinfo=UTC)


class NotingStore(SqliteAuditStore):
    """The real SQLite audit store, noting its label in ``closed`` when closed."""

    def __init__(self, path: Path, label: str, closed: list[str]) -> None:
        super().__init__(path)
        self._label = label
        self._closed = closed

    async def close(self) -> None:
        self._closed.append(self._label)
        await super().close()


def noting(label: str, closed: list[str]) -> Callable[[Path], NotingStore]:
    return lambda path: NotingStore(path, label, closed)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "HEALTHBANK_DATA_DIR": str(tmp_path),
            "HEALTHBANK_PORT": "0",
            "HEALTHBANK_SHUTDOWN_GRACE_SECONDS": "0.5",
        }
    )


async def health_of(port: int) -> int | None:
    """The host's overall health status, or None when nothing answers on ``port``."""
    async with open_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return int(response.status)


async def test_exit_stops_the_host_then_closes_in_reverse_opening_order(
    settings: Settings,
) -> None:
    closed: list[str] = []
    opened: dict[str, object] = {}
    background_cancelled = asyncio.Event()

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            closed.append("background")
            background_cancelled.set()

    async def assemble(resources: ServiceResources) -> Serving:
        first = await resources.open_store(
            sqlite=noting("first", closed), cassandra=UNUSED_CASSANDRA_STORE
        )
        second = await resources.open_store(
            sqlite=noting("second", closed), cassandra=UNUSED_CASSANDRA_STORE
        )
        opened["clients"] = resources.clients
        resources.run_in_background("wait", background)
        return Serving(
            AuditServicer(AuditLog(first, resources.keys, resources.now)),
            audit_pb2_grpc.add_AuditServiceServicer_to_server,
            readiness=[first, second, resources.keys],
        )

    open_service = service_opener(SERVICE, SERVICE_NAME, assemble)
    async with open_service(settings) as host:
        port = await host.start(0)
        assert (settings.data_dir / f"{SERVICE}.db").exists()
        assert await health_of(port) is not None
        assert closed == []

    assert await health_of(port) is None
    assert background_cancelled.is_set()
    assert closed == ["background", "second", "first"]
    own_clients = opened["clients"]
    assert isinstance(own_clients, ClientFactory)
    with pytest.raises(RuntimeError):
        own_clients.channel("identity")


async def test_a_failed_open_closes_what_was_opened_before_it(
    settings: Settings, tmp_path: Path
) -> None:
    closed: list[str] = []
    opened: dict[str, object] = {}
    # A file where the second store's directory would be: creating it really fails.
    blocker = tmp_path / "blocker"
    blocker.write_text("")

    async def assemble(resources: ServiceResources) -> Serving:
        await resources.open_store(sqlite=noting("first", closed), cassandra=UNUSED_CASSANDRA_STORE)
        opened["clients"] = resources.clients
        await resources.open_store(
            sqlite=lambda _: NotingStore(blocker / "second.db", "second", closed),
            cassandra=UNUSED_CASSANDRA_STORE,
        )
        raise AssertionError("the second open should have failed")

    open_service = service_opener(SERVICE, SERVICE_NAME, assemble)
    with pytest.raises(OSError):
        async with open_service(settings):
            pass

    assert closed == ["first"]
    own_clients = opened["clients"]
    assert isinstance(own_clients, ClientFactory)
    with pytest.raises(RuntimeError):
        own_clients.channel("identity")


async def test_a_failing_assemble_closes_everything_it_opened(settings: Settings) -> None:
    closed: list[str] = []

    async def assemble(resources: ServiceResources) -> Serving:
        await resources.open_store(sqlite=noting("first", closed), cassandra=UNUSED_CASSANDRA_STORE)
        await resources.open_store(
            sqlite=noting("second", closed), cassandra=UNUSED_CASSANDRA_STORE
        )
        raise ValueError("bad configuration")

    with pytest.raises(ValueError, match="bad configuration"):
        async with service_opener(SERVICE, SERVICE_NAME, assemble)(settings):
            pass

    assert closed == ["second", "first"]


async def test_given_clients_and_clock_are_used_and_the_clients_left_open(
    settings: Settings,
) -> None:
    seen: dict[str, object] = {}

    async def assemble(resources: ServiceResources) -> Serving:
        store = await resources.open_store(
            sqlite=SqliteAuditStore, cassandra=UNUSED_CASSANDRA_STORE
        )
        seen["clients"], seen["now"] = resources.clients, resources.now()
        return Serving(
            AuditServicer(AuditLog(store, resources.keys, resources.now)),
            audit_pb2_grpc.add_AuditServiceServicer_to_server,
            readiness=[store],
        )

    async with service_client_factory(settings, "ingest") as given:
        open_service = service_opener(SERVICE, SERVICE_NAME, assemble)
        async with open_service(settings, clients=given, now=lambda: FIXED_NOW):
            pass
        assert seen == {"clients": given, "now": FIXED_NOW}
        given.channel("identity")  # still open: the caller owns it


def test_the_default_clock_is_utc_wall_time() -> None:
    before = datetime.now(UTC)
    now = utc_now()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)
