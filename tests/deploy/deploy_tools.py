"""The deployment tools tests/deploy runs, as tools/deploy/install_tools.sh installs them.

HEALTHBANK_TOOLS_DIR (default ~/.cache/healthbank/tools) holds bin/helm, bin/kubeconform,
bin/skaffold when it could be built, and kubernetes-json-schema/ for kubeconform offline.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from repo_paths import REPO

CHART = REPO / "charts" / "healthbank"
TOOLS_DIR = Path(
    os.environ.get("HEALTHBANK_TOOLS_DIR", Path.home() / ".cache" / "healthbank" / "tools")
)
SCHEMAS = TOOLS_DIR / "kubernetes-json-schema"
# The newest Kubernetes the schemas cover that kubeconform validates against.
KUBERNETES_VERSION = "1.37.0"
VALUE_SETS = {
    "default": (),
    "dev": (CHART / "values-dev.yaml",),
    "prod": (CHART / "values-prod.yaml",),
}


def tool(name: str) -> Path | None:
    """The installed tool, or None when install_tools.sh has not (or could not) build it."""
    path = TOOLS_DIR / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def run(command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool offline-safe (no helm repository config leaks in) and capture its output."""
    env = {**os.environ, "HELM_CACHE_HOME": str(TOOLS_DIR / "helm-cache")}
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, env=env, **kwargs
    )


def render(helm: Path, value_files: tuple[Path, ...] = (), *sets: str) -> str:
    """`helm template` of the chart with ``value_files`` and ``--set`` pairs; fails loudly."""
    command: list[str | Path] = [helm, "template", "hb", CHART, "--namespace", "healthbank"]
    for path in value_files:
        command += ["--values", path]
    for pair in sets:
        command += ["--set", pair]
    result = run(command)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(manifest: str) -> list[dict[str, Any]]:
    """The objects of a rendered manifest (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(kind/name, pod spec) of every workload: Deployments and CronJobs."""
    for obj in objects:
        if obj["kind"] == "Deployment":
            yield f"Deployment/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            yield f"CronJob/{obj['metadata']['name']}", spec
