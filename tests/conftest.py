"""Fixtures shared by every test folder.

`engines` starts the real Cassandra, OpenBao and Redis with the project's own
tools/engines/engines.py (idempotent: a no-op when tools/test.sh already started
them) and returns the HEALTHBANK_* settings that point at them. Tests that need a
server start it; nothing is skipped.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from cassandra.cluster import Cluster

REPO = Path(__file__).resolve().parents[1]
_keyspace_counter = itertools.count()


def engines_module() -> ModuleType:
    """tools/engines/engines.py, imported by path (it is a stand-alone script)."""
    spec = importlib.util.spec_from_file_location(
        "healthbank_engines", REPO / "tools" / "engines" / "engines.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def engines_tool() -> ModuleType:
    """tools/engines/engines.py: up(), down(), status() for tests that stop an engine."""
    return engines_module()


@pytest.fixture(scope="session")
def engines(engines_tool: ModuleType) -> dict[str, str]:
    """HEALTHBANK_* variables for the running real engines (started if needed)."""
    return dict(engines_tool.up())


@pytest.fixture
def keyspace_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh Cassandra keyspace prefix per test, so tests never see each other's rows.

    The test's keyspaces are dropped afterwards: hundreds of leftover keyspaces slow every
    new connection (the driver reads the whole schema) and every schema change.
    """
    prefix = f"t{next(_keyspace_counter)}_{abs(hash(request.node.nodeid)) % 10**8}"
    yield prefix
    if "engines" in request.fixturenames:
        drop_keyspaces(request.getfixturevalue("engines"), prefix)


def drop_keyspaces(engines: dict[str, str], prefix: str) -> None:
    """Drop every keyspace named ``<prefix>_*``."""
    cluster = Cluster(
        engines["HEALTHBANK_CASSANDRA_HOSTS"].split(","),
        port=int(engines["HEALTHBANK_CASSANDRA_PORT"]),
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect()
        rows = session.execute("SELECT keyspace_name FROM system_schema.keyspaces")
        for row in rows:
            if row.keyspace_name.startswith(f"{prefix}_"):
                session.execute(f"DROP KEYSPACE IF EXISTS {row.keyspace_name}", timeout=60)
    finally:
        cluster.shutdown()
