"""The unit tests: real code in process, no engines and no network.

What they share: the parser-rejection helper and field names (unit_support.py beside this
file) and the sample messages (tests/repo_paths.py). The one rule this folder enforces: a
unit test may not use the real engines (those tests belong in contract/, services/,
integration/ or e2e/).
"""

from __future__ import annotations

import pytest
from engine_support import ENGINE_FIXTURES

# Naming a test's keyspaces means it is meant for Cassandra.
_FORBIDDEN = ENGINE_FIXTURES | {"keyspace_prefix", "module_keyspace_prefix"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail collection of a unit test that asks for a real engine."""
    for item in items:
        used = _FORBIDDEN.intersection(getattr(item, "fixturenames", ()))
        if used and "tests/unit/" in item.nodeid.replace("\\", "/"):
            raise pytest.UsageError(f"{item.nodeid}: unit tests use no engines ({sorted(used)})")
