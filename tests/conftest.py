"""Fixtures shared by every test folder.

`engines` starts the real Cassandra, OpenBao and Redis with the project's own
tools/engines/engines.py (idempotent: a no-op when tools/test.sh already started
them) and returns the HEALTHBANK_* settings that point at them. Tests that need a
server start it; nothing is skipped.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import pytest

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
def keyspace_prefix(request: pytest.FixtureRequest) -> str:
    """A fresh Cassandra keyspace prefix per test, so tests never see each other's rows."""
    return f"t{next(_keyspace_counter)}_{abs(hash(request.node.nodeid)) % 10**8}"
