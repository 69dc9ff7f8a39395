"""The driver connection every Cassandra store shares (healthbank.storage.cassandra) reads
the node's replies however the network cuts them into reads (ADR 41)."""

from __future__ import annotations

import os

from engine_support import TcpProxy, migrate_once

from healthbank.storage.cassandra import CassandraDatabase

MIGRATIONS = ["CREATE TABLE IF NOT EXISTS blobs (id int PRIMARY KEY, body blob)"]


async def test_cassandra_replies_whose_headers_arrive_in_pieces_are_read_whole(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    host = engines["HEALTHBANK_CASSANDRA_HOSTS"].split(",")[0]
    port = int(engines["HEALTHBANK_CASSANDRA_PORT"])
    keyspace = f"{keyspace_prefix}_wire"
    migrate_once([host], port, {keyspace: MIGRATIONS})
    # Every reply's first bytes arrive one by one. On native protocol v5 the driver
    # (cassandra-driver 3.30.1) drops a segment header it has only part of, and the very
    # first reply after STARTUP fails with "CRC mismatch on header": the store never opens.
    proxy = TcpProxy(host, port, trickle_replies=True)
    await proxy.start()
    database = CassandraDatabase(
        hosts=["127.0.0.1"],
        port=proxy.port,
        keyspace=keyspace,
        migrations=MIGRATIONS,
        consistency="ONE",
        connect_timeout=60.0,
    )
    try:
        await database.open()
        # 256 KiB in one reply: more than one 128 KiB segment on v5.
        bodies = {index: os.urandom(4096) for index in range(64)}
        for index, body in bodies.items():
            await database.execute("INSERT INTO blobs (id, body) VALUES (?, ?)", (index, body))
        rows = await database.execute("SELECT id, body FROM blobs")
        assert {row.id: row.body for row in rows} == bodies
    finally:
        await database.close()
        await proxy.cut()
