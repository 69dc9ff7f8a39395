"""What the chart's CronJobs run, as real processes against real services (embedded storage):
`healthbank archive tier` (archive tiering) and `healthbank audit verify` over mutual TLS
(the audit scrub, as production runs it)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from auth_support import auth_metadata

from healthbank.audit.v1 import audit_pb2, audit_pb2_grpc
from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import load_settings
from healthbank.core.ids import new_ulid
from healthbank.crypto.pki import write_local_pki
from healthbank.dev.devstack import client_credentials, tls_env
from healthbank.rpc.clients import open_channel
from services.archive.app import open_service
from services.audit.app import open_service as open_audit

INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)


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


async def test_archive_tier_calls_tier_records_as_the_tiering_job(tmp_path: Path) -> None:
    env = {"HEALTHBANK_DATA_DIR": str(tmp_path / "data")}
    settings = load_settings({**env, "HEALTHBANK_PORT": "0"})
    async with open_service(settings) as host:
        port = await host.start(0)
        env["HEALTHBANK_ARCHIVE_ADDR"] = f"127.0.0.1:{port}"
        # Only the archive-tiering service may call TierRecords: success proves who called.
        code, out, err = await healthbank(
            "archive", "tier", "--older-than-days", "30", "--max-records", "500", env=env
        )
        assert (code, out) == (0, "archive tier: 0 records moved\n"), err
        # A refused call (max_records out of range) exits non-zero with the reason.
        code, out, err = await healthbank("archive", "tier", "--max-records", "-1", env=env)
        assert code != 0
        assert "INVALID_ARGUMENT" in err and "max_records" in err


def _access_event() -> audit_pb2.AccessEvent:
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
    event.occur_time.GetCurrentTime()
    return event


async def test_audit_verify_runs_over_mutual_tls_with_its_own_certificate(tmp_path: Path) -> None:
    pki = write_local_pki(tmp_path / "pki", ["audit", "ingest", "audit-scrub"])
    data = {"HEALTHBANK_DATA_DIR": str(tmp_path / "data")}
    settings = load_settings({**data, **tls_env(pki["audit"]), "HEALTHBANK_PORT": "0"})
    async with open_audit(settings) as host:
        address = f"127.0.0.1:{await host.start(0)}"
        # Ingest appends over its own certificate, as in production.
        ingest_channel = open_channel(
            address,
            credentials=client_credentials(pki["ingest"]),
            options=[("grpc.ssl_target_name_override", "audit")],
        )
        async with ingest_channel:
            stub = audit_pb2_grpc.AuditServiceStub(ingest_channel)
            for _ in range(3):
                await stub.AppendEvent(
                    audit_pb2.AppendEventRequest(event=_access_event()),
                    metadata=auth_metadata(settings, INGEST),
                )
        code, public_key, _ = await healthbank("audit", "public-key", env=data)
        assert code == 0
        scrub = {
            **data,
            "HEALTHBANK_AUDIT_ADDR": address,
            "HEALTHBANK_AUDIT_PUBLIC_KEY": public_key.strip(),
        }
        code, out, err = await healthbank(
            "audit", "verify", env={**scrub, **tls_env(pki["audit-scrub"])}
        )
        assert (code, out) == (
            0,
            "audit log OK: 3 events recomputed and match the signed tree head\n",
        ), err
        # Without a certificate the TLS server turns the job away.
        code, out, _ = await healthbank("audit", "verify", env=scrub)
        assert code != 0 and "audit log OK" not in out
