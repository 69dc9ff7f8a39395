"""Helpers for tests on the shared real engines (importable from every test folder)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cassandra.cluster import Cluster


class TcpProxy:
    """A loopback TCP relay to Cassandra that a test can cut and restore: an outage that
    touches nobody else's connections to the shared engine."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> int:
        """Listen (again, on the same port after a cut); return the port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


def drop_keyspaces(env: dict[str, str], keyspaces: Sequence[str]) -> None:
    """Drop the named keyspaces (IF EXISTS) on the engines ``env`` points at."""
    cluster = Cluster(
        env["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
        port=int(env["HEALTHBANK_CASSANDRA_PORT"]),
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect()
        for keyspace in keyspaces:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
    finally:
        cluster.shutdown()


def cassandra_env(engines: dict[str, str], keyspace_prefix: str) -> dict[str, str]:
    """Settings that put a service on the shared Cassandra, in the test's own keyspaces.

    The ``keyspace_prefix`` fixture drops those keyspaces after the test.
    """
    return {
        "HEALTHBANK_STORAGE_BACKEND": "cassandra",
        "HEALTHBANK_CASSANDRA_HOSTS": engines["HEALTHBANK_CASSANDRA_HOSTS"],
        "HEALTHBANK_CASSANDRA_PORT": engines["HEALTHBANK_CASSANDRA_PORT"],
        "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": keyspace_prefix,
    }
