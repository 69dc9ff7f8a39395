"""The house rules of the layout (ADR 8), checked on the code as it is.

- Domain modules (pure rules and models) load no gRPC, Vault, Cassandra or Redis client:
  they can be read, tested and reused without the machinery around them.
- No service imports another service's code; what two services share lives in libs.
- The library never imports a service, and nothing a pod runs imports healthbank.dev.
- Generated code is imported only through its package (``from healthbank.x.v1 import x_pb2``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_paths import REPO

SERVICES = REPO / "services"
LIBS = REPO / "libs" / "healthbank"

# The edge of a service: where gRPC, storage engines and other services are reached.
EDGE_MODULES = {"app", "servicer", "clients", "flow", "store", "store_cassandra"}
# ADR 8's ``store*``: a service with a second store (consent's committee, ADR 26) names its
# modules store_<concern>[_cassandra] and the edge of their RPCs servicer_<concern>.
EDGE_PREFIXES = ("store_", "servicer_")
ENGINE_CLIENTS = ("grpc", "hvac", "cassandra", "redis")
# Library packages that domain code builds on; they must stay as light as the domain.
PURE_LIBRARY_MODULES = [
    "healthbank.contracts.names",
    "healthbank.contracts.natid",
    "healthbank.contracts.terminology",
    "healthbank.contracts.principal",
    "healthbank.contracts.records",
    "healthbank.contracts.tokens",
    "healthbank.core.config",
    "healthbank.core.ids",
    "healthbank.core.phi",
    "healthbank.ledger.merkle",
    "healthbank.ledger.tree_head",
    "healthbank.ledger.verify",
    "healthbank.witness.judge",
]


def _module_name(path: Path) -> str:
    relative = path.relative_to(REPO / "libs" if path.is_relative_to(LIBS) else REPO)
    return ".".join(relative.with_suffix("").parts).removesuffix(".__init__")


def _domain_modules() -> list[str]:
    return sorted(
        _module_name(path)
        for path in SERVICES.glob("*/*.py")
        if path.stem not in EDGE_MODULES
        and not path.stem.startswith(EDGE_PREFIXES)
        and path.stem != "__init__"
    )


def _loaded_engine_clients(module: str) -> list[str]:
    """The engine-client packages importing ``module`` loads, in a fresh interpreter."""
    probe = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "roots = {name.split('.')[0] for name in sys.modules}\n"
        f"print(json.dumps(sorted(roots & set({ENGINE_CLIENTS!r}))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(completed.stdout)
    return loaded


def test_the_domain_module_list_is_not_empty() -> None:
    # Guards the glob: a layout change that hid every module would pass the test below.
    assert {"services.consent.domain", "services.ingest.fhir"} <= set(_domain_modules())


@pytest.mark.parametrize("module", _domain_modules() + PURE_LIBRARY_MODULES)
def test_domain_and_contract_modules_load_no_engine_client(module: str) -> None:
    assert _loaded_engine_clients(module) == []


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def _python_files(*roots: Path) -> list[Path]:
    return [
        path
        for root in roots
        for path in root.rglob("*.py")
        if "_pb2" not in path.name and ".venv" not in path.parts
    ]


def test_no_service_imports_another_service() -> None:
    crossings = []
    for path in _python_files(SERVICES):
        own = path.relative_to(SERVICES).parts[0]
        for line, module, _ in _imports(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != own:
                crossings.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert crossings == []


def test_the_library_imports_no_service() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _python_files(LIBS)
        for line, module, _ in _imports(path)
        if module.split(".")[0] == "services"
    ]
    assert found == []


def test_what_a_pod_runs_loads_no_development_code() -> None:
    apps = [f"services.{path.parent.name}.app" for path in SERVICES.glob("*/app.py")]
    assert len(apps) == 8  # the seven services and the MLLP gateway
    probe = (
        "import importlib, json, sys\n"
        f"for name in {['healthbank.cli', *apps]!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('healthbank.dev'))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(completed.stdout) == []


def test_generated_code_is_imported_only_through_its_package() -> None:
    roots = [REPO / name for name in ("libs", "services", "tests", "tools", "examples")]
    bypasses = []
    for path in _python_files(*(root for root in roots if root.exists())):
        for line, module, names in _imports(path):
            if not module.startswith("healthbank."):
                continue
            reaches_inside = "_pb2" in module  # import x.y_pb2 / from x.y_pb2 import Z
            misses_package = any("_pb2" in name for name in names) and not module.endswith(".v1")
            if reaches_inside or misses_package:
                bypasses.append(f"{path.relative_to(REPO)}:{line} {module} {names}")
    assert bypasses == []
