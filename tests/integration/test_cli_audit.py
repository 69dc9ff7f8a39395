"""`healthbank audit verify`, `healthbank audit public-key` and `healthbank witness` as the
README shows them: real processes against a real audit service (embedded storage)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from auth_support import auth_metadata

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import load_settings
from healthbank.core.ids import new_ulid
from healthbank.rpc.clients import open_channel
from services.audit.app import open_service

INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
PERSON = "d" * 64


async def healthbank(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the `healthbank` command; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "healthbank.cli", *args),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def written_event() -> audit_pb2.AccessEvent:
    event = audit_pb2.AccessEvent(
        event_id=new_ulid(),
        actor=common_pb2.Principal(
            kind=common_pb2.PRINCIPAL_KIND_HOSPITAL_ENGINE,
            subject="engine-a",
            hospital_id="hospital-a",
            purpose=common_pb2.PURPOSE_OF_USE_OPERATIONS,
        ),
        action=audit_pb2.ACTION_WRITE,
        person_token=PERSON,
        basis="INGEST",
    )
    event.occur_time.FromDatetime(datetime(2024, 5, 1, tzinfo=UTC))
    return event


async def test_verify_and_witness_commands(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"HEALTHBANK_DATA_DIR": str(data_dir)}
    settings = load_settings({**env, "HEALTHBANK_PORT": "0"})
    async with open_service(settings) as host:
        port = await host.start(0)
        env["HEALTHBANK_AUDIT_ADDR"] = f"127.0.0.1:{port}"
        async with open_channel(env["HEALTHBANK_AUDIT_ADDR"]) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            for _ in range(5):
                await stub.AppendEvent(
                    audit_pb2.AppendEventRequest(event=written_event()),
                    metadata=auth_metadata(settings, INGEST),
                )

        # The operator hands the log's key to verifiers and witnesses out of band.
        code, out, _ = await healthbank("audit", "public-key", env=env)
        assert code == 0
        env["HEALTHBANK_AUDIT_PUBLIC_KEY"] = public_key = out.strip()
        assert len(bytes.fromhex(public_key)) == 32

        code, out, _ = await healthbank("audit", "verify", env=env)
        assert (code, out.splitlines()) == (
            0,
            ["audit log OK: 5 events recomputed and match the signed tree head"],
        )
        witness_dir = tmp_path / "witness"
        witness = ("witness", "--once", "--dir", str(witness_dir))
        assert (await healthbank(*witness, env=env))[:2] == (0, "witness: first\n")
        published = json.loads((witness_dir / "cosigned-head.json").read_text())
        assert (published["tree_size"], published["log_public_key"]) == (5, public_key)

        # An insider deletes an event, then rolls the log back to hide it.
        with sqlite3.connect(data_dir / "audit.db") as connection:
            connection.execute("DELETE FROM leaves WHERE leaf_index = 3")
        code, out, _ = await healthbank("audit", "verify", env=env)
        assert code == 1
        assert out.splitlines() == [
            "audit log FAILED at sequence number 3: the event is missing from the listing"
        ]
        # The witness on its schedule (not --once) stops by itself at the rollback.
        watching = asyncio.create_task(
            healthbank("witness", "--interval", "0.2", "--dir", str(witness_dir), env=env)
        )
        with sqlite3.connect(data_dir / "audit.db") as connection:
            connection.execute("UPDATE tree_state SET size = 3 WHERE id = 0")
        assert (await healthbank("audit", "verify", env=env))[0] == 0
        code, out, err = await watching
        assert (code, out) == (3, "witness: shrink\n")
        alarm = [json.loads(line) for line in err.splitlines() if "witness ALARM" in line]
        assert [line["level"] for line in alarm] == ["ERROR"]

        # Without the key, neither command runs.
        del env["HEALTHBANK_AUDIT_PUBLIC_KEY"]
        code, _, err = await healthbank("audit", "verify", env=env)
        assert code == 2
        assert "public key is required" in err
