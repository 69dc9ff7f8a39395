"""`healthbank archive tier`, what the chart's archive-tiering CronJob runs: a real process
against a real archive service (embedded storage)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from healthbank.core.config import load_settings
from services.archive.app import open_service


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
