"""A service pointed at the real engines refuses to start with development credentials.

Each case starts `healthbank serve identity` as a real process on Cassandra + OpenBao +
Redis with a safe configuration changed in one setting, and expects exit code 2 with one
line naming that setting and never its value. The safe configuration itself starts (mTLS
on, no development tokens), so every refusal is caused by the one change.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from engine_support import cassandra_env

from healthbank.core.config import DEV_AUTH_SECRET, DEV_KEYRING_PASSPHRASE
from healthbank.crypto.pki import write_local_pki
from healthbank.dev.devstack import free_port

SHORT_SECRET = "short-but-not-empty"


@pytest.fixture
def safe_env(engines: dict[str, str], keyspace_prefix: str, tmp_path: Path) -> dict[str, str]:
    """identity on the real engines with production-grade settings."""
    files = write_local_pki(tmp_path / "pki", ["identity"])["identity"]
    return {
        **engines,
        **cassandra_env(engines, keyspace_prefix),
        "HEALTHBANK_KEY_PROVIDER": "vault",
        "HEALTHBANK_CACHE_BACKEND": "redis",
        "HEALTHBANK_DATA_DIR": str(tmp_path / "data"),
        "HEALTHBANK_PORT": str(free_port()),
        "HEALTHBANK_AUTH_SECRET": secrets.token_urlsafe(48),
        "HEALTHBANK_KEYRING_PASSPHRASE": secrets.token_urlsafe(48),
        "HEALTHBANK_DEV_TOKENS": "false",
        "HEALTHBANK_TLS_CA_FILE": str(files.ca_file),
        "HEALTHBANK_TLS_CERT_FILE": str(files.cert_file),
        "HEALTHBANK_TLS_KEY_FILE": str(files.key_file),
    }


def _clean_environ() -> dict[str, str]:
    # The shell's own HEALTHBANK_* settings must not leak into the case.
    return {name: value for name, value in os.environ.items() if not name.startswith("HEALTHBANK")}


def serve(env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `healthbank serve identity` with ``env`` until it exits."""
    return subprocess.run(
        [sys.executable, "-m", "healthbank.cli", "serve", "identity"],
        env={**_clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


UNSAFE = {
    "development auth secret": (
        {"HEALTHBANK_AUTH_SECRET": DEV_AUTH_SECRET},
        "HEALTHBANK_AUTH_SECRET is the development value from the repository",
    ),
    "short auth secret": (
        {"HEALTHBANK_AUTH_SECRET": SHORT_SECRET},
        "HEALTHBANK_AUTH_SECRET is shorter than 32 bytes",
    ),
    "development keyring passphrase": (
        {
            "HEALTHBANK_KEY_PROVIDER": "local",
            "HEALTHBANK_KEYRING_PASSPHRASE": DEV_KEYRING_PASSPHRASE,
        },
        "HEALTHBANK_KEYRING_PASSPHRASE is the development value from the repository",
    ),
    "empty keyring passphrase": (
        {"HEALTHBANK_KEY_PROVIDER": "local", "HEALTHBANK_KEYRING_PASSPHRASE": ""},
        "HEALTHBANK_KEYRING_PASSPHRASE is shorter than 32 bytes",
    ),
    "short keyring passphrase": (
        {"HEALTHBANK_KEY_PROVIDER": "local", "HEALTHBANK_KEYRING_PASSPHRASE": SHORT_SECRET},
        "HEALTHBANK_KEYRING_PASSPHRASE is shorter than 32 bytes",
    ),
    "plaintext gRPC": (
        {
            "HEALTHBANK_TLS_CA_FILE": "",
            "HEALTHBANK_TLS_CERT_FILE": "",
            "HEALTHBANK_TLS_KEY_FILE": "",
        },
        "HEALTHBANK_TLS_CA_FILE is not set: gRPC would be plaintext",
    ),
    "development tokens": (
        {"HEALTHBANK_DEV_TOKENS": "true"},
        "HEALTHBANK_DEV_TOKENS is on: HMAC development tokens accepted",
    ),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_an_unsafe_setting_stops_the_service_with_one_line(
    safe_env: dict[str, str], case: str
) -> None:
    change, reason = UNSAFE[case]
    env = {**safe_env, **change}
    result = serve(env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"healthbank: refusing to start on real engines: {reason}"
    ]
    assert "HEALTHBANK_READY" not in result.stdout
    for value in change.values():
        if len(value) > 5:
            assert value not in result.stderr + result.stdout


def test_the_safe_configuration_serves_with_mtls(safe_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "healthbank.cli", "serve", "identity"],
        env={**_clean_environ(), **safe_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.split() == ["HEALTHBANK_READY", "identity", safe_env["HEALTHBANK_PORT"]]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]


def test_development_settings_on_real_engines_need_the_explicit_opt_out(
    engines: dict[str, str], keyspace_prefix: str, tmp_path: Path
) -> None:
    # The zero-configuration defaults on real engines: every unsafe setting is named at once.
    env = {
        **engines,
        **cassandra_env(engines, keyspace_prefix),
        "HEALTHBANK_DATA_DIR": str(tmp_path),
    }
    env.pop("HEALTHBANK_AUTH_SECRET", None)
    result = serve(env)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    for variable in (
        "HEALTHBANK_AUTH_SECRET",
        "HEALTHBANK_KEYRING_PASSPHRASE",
        "HEALTHBANK_TLS_CA_FILE",
        "HEALTHBANK_DEV_TOKENS",
    ):
        assert variable in line
