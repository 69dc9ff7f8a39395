"""The ingest benchmark keeps working: a tiny run prints both figures."""

from __future__ import annotations

import subprocess
import sys

from repo_paths import REPO


def test_ingest_benchmark_prints_baseline_and_flow() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/bench/ingest.py"), "--messages", "4"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("baseline:") and "/s" in line for line in lines)
    assert any(line.startswith("ingest: Submit") and "n=4" in line for line in lines)
