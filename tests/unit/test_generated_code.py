"""Generated stubs are reproducible from protos/ and the protos stay lint-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

from repo_paths import REPO


def test_checked_in_stubs_match_a_fresh_generation() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "codegen.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_buf_lint_is_clean() -> None:
    buf = shutil.which("buf")
    assert buf is not None, "buf is a dev dependency (buf-bin); install '.[dev]'"
    result = subprocess.run(
        [buf, "lint"], cwd=REPO / "protos", capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
