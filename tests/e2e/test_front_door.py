"""A newcomer's path against a running stack: the demo (twice), the Python client example.

The stack is the seven services as processes on embedded defaults (e2e_support); the
demo and the example run as the commands README shows, in subprocesses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import AUTH_SECRET, start_stack, stop_stack
from repo_paths import REPO

from healthbank.dev.devstack import LocalStack, address_env_name

EXAMPLE = REPO / "examples" / "submit_hl7.py"
# The sample message's patient (tests/fixtures/messages/README.md): none may be printed.
SAMPLE_IDENTIFIERS = ("510107200102142082", "Quillfeather", "Ottilie", "15855501357")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One embedded stack for the module."""
    stack = start_stack(tmp_path_factory.mktemp("front-door"), {})
    yield stack
    stop_stack(stack)


def stack_env(stack: LocalStack, **extra: str) -> dict[str, str]:
    """The environment of a command run beside ``stack`` (its addresses, its secret)."""
    env = {**os.environ, "HEALTHBANK_AUTH_SECRET": AUTH_SECRET, **extra}
    env.update({address_env_name(name): addr for name, addr in stack.addresses.items()})
    return env


def run(
    args: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_runs_twice_against_the_same_running_stack(stack: LocalStack) -> None:
    outputs = []
    for _ in range(2):
        result = run(["-m", "healthbank.cli", "demo"], stack_env(stack))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "using the running stack" in result.stdout
        assert "demo PASSED" in result.stdout
        assert "Doctor at hospital B before consent: PERMISSION_DENIED" in result.stdout
        outputs.append(result.stdout)
    # Each run invented its own patient: a new grant, a different person.
    grants = [re.search(r"access: (\S+)", out) for out in outputs]
    assert all(grants) and grants[0] != grants[1]
    first, second = (m.group(1) for m in grants if m)
    assert first.split("/")[1] != second.split("/")[1]


def test_a_failing_demo_says_why(stack: LocalStack) -> None:
    # Tokens signed with the wrong secret: every service refuses the demo's principals.
    env = stack_env(stack, HEALTHBANK_AUTH_SECRET="not-the-stack-secret")
    result = run(["-m", "healthbank.cli", "demo"], env)
    assert result.returncode == 1
    assert "demo FAILED" in result.stdout
    assert re.search(r"scenario A: UNAUTHENTICATED \(\w+\)", result.stdout), result.stdout


def test_fresh_demo_removes_its_temporary_folder(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = run(["-m", "healthbank.cli", "demo", "--fresh"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo PASSED" in result.stdout
    assert f"embedded storage in {tmp_path}" in result.stdout
    assert not list(tmp_path.glob("healthbank-demo-*")), "the demo left its data folder"


def test_the_client_example_submits_and_a_retry_is_a_duplicate(stack: LocalStack) -> None:
    env = stack_env(stack)
    first = run([str(EXAMPLE)], env, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "outcome: OUTCOME_STORED" in first.stdout
    token = re.search(r"person token: (\w+)", first.stdout)
    assert token is not None
    records = re.findall(r"record: (\S+)", first.stdout)
    assert records and all(r.startswith(f"persons/{token.group(1)}/records/") for r in records)

    retry = run([str(EXAMPLE)], env, timeout=60)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "outcome: OUTCOME_DUPLICATE" in retry.stdout
    assert f"person token: {token.group(1)}" in retry.stdout
    for output in (first.stdout + first.stderr, retry.stdout + retry.stderr):
        assert not any(identifier in output for identifier in SAMPLE_IDENTIFIERS)


def test_the_client_example_reports_a_refusal_by_name(stack: LocalStack, tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.hl7"
    garbled.write_bytes(b"MSH|^~\\&|HIS|hospital-b|HEALTHBANK|CITY|20260305||ADT^A01|X-1|P|2.5\r")
    result = run([str(EXAMPLE), str(garbled)], stack_env(stack), timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("INVALID_ARGUMENT (")
