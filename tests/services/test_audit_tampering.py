"""Done-means 3 of issue 6: an insider who tampers with the audit log's tables is caught.

On SQLite and on the real Cassandra, the audit service logs events over real gRPC; then,
with the service stopped, the test rewrites the store's tables directly as an insider with
database access would, restarts the service (which signs whatever the tables now hold) and
runs ``healthbank audit verify`` (its library function) and the witness:

- a changed event, a deleted event, two swapped events and a rewritten stored hash are
  found by ``verify`` and named by their sequence number;
- leaves and every stored hash rewritten consistently, so that the service signs the
  tampered root, pass ``verify`` (nothing on the server disagrees any more) and are caught
  by the witness that holds an earlier head: a fork at the same size, an invalid proof
  once the log grows; a log rolled back is a shrink.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from engine_support import CASSANDRA
from service_support import auth_metadata

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import Settings
from healthbank.core.ids import new_ulid
from healthbank.crypto import build_key_provider
from healthbank.ledger import merkle
from healthbank.ledger.tree_head import (
    cosigned_head_bytes,
    event_leaf_hash,
    leaf_bytes,
    verify_signature,
)
from healthbank.ledger.verify import Verdict
from healthbank.rpc.audit_verify import verify_audit_log
from healthbank.rpc.clients import open_channel
from healthbank.storage.cassandra import CassandraDatabase, keyspace_for
from healthbank.witness.judge import Finding
from healthbank.witness.runner import Witness
from healthbank.witness.store import WitnessStore
from services.audit.app import open_service
from services.audit.log import DEFAULT_HEAD_MAX_AGE
from services.audit.store_cassandra import MIGRATIONS, NODE_CHUNK_BITS

# The services these tests start on Cassandra: their keyspaces are migrated first.
CASSANDRA_SERVICES = ("audit",)
PERSON = "c" * 64
BASE_TIME = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
RECORD_LOOKUP = Principal(PrincipalKind.SERVICE, "record-lookup", purpose=Purpose.OPERATIONS)
AUDITOR = Principal(PrincipalKind.AUDITOR, "auditor-1", purpose=Purpose.OPERATIONS)
LOGGED = 10


@pytest.fixture(params=["sqlite", CASSANDRA])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Insider:
    """Direct access to the audit store's tables, past the service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sqlite = settings.storage_backend == "sqlite"
        self._cassandra: CassandraDatabase | None = None

    async def open(self) -> Insider:
        if not self.sqlite:
            self._cassandra = keyspace_for(self.settings, "audit", MIGRATIONS)
            await self._cassandra.open()
        return self

    async def close(self) -> None:
        if self._cassandra is not None:
            await self._cassandra.close()

    def _sqlite(self) -> sqlite3.Connection:
        return sqlite3.connect(self.settings.data_dir / "audit.db")

    async def _cql(self, cql: str, params: tuple[object, ...] = ()) -> list[Any]:
        assert self._cassandra is not None
        return await self._cassandra.execute(cql, params)

    async def leaves(self) -> dict[int, bytes]:
        if self.sqlite:
            with self._sqlite() as connection:
                rows = connection.execute("SELECT leaf_index, leaf FROM leaves").fetchall()
            return {index: bytes(leaf) for index, leaf in rows}
        rows = await self._cql("SELECT leaf_index, leaf FROM leaves")
        return {int(row.leaf_index): bytes(row.leaf) for row in rows}

    async def set_leaf(self, index: int, leaf: bytes) -> None:
        if self.sqlite:
            with self._sqlite() as connection:
                connection.execute("UPDATE leaves SET leaf = ? WHERE leaf_index = ?", (leaf, index))
        else:
            await self._cql(
                "UPDATE leaves SET leaf = ? WHERE bucket = 0 AND leaf_index = ?", (leaf, index)
            )

    async def delete_leaf(self, index: int) -> None:
        if self.sqlite:
            with self._sqlite() as connection:
                connection.execute("DELETE FROM leaves WHERE leaf_index = ?", (index,))
        else:
            await self._cql("DELETE FROM leaves WHERE bucket = 0 AND leaf_index = ?", (index,))

    async def set_nodes(self, nodes: list[tuple[merkle.NodeKey, bytes]]) -> None:
        if self.sqlite:
            with self._sqlite() as connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO nodes (level, node_index, hash) VALUES (?, ?, ?)",
                    [(level, index, value) for (level, index), value in nodes],
                )
            return
        for (level, index), value in nodes:
            await self._cql(
                "INSERT INTO node_chunks (level, chunk, node_index, hash) VALUES (?, ?, ?, ?)",
                (level, index >> NODE_CHUNK_BITS, index, value),
            )

    async def set_size(self, size: int) -> None:
        if self.sqlite:
            with self._sqlite() as connection:
                connection.execute("UPDATE tree_state SET size = ? WHERE id = 0", (size,))
        else:
            await self._cql("UPDATE log_head SET size = ? WHERE id = 0", (size,))

    async def rebuild_nodes(self) -> None:
        """Recompute every stored hash from the (tampered) leaves: a consistent forgery."""
        leaves = await self.leaves()
        nodes: dict[merkle.NodeKey, bytes] = {}
        for index in sorted(leaves):
            nodes.update(merkle.append_nodes(index, merkle.leaf_hash(leaves[index]), nodes))
        await self.set_nodes(list(nodes.items()))


class Clock:
    """The audit service's clock; moving it past the head's lifetime makes the service sign
    a new head of whatever its tables hold (as it does every 30 s in production)."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment

    def resign(self) -> None:
        self.moment += DEFAULT_HEAD_MAX_AGE + timedelta(seconds=1)


@dataclass
class AuditLog:
    """A running audit service holding LOGGED events, and an insider of its store."""

    settings: Settings
    channel: grpc.aio.Channel
    clock: Clock
    insider: Insider
    log_key: bytes

    async def log_events(self, count: int, first: int) -> None:
        stub = audit_pb2_grpc.AuditServiceStub(self.channel)
        for minutes in range(first, first + count):
            await stub.AppendEvent(
                audit_pb2.AppendEventRequest(event=access_event(minutes)),
                metadata=auth_metadata(self.settings, RECORD_LOOKUP),
            )

    async def verify(self) -> Verdict:
        """`healthbank audit verify` of the log as the service now signs it."""
        self.clock.resign()
        return await verify_audit_log(
            self.channel, self.log_key, auth_metadata(self.settings, AUDITOR)
        )


@pytest.fixture
async def log(settings: Settings) -> AsyncIterator[AuditLog]:
    clock = Clock()
    insider = await Insider(settings).open()
    try:
        async with open_service(settings, now=clock) as host:
            port = await host.start(0)
            async with open_channel(f"127.0.0.1:{port}") as channel:
                # The operator hands out the log's key (the key provider's), not the server.
                log_key = await build_key_provider(settings).public_key()
                audit_log = AuditLog(settings, channel, clock, insider, log_key)
                await audit_log.log_events(LOGGED, first=0)
                assert (await audit_log.verify()).ok
                yield audit_log
    finally:
        await insider.close()


def access_event(minutes: int) -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_CLINICIAN,
            subject="dr-1",
            hospital_id="hospital-a",
            purpose=common_pb2.PURPOSE_OF_USE_TREATMENT,
        ),
        action=audit_pb2.ACTION_READ_HISTORY,
        person_token=PERSON,
        resource_names=[f"persons/{PERSON}"],
        basis="GRANT",
    )
    event.occur_time.FromDatetime(BASE_TIME + timedelta(minutes=minutes))
    return event


def changed(leaf: bytes, **fields: object) -> bytes:
    event = audit_pb2.AccessEvent()
    event.ParseFromString(leaf)
    for name, value in fields.items():
        setattr(event, name, value)
    return leaf_bytes(event)


# --- found by `healthbank audit verify` ----------------------------------------------------


async def test_a_log_of_large_events_verifies_page_by_page(log: AuditLog) -> None:
    """1,000 events naming 60 records each are ~9 MB as GetEntries entries: more than one
    gRPC message may carry (the chaos run's verify got RESOURCE_EXHAUSTED). The answers
    stop early and the verifier reads on, so the whole log still verifies."""
    stub = audit_pb2_grpc.AuditServiceStub(log.channel)
    for batch in range(10):
        events = []
        for minutes in range(100):
            event = access_event(LOGGED + batch * 100 + minutes)
            event.action = audit_pb2.ACTION_WRITE
            event.resource_names[:] = [f"persons/{PERSON}/records/{new_ulid()}" for _ in range(60)]
            events.append(event)
        await stub.AppendEvents(
            audit_pb2.AppendEventsRequest(events=events),
            metadata=auth_metadata(log.settings, RECORD_LOOKUP),
        )
    checked: list[audit_pb2.AccessEvent] = []
    log.clock.resign()
    verdict = await verify_audit_log(
        log.channel, log.log_key, auth_metadata(log.settings, AUDITOR), events=checked
    )
    assert verdict.ok, verdict.line()
    assert verdict.tree_size == len(checked) == LOGGED + 1000


async def test_a_changed_event_is_found(log: AuditLog) -> None:
    leaves = await log.insider.leaves()
    await log.insider.set_leaf(4, changed(leaves[4], action=audit_pb2.ACTION_READ_EMERGENCY))
    verdict = await log.verify()
    assert (verdict.ok, verdict.first_bad_index) == (False, 4)
    assert verdict.line().startswith("audit log FAILED at sequence number 4:")


async def test_a_deleted_event_is_found(log: AuditLog) -> None:
    await log.insider.delete_leaf(6)
    verdict = await log.verify()
    assert (verdict.ok, verdict.first_bad_index) == (False, 6)
    assert "missing" in verdict.problem
    await log.insider.delete_leaf(LOGGED - 1)
    assert (await log.verify()).first_bad_index == 6


async def test_two_swapped_events_are_found(log: AuditLog) -> None:
    leaves = await log.insider.leaves()
    await log.insider.set_leaf(2, leaves[7])
    await log.insider.set_leaf(7, leaves[2])
    verdict = await log.verify()
    assert (verdict.ok, verdict.first_bad_index) == (False, 2)


async def test_a_rewritten_stored_hash_is_found(log: AuditLog) -> None:
    # A changed event whose stored leaf hash is rewritten to match (inclusion proofs of
    # the forged event now pass): the rebuilt root still differs from the signed one. The
    # named leaf is the first one not proven as signed; the rewritten hash also spoils the
    # proofs of its sibling, so it may be named one earlier.
    leaves = await log.insider.leaves()
    forged = changed(leaves[3], basis="SELF")
    await log.insider.set_leaf(3, forged)
    await log.insider.set_nodes([((0, 3), merkle.leaf_hash(forged))])
    verdict = await log.verify()
    assert not verdict.ok
    assert verdict.first_bad_index in (2, 3)

    # A rewritten inner hash makes the service sign a root no event list produces.
    await log.insider.set_leaf(3, leaves[3])
    await log.insider.set_nodes([((0, 3), merkle.leaf_hash(leaves[3])), ((3, 0), b"\x5a" * 32)])
    verdict = await log.verify()
    assert not verdict.ok
    assert verdict.first_bad_index is not None and verdict.first_bad_index < 8


async def test_a_head_signed_by_another_key_fails_verify(log: AuditLog) -> None:
    log.log_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    verdict = await log.verify()
    assert not verdict.ok
    assert "signature" in verdict.problem


# --- found by the witness ----------------------------------------------------------------


@pytest.fixture
async def witness_store(tmp_path: Path) -> AsyncIterator[WitnessStore]:
    store = await WitnessStore(tmp_path / "witness" / "witness.db").open()
    yield store
    await store.close()


def witness_of(log: AuditLog, store: WitnessStore, tmp_path: Path) -> Witness:
    return Witness(
        store,
        log.channel,
        log.log_key,
        Ed25519PrivateKey.generate(),
        lambda: datetime.now(UTC),
        publish=tmp_path / "witness" / "cosigned-head.json",
    )


async def test_the_witness_cosigns_a_growing_log(
    log: AuditLog, witness_store: WitnessStore, tmp_path: Path
) -> None:
    witness = witness_of(log, witness_store, tmp_path)
    assert await witness.observe() == Finding.FIRST
    assert await witness.observe() == Finding.UNCHANGED
    await log.log_events(5, first=LOGGED)
    assert await witness.observe() == Finding.GREW
    heads = await witness_store.heads()
    assert [head.tree_size for head in heads] == [LOGGED, LOGGED + 5]
    assert await witness_store.alarms() == []
    published = json.loads((tmp_path / "witness" / "cosigned-head.json").read_text())
    assert published["tree_size"] == LOGGED + 5
    head = audit_pb2.SignedTreeHead(
        tree_size=published["tree_size"], root_hash=bytes.fromhex(published["root_hash"])
    )
    head.timestamp.FromMilliseconds(published["timestamp_ms"])
    assert verify_signature(
        witness.public_key, bytes.fromhex(published["witness_signature"]), cosigned_head_bytes(head)
    )
    assert published["witness_public_key"] == witness.public_key.hex()


async def test_a_consistent_rewrite_resigned_by_the_log_is_caught_by_the_witness(
    log: AuditLog,
    witness_store: WitnessStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    witness = witness_of(log, witness_store, tmp_path)
    assert await witness.observe() == Finding.FIRST
    honest = await witness_store.latest()
    assert honest is not None

    # The insider rewrites an event and every stored hash to match it.
    leaves = await log.insider.leaves()
    await log.insider.set_leaf(2, changed(leaves[2], action=audit_pb2.ACTION_WRITE))
    await log.insider.rebuild_nodes()
    # Nothing on the server disagrees any more: verify alone cannot tell.
    assert (await log.verify()).ok
    assert await witness.observe() == Finding.FORK
    # Growing the forged log does not help: it is not an extension of the held head.
    await log.log_events(2, first=LOGGED)
    assert await witness.observe() == Finding.INVALID_PROOF
    alarms = await witness_store.alarms()
    assert [alarm.finding for alarm in alarms] == ["fork", "invalid_proof"]
    assert alarms[0].root_hash != honest.root_hash
    # The witness kept only the honest head, and said so at ERROR.
    assert await witness_store.heads() == [honest]
    assert [r.levelname for r in caplog.records if "witness ALARM" in r.getMessage()] == [
        "ERROR",
        "ERROR",
    ]


async def test_a_rolled_back_log_is_a_shrink(
    log: AuditLog, witness_store: WitnessStore, tmp_path: Path
) -> None:
    witness = witness_of(log, witness_store, tmp_path)
    assert await witness.observe() == Finding.FIRST
    await log.insider.set_size(LOGGED - 3)
    # The shortened log is self-consistent; only someone holding the old head knows.
    assert (await log.verify()).ok
    # On its schedule, the witness stops at the alarm (the command then exits 3).
    assert await witness.run(interval=0.01, stop=asyncio.Event()) == Finding.SHRINK
    assert [alarm.finding for alarm in await witness_store.alarms()] == ["shrink"]


def test_the_leaf_hash_is_recomputed_from_the_event() -> None:
    event = access_event(0)
    assert event_leaf_hash(event) == merkle.leaf_hash(event.SerializeToString(deterministic=True))
