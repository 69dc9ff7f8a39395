"""Fixtures of the end-to-end tests: the seven services as separate processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from e2e_support import real_engine_settings, start_stack, stop_stack

from healthbank.dev.devstack import LocalStack


@pytest.fixture(scope="module", params=["embedded", "real"])
def any_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """The stack on embedded defaults, then on the real engines."""
    env: dict[str, str] = {}
    if request.param == "real":
        prefix = f"e2e_{uuid.uuid4().hex[:8]}"
        env = real_engine_settings(request.getfixturevalue("engines"), prefix)
    stack = start_stack(tmp_path_factory.mktemp(f"stack-{request.param}"), env)
    yield stack
    stop_stack(stack)
