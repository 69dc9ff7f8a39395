"""Fixtures for the contract suites: every backend of an interface, the real engines included.

The engines, OpenBao (``vault_root``, ``transit_mount``) and the per-test keyspace prefix
(dropped afterwards) come from tests/conftest.py; ``stores`` (contract_support.Stores) opens
a suite's store instances on SQLite and on Cassandra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import hvac
import pytest
from contract_support import Stores

from healthbank.crypto import KeyProvider, LocalKeyring, VaultKeyProvider


@pytest.fixture(params=["sqlite", "cassandra"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, keyspace_prefix: str
) -> AsyncIterator[Stores]:
    """Each storage backend of a store interface: open store instances with
    ``stores.opener(...)``; all are closed after the test, and the keyspaces dropped."""
    engines = request.getfixturevalue("engines") if request.param == "cassandra" else None
    opened = Stores(request.param, tmp_path, keyspace_prefix, engines)
    yield opened
    await opened.close()


@pytest.fixture(params=["local", "vault"])
def key_provider(request: pytest.FixtureRequest) -> KeyProvider:
    """Each KeyProvider backend, fresh per test: a new keyring file or a new Transit mount."""
    if request.param == "local":
        local: LocalKeyring = request.getfixturevalue("keyring")
        return local
    vault_root: hvac.Client = request.getfixturevalue("vault_root")
    mount: str = request.getfixturevalue("transit_mount")
    return VaultKeyProvider(vault_root.url, token=vault_root.token, transit_mount=mount)


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    """A fresh local keyring (cheap scrypt: contract tests open many)."""
    return LocalKeyring(tmp_path / "keyring.json", "contract-test", scrypt_n=2**10)
