"""Fixtures of the chart tests: the installed tools and the rendered value sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deploy_tools import VALUE_SETS, documents, render, tool


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm, as tools/deploy/install_tools.sh builds it (the test command runs it first)."""
    path = tool("helm")
    if path is None:
        pytest.fail("helm is not installed: run tools/deploy/install_tools.sh")
    return path


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, str]:
    """The chart rendered with each value set (default, dev, prod), by value-set name."""
    return {name: render(helm, files) for name, files in VALUE_SETS.items()}


@pytest.fixture(scope="session", params=sorted(VALUE_SETS))
def objects(request: pytest.FixtureRequest, rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The rendered objects of one value set (each test runs once per set)."""
    return documents(rendered[request.param])
