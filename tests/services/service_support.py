"""Helpers every service test shares: credentials (from tests/auth_support.py), failed
calls, health, settings, running services.

Imported by the test modules of tests/services (its conftest.py holds the fixtures).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from auth_support import BearerAuth as BearerAuth
from auth_support import Metadata as Metadata
from auth_support import auth_metadata as auth_metadata
from engine_support import CASSANDRA, TcpProxy, migrate_for
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthbank.consent.v1 import consent_pb2
from healthbank.core.config import Settings, load_settings
from healthbank.crypto.pki import write_local_pki
from healthbank.rpc import (
    ClientFactory,
    ErrorDetails,
    ServiceHost,
    error_details,
    service_client_factory,
)
from healthbank.rpc.clients import open_channel
from healthbank.rpc.tls import channel_credentials
from healthbank.storage.cassandra import keyspace_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Runs a test on SQLite and on Cassandra through conftest.py's ``backend`` fixture (tests
# without it run on SQLite only: request validation and authorization never reach the store).
both_backends = pytest.mark.parametrize("backend", ["sqlite", CASSANDRA], indirect=True)


def service_settings(data_dir: Path, env: Mapping[str, str] | None = None) -> Settings:
    """A service's settings: its data dir, any free port, plus ``env`` (HEALTHBANK_*)."""
    return load_settings(
        {"HEALTHBANK_DATA_DIR": str(data_dir), "HEALTHBANK_PORT": "0", **(env or {})}
    )


def answered_calls(caplog: pytest.LogCaptureFixture, method: str) -> int:
    """How many calls of ``method`` (its full name) the access log shows answered OK; the
    test sets ``healthbank.rpc.access`` to INFO first."""
    wanted = f"method={method} code=OK"
    return sum(wanted in record.getMessage() for record in caplog.records)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """Await a call that must fail; its gRPC error."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def failure(call: Awaitable[Any]) -> ErrorDetails:
    """Await a call that must fail; what its status says: code, reason, field violations."""
    return error_details(await rpc_error(call))


def fields(failed: ErrorDetails | grpc.aio.AioRpcError) -> list[str]:
    """The fields a failure's BadRequest names, in the order the service lists them."""
    details = failed if isinstance(failed, ErrorDetails) else error_details(failed)
    return [name for name, _ in details.field_violations]


def invalid_fields(error: grpc.aio.AioRpcError) -> set[str]:
    """The fields an INVALID_ARGUMENT error names (asserts that code)."""
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    return set(fields(details))


async def wait_for_health(
    channel: grpc.aio.Channel, service: str, wanted: int = SERVING, seconds: float = 30
) -> None:
    """Poll grpc.health.v1 for ``service`` until it reports ``wanted``; fail after ``seconds``.

    Waiting for SERVING after start also keeps a fixture's teardown away from the first,
    slow readiness check (keyring creation): on Python 3.11 the ``asyncio.wait_for`` in
    ServiceHost's readiness loop can swallow the cancellation ``stop()`` sends when a check
    completes at that moment, and ``stop()`` then never returns.
    """
    health: Any = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    status = None
    for _ in range(int(seconds * 20)):
        try:
            status = (await health.Check(request)).status
        except grpc.aio.AioRpcError as error:
            # A just-started server can refuse the very first connection; poll on.
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        if status == wanted:
            return
        await asyncio.sleep(0.05)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name
    pytest.fail(f"{service} health stayed {name(status or 0)}, wanted {name(wanted)}")


@asynccontextmanager
async def cassandra_behind_proxy(
    settings: Settings, services: Sequence[str]
) -> AsyncIterator[tuple[TcpProxy, Settings]]:
    """``settings`` reaching Cassandra through a relay the test can cut (an outage only this
    test sees), the keyspaces of ``services`` migrated first; the relay is cut on exit."""
    await asyncio.to_thread(migrate_for, settings, services)
    proxy = TcpProxy(settings.cassandra_hosts[0], settings.cassandra_port)
    port = await proxy.start()
    try:
        yield (
            proxy,
            settings.model_copy(update={"cassandra_hosts": ["127.0.0.1"], "cassandra_port": port}),
        )
    finally:
        await proxy.cut()


def assert_storage_unavailable(details: ErrorDetails) -> None:
    """A refusal during a storage outage: UNAVAILABLE, the reason, and when to retry."""
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == "STORAGE_UNAVAILABLE"
    assert details.retry_delay is not None and details.retry_delay > 0


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp of ``moment``."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def store_rows(
    settings: Settings, table: str, sqlite_file: str, service: str, migrations: Sequence[str]
) -> list[dict[str, Any]]:
    """Every row of a table of a service's store, read past the service: from
    ``<data dir>/<sqlite_file>`` on SQLite, from the service's keyspace on Cassandra."""
    if settings.storage_backend == "sqlite":
        with sqlite3.connect(settings.data_dir / sqlite_file) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(f"SELECT * FROM {table}")]
    database = keyspace_for(settings, service, migrations)
    await database.open()
    try:
        return [row._asdict() for row in await database.execute(f"SELECT * FROM {table}")]
    finally:
        await database.close()


TEST_CLIENT = "client.tests"
"""The certificate name of the test itself when it calls services over mTLS."""


def mtls_settings(settings: Settings, pki_dir: Path, holder: str) -> Settings:
    """``settings`` serving and dialing with ``holder``'s certificate from the local CA in
    ``pki_dir`` (made on first use; see healthbank.crypto.pki for the names)."""
    files = write_local_pki(pki_dir, [holder])[holder]
    return settings.model_copy(
        update={
            "tls_ca_file": files.ca_file,
            "tls_cert_file": files.cert_file,
            "tls_key_file": files.key_file,
        }
    )


def mtls_channel(
    address: str,
    pki_dir: Path,
    holder: str = TEST_CLIENT,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel presenting ``holder``'s certificate, expecting ``server_name``'s."""
    credentials = channel_credentials(mtls_settings(Settings(), pki_dir, holder))
    if server_name is not None:
        options = [*options, ("grpc.ssl_target_name_override", server_name)]
    return open_channel(address, credentials=credentials, options=options)


async def accepting(port: int, seconds: float = 10.0) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection: a just-started server has
    refused the first RPC now and then in CI (3.12, 3.13; cause not found)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


class RunningServices:
    """Services a test started in one ``AsyncExitStack`` (stopped when it closes): their
    hosts and addresses by name, clients between them, and channels to them.

    With ``pki_dir`` every party uses mTLS with certificates from one local CA there:
    open a service with :meth:`settings_of` its name; :meth:`clients` and :meth:`channel`
    present the caller's certificate (the test's own is ``client.tests``).
    """

    def __init__(self, exits: AsyncExitStack, pki_dir: Path | None = None) -> None:
        self.exits = exits
        self.pki_dir = pki_dir
        self.hosts: dict[str, ServiceHost] = {}
        self.addresses: dict[str, str] = {}

    def settings_of(self, holder: str, settings: Settings) -> Settings:
        """``settings`` with ``holder``'s certificate when mTLS is on; else unchanged."""
        if self.pki_dir is None:
            return settings
        return mtls_settings(settings, self.pki_dir, holder)

    async def start(self, name: str, opened: AbstractAsyncContextManager[ServiceHost]) -> int:
        """Enter ``opened`` (a service's ``open_service(...)``), serve on a free port; the port."""
        host = await self.exits.enter_async_context(opened)
        port = await host.start(0)
        await accepting(port)
        self.hosts[name] = host
        self.addresses[name] = f"127.0.0.1:{port}"
        return port

    def clients(self, settings: Settings, service: str) -> ClientFactory:
        """Clients of ``service`` to the services started so far (as ``service``)."""
        clients = service_client_factory(
            self.settings_of(service, settings), service, addresses=dict(self.addresses)
        )
        self.exits.push_async_callback(clients.close)
        return clients

    def channel(
        self,
        address: str,
        options: Sequence[tuple[str, Any]] = (),
        *,
        holder: str = TEST_CLIENT,
    ) -> grpc.aio.Channel:
        """A channel to a started service (by name) or any address, closed with the stack;
        over mTLS it presents ``holder``'s certificate."""
        target = self.addresses.get(address, address)
        if self.pki_dir is None:
            opened = open_channel(target, options=options)
        else:
            server_name = address if address in self.addresses else None
            opened = mtls_channel(
                target, self.pki_dir, holder, server_name=server_name, options=options
            )
        self.exits.push_async_callback(opened.close)
        return opened


def research_request_example(
    access_until: timestamp_pb2.Timestamp,
) -> consent_pb2.ResearchRequest:
    """A research request that passes screening (ADR 26): influenza cohort, aggregates."""
    return consent_pb2.ResearchRequest(
        purpose="influenza burden by hospital for vaccine planning",
        protocol="protocol FLU-2026-01: counts and record spans per hospital",
        ethics_approval_reference="IRB-2026-0042",
        cohort=consent_pb2.CohortDefinition(
            code_system="http://hl7.org/fhir/sid/icd-10", codes=["J10.1", "J11.1"]
        ),
        fields=["hospital", "first_year", "record_count", "span_days"],
        groupings=["hospital"],
        output_kind=consent_pb2.RESEARCH_OUTPUT_KIND_SYNTHETIC,
        period_start=ts(datetime(2020, 1, 1, tzinfo=UTC)),
        period_end=ts(datetime(2030, 1, 1, tzinfo=UTC)),
        epsilon_budget=1.0,
        access_until=access_until,
    )
