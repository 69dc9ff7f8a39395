"""Fixtures for the contract suites: every backend of an interface, the real engines included.

The engines, OpenBao (``vault_root``, ``transit_mount``) and the per-test keyspace prefix
(dropped afterwards) come from tests/conftest.py. A store suite defines ``store_kind``
(contract_support.StoreKind); the fixtures below open its stores on SQLite and on Cassandra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import hvac
import pytest
from contract_support import StoreKind, Stores
from engine_support import CASSANDRA

from healthbank.crypto import KeyProvider, LocalKeyring, VaultKeyProvider


@pytest.fixture(params=["sqlite", CASSANDRA])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, keyspace_prefix: str, store_kind: StoreKind
) -> AsyncIterator[Stores]:
    """Each storage backend of the suite's ``store_kind``; the store instances a test opens
    are closed after it (and its keyspace dropped by ``keyspace_prefix``)."""
    engines = request.getfixturevalue("engines") if request.param == "cassandra" else None
    opened = Stores(store_kind, request.param, tmp_path, keyspace_prefix, engines)
    yield opened
    await opened.close()


@pytest.fixture
def backend(stores: Stores) -> Stores:
    """``stores`` under the name the suites use: ``backend.open_store()``, ``.database``,
    ``.count_rows(table)``, ``.name``."""
    return stores


@pytest.fixture
def open_store(stores: Stores) -> Callable[[], Awaitable[Any]]:
    """Opens another store instance on the same data (same file / same keyspace) per call."""
    return stores.open_store


@pytest.fixture
async def store(stores: Stores) -> Any:
    """A store of the suite's interface on the test's backend."""
    return await stores.open_store()


@pytest.fixture
def cassandra_keyspace(engines: dict[str, str], keyspace_prefix: str, store_kind: StoreKind) -> str:
    """The suite's keyspace name for Cassandra-only tests (``keyspace_prefix`` drops it)."""
    return f"{keyspace_prefix}_{store_kind.concern}"


@pytest.fixture(params=["local", pytest.param("vault", marks=pytest.mark.engines)])
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
