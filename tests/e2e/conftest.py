"""Fixtures of the end-to-end tests: the seven services as separate processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import real_engine_settings, start_stack, stop_stack

from healthbank.dev.devstack import LocalStack


@pytest.fixture(
    scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.engines)]
)
def any_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """The stack on embedded defaults, then on the real engines (in keyspaces that
    ``module_keyspace_prefix`` drops once the module is done)."""
    env: dict[str, str] = {}
    if request.param == "real":
        engines = request.getfixturevalue("engines")
        env = real_engine_settings(engines, request.getfixturevalue("module_keyspace_prefix"))
    stack = start_stack(tmp_path_factory.mktemp(f"stack-{request.param}"), env)
    yield stack
    stop_stack(stack)
