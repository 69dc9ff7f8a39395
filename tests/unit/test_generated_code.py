"""Generated stubs are reproducible from protos/ and the protos stay lint-clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from repo_paths import REPO

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _run_check(repo: Path) -> subprocess.CompletedProcess[str]:
    # PATH without the virtual environment's bin/: codegen must find the protoc plugins
    # next to its interpreter, as when a newcomer runs `.venv/bin/python tools/codegen.py`.
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(repo / "tools" / "codegen.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_checked_in_stubs_match_a_fresh_generation_and_check_says_only_that() -> None:
    result = _run_check(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    # Quiet when up to date: one line, none of protoc's "Writing ..." chatter.
    assert result.stdout.strip().splitlines() == ["generated stubs are up to date (32 files)"]
    assert result.stderr == ""


def test_check_names_the_stale_stub_and_fails(tmp_path: Path) -> None:
    shutil.copytree(REPO / "protos", tmp_path / "protos")
    (tmp_path / "tools").mkdir()
    shutil.copy(REPO / "tools" / "codegen.py", tmp_path / "tools" / "codegen.py")
    libs = REPO / "libs"
    for path in libs.rglob("*"):
        if path.name.endswith(GENERATED_SUFFIXES):
            target = tmp_path / "libs" / path.relative_to(libs)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    stale = tmp_path / "libs" / "healthbank" / "consent" / "v1" / "consent_pb2.pyi"
    stale.write_text(stale.read_text() + "# edited by hand\n")

    result = _run_check(tmp_path)

    assert result.returncode == 1
    assert "healthbank/consent/v1/consent_pb2.pyi" in result.stdout
    assert "Writing" not in result.stdout + result.stderr


def test_buf_lint_is_clean() -> None:
    # The virtual environment need not be activated: look beside the interpreter first.
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf is not None, "buf is a dev dependency (buf-bin); install '.[dev]'"
    result = subprocess.run(
        [buf, "lint"], cwd=REPO / "protos", capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
