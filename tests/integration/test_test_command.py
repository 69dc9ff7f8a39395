"""README's test command (tools/test.sh) and CI's entry point (.ci/run).

The script's own failing paths are run for real, with ``HEALTHBANK_KEEP_ENGINES=1`` so
the engines it finds running stay running; engines it had to start are stopped afterwards
(:func:`engines_left_as_found`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_paths import REPO

TEST_SH = REPO / "tools" / "test.sh"
ENGINES_PY = REPO / "tools" / "engines" / "engines.py"


def _engines(command: str) -> int:
    return subprocess.run(
        [sys.executable, str(ENGINES_PY), command], capture_output=True, timeout=300, check=False
    ).returncode


@pytest.fixture
def engines_left_as_found() -> Iterator[None]:
    """Stops the engines after the test if none were running before it: the script starts
    them and, under HEALTHBANK_KEEP_ENGINES=1, leaves them up (a developer running this
    file alone would otherwise find them still holding the ports)."""
    running = _engines("status") == 0
    yield
    if not running:
        _engines("down")


def readme_blocks() -> list[str]:
    """The sh blocks of README's "The two commands" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def test_ci_runs_exactly_readmes_test_command() -> None:
    blocks = readme_blocks()
    assert blocks[1] == "bash tools/test.sh"
    commands = [
        line
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert commands == ["exec bash tools/test.sh"]


def run_test_sh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(TEST_SH), *args],
        env={**os.environ, "HEALTHBANK_KEEP_ENGINES": "1", **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_a_missing_interpreter_fails_and_still_prints_the_total() -> None:
    result = run_test_sh({"HEALTHBANK_MAIN_PYTHON": "2.0", "HEALTHBANK_OTHER_PYTHONS": ""})
    assert result.returncode == 1
    assert "no Python 2.0 found" in result.stderr
    assert re.search(r"^== total \d+s$", result.stdout, re.MULTILINE), result.stdout
    assert "== engines" not in result.stdout


def test_a_failing_test_run_reports_the_failure_and_the_total(
    tmp_path: Path, engines_left_as_found: None
) -> None:
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails() -> None:\n    assert 1 == 2\n")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = run_test_sh(
        {"HEALTHBANK_MAIN_PYTHON": version, "HEALTHBANK_OTHER_PYTHONS": ""}, str(failing)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    # Lint and types ran (and passed) before the tests; the failure is named at the end.
    assert "== lint and format (ruff)" in out and "== types (mypy)" in out
    assert "1 failed" in out
    assert f"== FAILED: pytest {version}" in out
    assert re.search(r"^== total \d+s$", out, re.MULTILINE)
    assert "engines: stop" not in out  # HEALTHBANK_KEEP_ENGINES=1
