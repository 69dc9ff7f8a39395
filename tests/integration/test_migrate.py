"""`healthbank migrate` on the real Cassandra (ADR 35): services never create schema; they
report NOT_SERVING (and answer UNAVAILABLE, reason SCHEMA_PENDING) until migrate has run,
then serve. Migrate is idempotent and two runs at once both succeed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import grpc.aio
import pytest
from auth_support import auth_metadata
from cassandra.cluster import Session
from engine_support import cassandra_env, cassandra_session
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import load_settings
from healthbank.core.ids import new_ulid
from healthbank.rpc import error_details
from healthbank.rpc.clients import open_channel
from healthbank.storage.schema import (
    KEYSPACES,
    READ_SPECULATION,
    keyspace_migrations,
    required_version,
)
from services.audit.app import SERVICE_NAME, open_service

INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def migrate_command(env: dict[str, str]) -> tuple[int, str]:
    """Run `healthbank migrate` with ``env``; its exit code and stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "healthbank.cli", "migrate"),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode is not None
    return process.returncode, out.decode()


def write_event() -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_HOSPITAL_ENGINE,
            subject="engine-a",
            hospital_id="hospital-a",
            purpose=common_pb2.PURPOSE_OF_USE_OPERATIONS,
        ),
        action=audit_pb2.ACTION_WRITE,
        person_token="e" * 64,
        basis="INGEST",
    )
    event.occur_time.FromDatetime(datetime(2024, 5, 1, tzinfo=UTC))
    return event


async def health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    return int(response.status)


async def test_a_service_is_not_serving_until_migrate_has_run_then_serves(
    engines: dict[str, str], keyspace_prefix: str, tmp_path: Path
) -> None:
    env = {
        **cassandra_env(engines, keyspace_prefix),
        "HEALTHBANK_DATA_DIR": str(tmp_path),
        "HEALTHBANK_PORT": "0",
        "HEALTHBANK_AUTH_SECRET": "migrate-test-secret",
    }
    settings = load_settings(env)
    async with open_service(settings) as host:
        port = await host.start(0)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            auth = auth_metadata(settings, INGEST)
            # Several readiness rounds pass: the keyspace does not appear by itself.
            for _ in range(3):
                assert await health(channel) == NOT_SERVING
                await asyncio.sleep(1.0)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.AppendEvent(
                    audit_pb2.AppendEventRequest(event=write_event()), metadata=auth
                )
            details = error_details(refused.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE
            assert details.reason == "SCHEMA_PENDING"
            assert details.retry_delay is not None and details.retry_delay > 0
            with cassandra_session(
                engines["HEALTHBANK_CASSANDRA_HOSTS"], engines["HEALTHBANK_CASSANDRA_PORT"]
            ) as session:
                names = {
                    row.keyspace_name
                    for row in session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
                }
            assert not any(name.startswith(f"{keyspace_prefix}_") for name in names)

            code, _ = await migrate_command(env)
            assert code == 0
            for _ in range(100):
                if await health(channel) == SERVING:
                    break
                await asyncio.sleep(0.2)
            assert await health(channel) == SERVING
            appended = await stub.AppendEvent(
                audit_pb2.AppendEventRequest(event=write_event()), metadata=auth
            )
            assert appended.leaf_index == 0


async def test_migrate_runs_at_once_agree_and_a_rerun_changes_nothing(
    engines: dict[str, str], keyspace_prefix: str
) -> None:
    env = cassandra_env(engines, keyspace_prefix)
    first, second = await asyncio.gather(migrate_command(env), migrate_command(env))
    assert first[0] == 0 and second[0] == 0
    expected = {
        f"{keyspace_prefix}_{concern}": required_version(keyspace_migrations(concern))
        for concern in KEYSPACES
    }
    for output in (first[1], second[1]):
        reached = dict(
            (line.split(":")[0], int(line.rsplit(" ", 1)[1])) for line in output.splitlines()
        )
        assert reached == expected
    # Every table reads with capped speculation (issue 15: no read stalls on a dead node),
    # and a table that lost it (one made before migrate set it) gets it back on a rerun.
    with cassandra_session(
        env["HEALTHBANK_CASSANDRA_HOSTS"], env["HEALTHBANK_CASSANDRA_PORT"]
    ) as session:
        assert speculation(session, expected) == {READ_SPECULATION}
        session.execute(
            f"ALTER TABLE {keyspace_prefix}_records.records WITH speculative_retry = '99p'"
        )
        code, again = await migrate_command(env)
        assert code == 0
        assert sorted(again.splitlines()) == sorted(
            f"{keyspace}: schema version {version} -> {version}"
            for keyspace, version in expected.items()
        )
        assert speculation(session, expected) == {READ_SPECULATION}


def speculation(session: Session, keyspaces: Iterable[str]) -> set[str]:
    """The speculative_retry settings of every table in ``keyspaces``."""
    return {
        row.speculative_retry
        for keyspace in keyspaces
        for row in session.execute(
            "SELECT speculative_retry FROM system_schema.tables WHERE keyspace_name = %s",
            (keyspace,),
        )
    }


async def test_migrate_on_embedded_storage_has_nothing_to_do(tmp_path: Path) -> None:
    code, output = await migrate_command(
        {"HEALTHBANK_STORAGE_BACKEND": "sqlite", "HEALTHBANK_DATA_DIR": str(tmp_path)}
    )
    assert code == 0
    assert "nothing to do" in output
