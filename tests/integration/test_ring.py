"""The seven services on a 3-node Cassandra ring on loopback (tools/engines/ring.py, RF 3,
LOCAL_QUORUM), issue 15:

- fresh deploys in a row, each onto keyspaces that do not exist yet, with the services
  started first and two ``healthbank migrate`` runs at once: every service comes up SERVING,
  none crashes (done-means 1: as many deploys as start within ``HEALTHBANK_RING_DEPLOY_SECONDS``,
  180 by default, at least one; set it higher for the full ten);
- one node killed -9 under ingest load: every message is acknowledged once its client
  retries as a real engine does, and every acknowledged message is stored exactly once
  (answered DUPLICATE with the same records when sent again) (done-means 2, in part). The
  longest wait of one message (first send to acknowledgement) is reported as the test's
  ``longest_write_wait_s`` property. No message sent after the kill waits longer than
  ``MAX_WRITE_WAIT`` (2 s, or the slowest wait before the kill if this loaded machine
  was slower than that already); one in flight at the kill may lose that attempt and make
  one more (ADR 36 and its amendments: no LOGGED batches, reads that ask the third replica
  after 100 ms);
- two of three nodes killed: each Submit is answered UNAVAILABLE within a second (the
  driver sees too few nodes up and does not wait out a coordinator's timeout), and once one
  node is back a new message is stored within 15 s (done-means 2, the rest);
- a node down while rows are written, the node holding their hints killed and its hints
  lost: `nodetool repair --full -pr` on each node leaves every replica complete
  (done-means 3).

The ring is started fresh for the module and stopped after it; it never touches the shared
single node of tools/engines/engines.py (other ports and addresses).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import Session
from repo_paths import REPO

from healthbank.common.v1 import common_pb2
from healthbank.dev import synthetic
from healthbank.dev.demo import DemoClient, submit
from healthbank.dev.devstack import LocalStack
from healthbank.dev.scripts import load_script
from healthbank.ingest.v1 import ingest_pb2
from healthbank.rpc.errors import TRANSIENT_CODES
from healthbank.storage.cassandra import coordinated_by, drop_keyspaces

pytestmark = pytest.mark.engines

AUTH_SECRET = "ring-test-secret"
# Deploys go on while the time spent is under this (a loop bound only, never asserted).
DEPLOY_SECONDS = float(os.environ.get("HEALTHBANK_RING_DEPLOY_SECONDS", "180"))
MESSAGES = 48
SENDERS = 6
KILLED_NODE = 3
# Issue 15, done-means 2: with one of three nodes killed, no write waits longer than this.
MAX_WRITE_WAIT = 2.0
FHIR = common_pb2.SOURCE_FORMAT_FHIR_R4_JSON


@pytest.fixture(scope="module")
def ring() -> Iterator[tuple[ModuleType, dict[str, str]]]:
    """A fresh 3-node ring and the settings that reach it; stopped after the module."""
    tool = load_script(REPO / "tools" / "engines" / "ring.py", "healthbank_tools_ring")
    try:
        env = tool.up(3, fresh=True)
        yield tool, env
    finally:
        tool.down()


def stack_env(ring_env: dict[str, str], prefix: str) -> dict[str, str]:
    return {
        **ring_env,
        "HEALTHBANK_CASSANDRA_KEYSPACE_PREFIX": prefix,
        "HEALTHBANK_AUTH_SECRET": AUTH_SECRET,
        "HEALTHBANK_LOG_LEVEL": "WARNING",
        # The tests' development tokens on a real engine: said so, as the e2e tests do.
        "HEALTHBANK_ALLOW_DEV_SECURITY": "true",
    }


def drop(ring_env: dict[str, str], prefix: str) -> None:
    """Drop a test's keyspaces, again while a node just restarted keeps the ring busy (a
    DROP then times out now and then; the next test on the ring needs them gone). Each
    attempt goes through another node: the one just restarted may lag in schema (a CI run,
    2026-12-03: three DROPs through it timed out)."""
    hosts = ring_env["HEALTHBANK_CASSANDRA_HOSTS"].split(",")
    for attempt in range(3):
        try:
            drop_keyspaces(
                hosts[attempt:] + hosts[:attempt],
                int(ring_env["HEALTHBANK_CASSANDRA_PORT"]),
                prefix,
            )
            return
        except Exception:
            if attempt == 2:
                raise
            time.sleep(10.0)


@pytest.mark.timeout(1800)
def test_fresh_deploys_with_concurrent_migrate_runs_come_up_serving(
    ring: tuple[ModuleType, dict[str, str]], tmp_path: Path
) -> None:
    _, ring_env = ring
    started, deploy = time.monotonic(), 0
    while deploy == 0 or time.monotonic() - started < DEPLOY_SECONDS:
        deploy += 1
        prefix = f"ring{deploy}_{uuid.uuid4().hex[:8]}"
        env = stack_env(ring_env, prefix)
        # The services start before any schema exists; migrate runs twice at once beside them.
        stack = LocalStack(tmp_path / f"deploy{deploy}", env=env, run_migrate=False)
        failures: list[BaseException] = []

        def start(stack: LocalStack = stack, failures: list[BaseException] = failures) -> None:
            try:
                stack.start(timeout=600)
            except BaseException as error:
                failures.append(error)

        starting = threading.Thread(target=start)
        starting.start()
        migrations = [
            subprocess.Popen(
                [sys.executable, "-m", "healthbank.cli", "migrate"],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=600)[0].decode() for process in migrations]
        starting.join(timeout=660)
        try:
            for process, output in zip(migrations, outputs, strict=True):
                assert process.returncode == 0, f"deploy {deploy}: {output[-3000:]}"
            assert not failures, f"deploy {deploy}: {failures[0]}"
            health = {name: status for name, _, status, _ in stack.health_table()}
            assert health == dict.fromkeys(stack.services, "SERVING"), deploy
        finally:
            codes = stack.stop()
            drop(ring_env, prefix)
        assert set(codes.values()) == {0}, (deploy, codes)
    print(f"{deploy} fresh deploys came up SERVING")


async def one_schema(tool: ModuleType) -> None:
    """Every node up and holding one schema version; a node that will not catch up even
    after settle() restarts it gets a ring built again from nothing.

    A node restarted after a kill now and then misses a schema change and never pulls it
    (CI runs 2026-12-03 and 2026-12-06: node 3 kept its own version through three migrate
    runs of 60 s each, and the test failed before it began). Settling before every migrate,
    not only after a test, puts the restart where the DDL needs it."""
    config = tool.RingConfig.load(3)
    for node in range(1, 4):
        await asyncio.to_thread(tool.start_node, config, node)
    try:
        await asyncio.to_thread(tool.settle, config)
    except Exception as error:
        await build_ring_again(tool, error)


async def build_ring_again(tool: ModuleType, error: Exception) -> None:
    """A fresh 3-node ring, for a ring the previous steps could not bring back."""
    print(f"ring: {error!r}; building the ring again", flush=True)
    await asyncio.to_thread(tool.up, 3, fresh=True)


@asynccontextmanager
async def stack_on_ring(
    ring: tuple[ModuleType, dict[str, str]], tmp_path: Path, name: str
) -> AsyncIterator[DemoClient]:
    """The seven services on the ring, in keyspaces of their own, and a client; afterwards
    every node is started again (a test may have killed some) and the keyspaces dropped."""
    tool, ring_env = ring
    prefix = f"{name}_{uuid.uuid4().hex[:8]}"
    stack = LocalStack(tmp_path / "stack", env=stack_env(ring_env, prefix))
    for attempt in range(3):
        await one_schema(tool)
        try:
            await asyncio.to_thread(stack.start, 600)
            break
        except RuntimeError as error:
            # migrate is idempotent and run again, as the chart's hook Job is, once the
            # ring holds one schema again. Nothing was started yet.
            if "did not agree on the schema" not in str(error) or attempt == 2:
                raise
    client = DemoClient(stack.addresses, AUTH_SECRET.encode())
    try:
        yield client
    finally:
        await client.close()
        stack.stop()
        await one_schema(tool)
        try:
            drop(ring_env, prefix)
        except Exception as error:
            # This test's own checks have run; the next test must not inherit a node that
            # refused the DROP (a CI run, 2026-12-03: "Unknown CF").
            await build_ring_again(tool, error)


async def submit_until_acknowledged(
    client: DemoClient, person: synthetic.Patient, message_id: str
) -> tuple[ingest_pb2.SubmitResponse, float]:
    """Send one message as a hospital's engine does: again after every transient failure.
    The answer and how long the message waited for it (seconds)."""
    content = synthetic.emergency_history_bundle(person, message_id)
    first_sent = time.monotonic()
    for _ in range(60):
        try:
            response = await submit(client, synthetic.HOSPITAL_A, FHIR, content, message_id)
            return response, time.monotonic() - first_sent
        except grpc.aio.AioRpcError as error:
            if error.code() not in TRANSIENT_CODES:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError(f"{message_id} was never acknowledged")


@pytest.mark.timeout(1200)
async def test_a_node_killed_under_ingest_load_loses_no_acknowledged_message(
    ring: tuple[ModuleType, dict[str, str]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    tool, _ = ring
    run = uuid.uuid4().hex[:6]
    people = {f"ring-{run}-{index}": synthetic.fresh_patient() for index in range(MESSAGES)}
    acknowledged: dict[str, ingest_pb2.SubmitResponse] = {}
    # Per message: when it was first sent and how long it waited (monotonic seconds).
    sent_and_waited: dict[str, tuple[float, float]] = {}
    kill_started: list[float] = []
    pending = list(people)

    async def sender() -> None:
        while pending:
            message_id = pending.pop()
            sent = time.monotonic()
            response, waited = await submit_until_acknowledged(
                client, people[message_id], message_id
            )
            acknowledged[message_id] = response
            sent_and_waited[message_id] = (sent, waited)
            if len(acknowledged) == MESSAGES // 3 and not kill_started:
                kill_started.append(time.monotonic())
                await asyncio.to_thread(tool.kill_node, tool.RingConfig.load(3), KILLED_NODE)

    async with stack_on_ring(ring, tmp_path, "ringkill") as client:
        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        assert kill_started
        killed_at = kill_started[0]
        done_before = [w for s, w in sent_and_waited.values() if s + w < killed_at]
        in_flight = [w for s, w in sent_and_waited.values() if s < killed_at <= s + w]
        sent_after = [w for s, w in sent_and_waited.values() if s >= killed_at]
        assert done_before and sent_after
        slowest = max(done_before)
        longest = max(in_flight + sent_after)
        record_property("longest_write_wait_s", round(longest, 2))
        print(
            f"before the kill: {len(done_before)} messages, slowest {slowest:.2f} s,"
            f" median {sorted(done_before)[len(done_before) // 2]:.2f} s;"
            f" in flight at the kill: {[round(w, 2) for w in in_flight]};"
            f" sent after it (in order): "
            f"{[round(w, 2) for s, w in sorted(sent_and_waited.values()) if s >= killed_at]}"
        )
        # The kill adds no stall. Before ADR 36 every write waited 18-22 s for the dead node
        # to be marked down (LOGGED batches); before its 2026-12-03 amendment the messages
        # sent in the ~10 s after it waited up to 5-7 s (QUORUM reads waiting 2.5 s on the
        # dead replica). The first messages of a run, before the kill, can take longer than
        # 2 s on this loaded machine (new schema, cold caches); the bar is then theirs.
        bar = max(MAX_WRITE_WAIT, slowest)
        assert max(sent_after) <= bar, (sent_after, slowest)
        # One in flight at the kill may lose its attempt on the dying node, then make one more.
        assert not in_flight or max(in_flight) <= 2 * bar, (in_flight, slowest)
        assert set(acknowledged) == set(people)
        assert all(
            response.outcome in (ingest_pb2.OUTCOME_STORED, ingest_pb2.OUTCOME_DUPLICATE)
            for response in acknowledged.values()
        )
        # Stored exactly once: sent again, each is a duplicate of what was acknowledged.
        for message_id, first in acknowledged.items():
            again, _ = await submit_until_acknowledged(client, people[message_id], message_id)
            assert again.outcome == ingest_pb2.OUTCOME_DUPLICATE, message_id
            assert list(again.record_names) == list(first.record_names), message_id
            assert again.person_token == first.person_token, message_id


@pytest.mark.timeout(1200)
async def test_two_nodes_killed_answer_unavailable_at_once_and_writes_resume_when_one_returns(
    ring: tuple[ModuleType, dict[str, str]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    tool, _ = ring
    run = uuid.uuid4().hex[:6]
    config = tool.RingConfig.load(3)
    async with stack_on_ring(ring, tmp_path, "ringtwo") as client:
        # Every service's driver connected to every node before the kill.
        for index in range(3):
            await submit_until_acknowledged(client, synthetic.fresh_patient(), f"two-{run}-{index}")
        for node in (2, 3):
            await asyncio.to_thread(tool.kill_node, config, node)
        # No quorum (2 of 3 replicas): each message is refused as retryable, at once.
        answers: list[tuple[grpc.StatusCode, float]] = []
        for index in range(5):
            message_id = f"two-{run}-down-{index}"
            content = synthetic.emergency_history_bundle(synthetic.fresh_patient(), message_id)
            started = time.monotonic()
            try:
                await submit(client, synthetic.HOSPITAL_A, FHIR, content, message_id)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
            answers.append((code, time.monotonic() - started))
        print(f"with two nodes down: {[(code.name, round(took, 2)) for code, took in answers]}")
        assert all(code == grpc.StatusCode.UNAVAILABLE for code, _ in answers), answers
        assert max(took for _, took in answers) <= 1.0, answers
        # One node back: quorum again, and a new message is stored within seconds of it.
        await asyncio.to_thread(tool.start_node, config, 2)
        returned = time.monotonic()
        response, _ = await submit_until_acknowledged(
            client, synthetic.fresh_patient(), f"two-{run}-back"
        )
        resumed = time.monotonic() - returned
        record_property("resumed_after_node_return_s", round(resumed, 2))
        print(f"stored {resumed:.2f} s after node 2 answered CQL again")
        assert response.outcome == ingest_pb2.OUTCOME_STORED
        assert resumed <= 15.0


REPAIR_ROWS = 200
REPAIR_COORDINATOR, REPAIR_DOWN = 1, 3


def node_session(tool: ModuleType, node: int, consistency: int) -> AbstractContextManager[Session]:
    """A session whose every request is coordinated by node ``node`` alone."""
    cfg = tool.RingConfig.load(3)
    return coordinated_by(cfg.address(node), cfg.native_port, consistency, request_timeout=30)


def rows_on(tool: ModuleType, node: int, keyspace: str) -> dict[int, str]:
    """What node ``node`` itself holds: read at ONE, coordinated by that node, which with
    the ring's static snitch reads its own replica (the table neither speculates nor
    read-repairs)."""
    with node_session(tool, node, ConsistencyLevel.ONE) as session:
        return {row.id: row.v for row in session.execute(f"SELECT id, v FROM {keyspace}.rows")}


@pytest.mark.timeout(1200)
def test_repair_completes_a_replica_whose_hints_were_lost(
    ring: tuple[ModuleType, dict[str, str]],
) -> None:
    """Done-means 3: node 3 is down while rows are acknowledged at QUORUM; the only node
    holding their hints is killed and its hints are lost; after both return, node 3 lacks
    the rows, and `nodetool repair --full -pr` on every node in turn (what the chart's
    repair CronJob runs) leaves every replica with every acknowledged row."""
    tool, _ = ring
    cfg = tool.RingConfig.load(3)
    tool.settle(cfg)  # node 3 must hold the table before it is killed
    keyspace = f"repair_{uuid.uuid4().hex[:8]}"
    with node_session(tool, REPAIR_COORDINATOR, ConsistencyLevel.QUORUM) as session:
        session.execute(
            f"CREATE KEYSPACE {keyspace} WITH replication ="
            " {'class': 'SimpleStrategy', 'replication_factor': 3}"
        )
        session.execute(
            f"CREATE TABLE {keyspace}.rows (id int PRIMARY KEY, v text)"
            " WITH speculative_retry = 'NONE' AND read_repair = 'NONE'"
        )
        tool.kill_node(cfg, REPAIR_DOWN)
        insert = session.prepare(f"INSERT INTO {keyspace}.rows (id, v) VALUES (?, ?)")
        acknowledged = {}
        for row_id in range(REPAIR_ROWS):
            session.execute(insert, (row_id, f"value-{row_id}"))
            acknowledged[row_id] = f"value-{row_id}"
    # The coordinator held node 3's hints. kill -9 loses the ones not yet flushed; here
    # they are all removed, so the loss is certain rather than a matter of timing.
    tool.kill_node(cfg, REPAIR_COORDINATOR)
    hints = cfg.node_dir(REPAIR_COORDINATOR) / "data" / "hints"
    for hint_file in hints.glob("*"):
        hint_file.unlink()
    try:
        tool.start_node(cfg, REPAIR_DOWN)
        tool.start_node(cfg, REPAIR_COORDINATOR)
        tool.settle(cfg)
        before = rows_on(tool, REPAIR_DOWN, keyspace)
        assert len(before) < REPAIR_ROWS  # the gap the repair must close
        for node in range(1, cfg.nodes + 1):
            tool.nodetool(cfg, node, "repair", "--full", "-pr", keyspace)
        for node in range(1, cfg.nodes + 1):
            assert rows_on(tool, node, keyspace) == acknowledged, f"node {node}"
    finally:
        with node_session(tool, REPAIR_COORDINATOR, ConsistencyLevel.QUORUM) as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
