"""Fixtures of the service tests: each service over real gRPC, on SQLite or the real Cassandra.

A test runs on SQLite unless it (or its module) parametrizes ``backend`` (indirectly, as
``service_support.both_backends`` does, or by overriding the fixture); ``settings`` then puts
the service in the test's own keyspaces, which the ``keyspace_prefix`` fixture drops
afterwards. On Cassandra it migrates them first, as a deployment does (ADR 35): only those
of the services the module names in ``CASSANDRA_SERVICES`` (all seven if it names none),
once per keyspace. The helpers the tests call (credentials, failed calls, health) are in
service_support.py beside this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import cassandra_env, migrate_for
from service_support import service_settings

from healthbank.core.config import Settings


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of the test: sqlite unless parametrized."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, keyspace_prefix: str
) -> Settings:
    """Settings for the test's backend (a fresh keyspace prefix, dropped after, on Cassandra)."""
    if backend == "sqlite":
        return service_settings(tmp_path)
    engines: dict[str, str] = request.getfixturevalue("engines")
    settings = service_settings(tmp_path, cassandra_env(engines, keyspace_prefix))
    migrate_for(settings, getattr(request.module, "CASSANDRA_SERVICES", None))
    return settings
