"""Helpers for tests on the shared real engines (importable from every test folder).

One place each for: the OpenBao a test talks to, a plain Cassandra session, dropping a
test's keyspaces (the ``keyspace_prefix`` fixtures of tests/conftest.py call it), the
settings that put a service on Cassandra, the schema a test's services need (``healthbank
migrate``'s functions, each keyspace once per session), a store's Cassandra database, the
``backend`` parameter that needs the engines (``CASSANDRA``), and a TCP relay a test can
cut to simulate an engine outage without touching the shared engine (``openbao_relay``
puts one in front of OpenBao).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import hvac
import pytest
from cassandra.cluster import Session

from healthbank.core.config import Settings
from healthbank.storage import cassandra as storage_cassandra
from healthbank.storage.cassandra import CassandraDatabase
from healthbank.storage.schema import (
    SERVICE_KEYSPACES,
    concerns_of,
    keyspace_migrations,
    migrate_keyspaces,
)

# The fixtures (tests/conftest.py) that start (or stop) the real engines: a test whose
# fixtures include one is marked ``engines``. A fixture that asks for the engines only for
# some of its parameters marks those parameters itself.
ENGINE_FIXTURES = frozenset({"engines", "engines_tool", "openbao", "vault_root", "transit_mount"})

# The storage parameter that runs a test on Cassandra: it needs the real engines.
CASSANDRA = pytest.param("cassandra", marks=pytest.mark.engines)

# Keyspaces (hosts, port, name) migrated in this test session: prefixes are never reused
# (a fresh one per test or module), so one migration per keyspace is enough.
_MIGRATED: set[tuple[str, int, str]] = set()


@dataclass(frozen=True)
class OpenBao:
    """A running OpenBao (the Vault API) and a root token for setting it up."""

    addr: str
    root_token: str

    def client(self) -> hvac.Client:
        """An hvac client logged in as root."""
        return hvac.Client(url=self.addr, token=self.root_token)


# A Cassandra frame header is 9 bytes, a protocol v5 segment header 6.
_TRICKLED = 9


class TcpProxy:
    """A loopback TCP relay to an engine (Cassandra, OpenBao) that a test can cut and restore:
    an outage that touches nobody else's connections to the shared engine."""

    def __init__(self, host: str, port: int, *, trickle_replies: bool = False) -> None:
        """Relay to host:port; with ``trickle_replies`` the first bytes of every chunk the
        engine sends go on one at a time, so the client reads its frame headers in pieces
        (as a real network may cut them)."""
        self._target = (host, port)
        self._trickle_replies = trickle_replies
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._listening = False
        self.port = 0

    async def start(self) -> int:
        """Listen (again, on the same port after a cut); return the port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self._listening = True
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        self._listening = False
        if self._server is not None:
            self._server.close()
        # Connections go first: since Python 3.12, wait_closed() waits for every connection
        # the server accepted, so waiting before aborting them would wait forever.
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        if not self._listening:  # cut while this connection was being relayed
            writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer, trickle=self._trickle_replies),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bool = False
    ) -> None:
        try:
            split = _TRICKLED if trickle else 0
            while data := await reader.read(65536):
                for head in data[:split]:
                    writer.write(bytes([head]))
                    await writer.drain()
                    await asyncio.sleep(0.002)  # long enough for the client to read it alone
                writer.write(data[split:])
                await writer.drain()
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@contextmanager
def cassandra_session(hosts: str | Sequence[str], port: int | str) -> Iterator[Session]:
    """A plain driver session on the first of ``hosts`` (no schema or token metadata: quick
    with many keyspaces).

    ``hosts`` is a list or a comma-separated string (HEALTHBANK_CASSANDRA_HOSTS).
    """
    contact_points = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    with storage_cassandra.coordinated_by(contact_points[0], int(port), metadata=False) as session:
        yield session


def drop_keyspaces(engines: Mapping[str, str], prefix: str) -> None:
    """Drop every keyspace named ``<prefix>_*`` on the engines ``engines`` points at (the
    ``keyspace_prefix`` fixtures call this after each test)."""
    hosts, port = engines["HEALTHBANK_CASSANDRA_HOSTS"], engines["HEALTHBANK_CASSANDRA_PORT"]
    storage_cassandra.drop_keyspaces(hosts.split(","), int(port), prefix)


def cassandra_env(engines: Mapping[str, str], keyspace_prefix: str) -> dict[str, str]:
    """Settings that put a service on the shared Cassandra, in the test's own keyspaces.

    The ``keyspace_prefix`` fixture drops those keyspaces after the test.
    """
    return {
        "HEALTHBANK_STORAGE_BACKEND": "cassandra",
        "HEALTHBANK_CASSANDRA_HOSTS": engines["HEALTHBANK_CASSANDRA_HOSTS"],
        "HEALTHBANK_CASSANDRA_PORT": engines["HEALTHBANK_CASSANDRA_PORT"],
        "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": keyspace_prefix,
    }


def migrate_once(
    hosts: Sequence[str],
    port: int,
    keyspaces: Mapping[str, Sequence[str]],
    *,
    replication_factor: int = 1,
    consistency: str = "ONE",
) -> None:
    """Create and upgrade the keyspaces not yet migrated in this session, as ``healthbank
    migrate`` does before a deployment (services never create schema on Cassandra)."""
    todo = {
        name: migrations
        for name, migrations in keyspaces.items()
        if (",".join(hosts), port, name) not in _MIGRATED
    }
    if not todo:
        return
    migrate_keyspaces(
        hosts, port, todo, replication_factor=replication_factor, consistency=consistency
    )
    _MIGRATED.update((",".join(hosts), port, name) for name in todo)


def migrate_for(settings: Settings, services: Sequence[str] | None = None) -> None:
    """Migrate the keyspaces ``services`` open (all seven services by default) under
    ``settings``' prefix, each once per session; nothing to do on SQLite."""
    if settings.storage_backend != "cassandra":
        return
    prefix = settings.cassandra_keyspace_prefix
    migrate_once(
        settings.cassandra_hosts,
        settings.cassandra_port,
        {
            f"{prefix}_{concern}": keyspace_migrations(concern)
            for concern in concerns_of(services if services is not None else SERVICE_KEYSPACES)
        },
        replication_factor=settings.cassandra_replication_factor,
        consistency=settings.cassandra_consistency,
    )


def cassandra_database(
    engines: Mapping[str, str], keyspace: str, migrations: Sequence[str]
) -> CassandraDatabase:
    """A store's keyspace on the shared Cassandra (consistency ONE: a single node), migrated
    first, as ``healthbank migrate`` does before a deployment."""
    migrate_once(
        engines["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
        int(engines["HEALTHBANK_CASSANDRA_PORT"]),
        {keyspace: migrations},
    )
    return CassandraDatabase(
        hosts=engines["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
        port=int(engines["HEALTHBANK_CASSANDRA_PORT"]),
        keyspace=keyspace,
        migrations=migrations,
        consistency="ONE",
    )


@asynccontextmanager
async def openbao_relay(openbao: OpenBao) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A relay to the shared OpenBao that this test alone can cut: its outage, nobody else's.
    Yields the relay and the address to give a client in OpenBao's place."""
    target = urlsplit(openbao.addr)
    assert target.hostname is not None and target.port is not None
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    try:
        yield proxy, f"http://127.0.0.1:{port}"
    finally:
        await proxy.cut()
