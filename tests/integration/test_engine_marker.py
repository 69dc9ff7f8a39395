"""``-m "not engines"`` selects exactly the tests that run without the real engines.

tests/conftest.py marks every test whose fixtures start them; a fixture that asks for them
only for some parameters (Cassandra, OpenBao, the real stack) marks those parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys

from repo_paths import REPO

AUDIT = "tests/services/test_audit_service.py"
CONSENT = "tests/services/test_consent_service.py"
# Takes the `engines` fixture itself.
OUTAGE = f"{AUDIT}::test_cassandra_outage_is_not_serving_and_unavailable_then_recovers"


def collected(*args: str) -> set[str]:
    """The node ids pytest collects with ``args``."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_tests_that_start_the_engines_are_marked_and_the_rest_are_not() -> None:
    everything = collected(AUDIT, CONSENT)
    without = collected(AUDIT, CONSENT, "-m", "not engines")
    with_engines = collected(AUDIT, CONSENT, "-m", "engines")
    assert without | with_engines == everything
    assert not without & with_engines
    assert OUTAGE in with_engines
    # Asks for the engines only on its Cassandra parameter.
    grant = f"{CONSENT}::test_create_grant_is_idempotent_by_request_id"
    assert f"{grant}[cassandra]" in with_engines
    assert f"{grant}[sqlite]" in without
    # Request validation never reaches a store and runs on neither engine.
    assert any("malformed" in test for test in without)


def test_a_run_without_engines_fails_a_test_that_asks_for_them() -> None:
    # What tools/test.sh sets for 3.12 and 3.13: a test missing its mark fails there.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", OUTAGE],
        cwd=REPO,
        env={**os.environ, "HEALTHBANK_TEST_WITHOUT_ENGINES": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "a test that needs them must be marked engines" in result.stdout
