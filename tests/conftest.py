"""Fixtures shared by every test folder.

`engines` starts the real Cassandra, OpenBao and Redis with the project's own
tools/engines/engines.py (idempotent: a no-op when tools/test.sh already started
them) and returns the HEALTHBANK_* settings that point at them; `openbao` is the
OpenBao of those engines (started alone if only it is needed). Tests that need a
server start it; nothing is skipped.

`keyspace_prefix` (per test) and `module_keyspace_prefix` (per module, for stacks a
module shares) name a test's Cassandra keyspaces and drop them afterwards: the one
place keyspaces are dropped.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from types import ModuleType

import hvac
import pytest
from engine_support import ENGINE_FIXTURES, OpenBao, drop_keyspaces
from object_store_support import S3ProxyProcess
from repo_paths import REPO

from healthbank.dev.scripts import load_script

_keyspace_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``engines`` every test whose fixtures start the real engines, so ``-m "not
    engines"`` selects exactly the tests that run without them."""
    for item in items:
        if ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engines)


@pytest.fixture(scope="session")
def engines_tool() -> ModuleType:
    """tools/engines/engines.py: up(), down(), status() for tests that stop an engine.

    Every fixture that starts the engines goes through this one. In a run that must not
    start them (``HEALTHBANK_TEST_WITHOUT_ENGINES=1``, as tools/test.sh runs 3.12 and 3.13)
    asking for it is an error: the test is missing its ``engines`` mark.
    """
    if os.environ.get("HEALTHBANK_TEST_WITHOUT_ENGINES") == "1":
        pytest.fail("this run starts no engines: a test that needs them must be marked engines")
    return load_script(REPO / "tools" / "engines" / "engines.py", "healthbank_tools_engines")


@pytest.fixture(scope="session")
def engines(engines_tool: ModuleType) -> dict[str, str]:
    """HEALTHBANK_* variables for the running real engines (started if needed)."""
    return dict(engines_tool.up())


@pytest.fixture(scope="session")
def s3proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3ProxyProcess]:
    """A real S3-compatible server (S3Proxy) for this test session, stopped after it."""
    server = S3ProxyProcess(tmp_path_factory.mktemp("s3proxy") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openbao(engines_tool: ModuleType) -> OpenBao:
    """The engines' OpenBao (persistent raft storage, unsealed; started if needed).

    Shared by every test and by other sessions: tests make their own Transit mount
    (``transit_mount``) and never stop it; an outage is a cut ``TcpProxy`` in front of it.
    """
    env = engines_tool.up(only="vault")
    return OpenBao(addr=env["HEALTHBANK_VAULT_ADDR"], root_token=env["HEALTHBANK_VAULT_TOKEN"])


@pytest.fixture
def vault_root(openbao: OpenBao) -> hvac.Client:
    """An hvac client on the OpenBao server, logged in as root (``.url``, ``.token``)."""
    return openbao.client()


@pytest.fixture
def transit_mount(vault_root: hvac.Client) -> Iterator[str]:
    """A newly enabled Transit engine, so each test starts with no keys; disabled after."""
    mount = f"transit-{uuid.uuid4().hex[:12]}"
    vault_root.sys.enable_secrets_engine("transit", path=mount)
    yield mount
    vault_root.sys.disable_secrets_engine(path=mount)


def _fresh_keyspace_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield a prefix no other test uses; then drop ``<prefix>_*`` if the engines ran."""
    prefix = f"t{next(_keyspace_counter)}_{abs(hash(request.node.nodeid)) % 10**8}"
    yield prefix
    if "engines" in request.fixturenames:
        drop_keyspaces(request.getfixturevalue("engines"), prefix)


@pytest.fixture
def keyspace_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh Cassandra keyspace prefix per test, so tests never see each other's rows.

    The test's keyspaces are dropped afterwards when the test used the `engines` fixture
    (directly or through ``request.getfixturevalue``): hundreds of leftover keyspaces slow
    every new connection (the driver reads the whole schema) and every schema change.
    """
    yield from _fresh_keyspace_prefix(request)


@pytest.fixture(scope="module")
def module_keyspace_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """`keyspace_prefix` for what a whole module shares (a running stack); dropped after it."""
    yield from _fresh_keyspace_prefix(request)
