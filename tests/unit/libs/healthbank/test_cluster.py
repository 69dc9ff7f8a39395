"""`healthbank cluster status` on Kubernetes API responses read by the kubernetes client's own
deserializer (tests/fixtures/kubernetes), so the rules meet the models a cluster returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient  # type: ignore[import-untyped]
from repo_paths import REPO

from healthbank.cli import main
from healthbank.cluster import label_selector, service_statuses

FIXTURES = REPO / "tests" / "fixtures" / "kubernetes"


class _Response:
    """What the client's deserialize reads of an HTTP response: its body as ``data``."""

    def __init__(self, body: str) -> None:
        self.data = body


def _models(fixture: str, model: str) -> Any:
    """The fixture's HTTP body as the client turns a response into models."""
    body = (FIXTURES / fixture).read_text()
    return ApiClient().deserialize(_Response(body), model)


def test_each_service_gets_its_rollout_and_health() -> None:
    deployments = _models("deployments.json", "V1DeploymentList")
    pods = _models("pods.json", "V1PodList")
    rows = {status.service: status for status in service_statuses(deployments.items, pods.items)}
    assert list(rows) == ["archive", "audit", "consent", "identity", "ingest"]
    assert (rows["audit"].rollout, rows["audit"].health) == ("complete", "SERVING")
    assert rows["audit"].row() == ("audit", "2/2", "2", "complete", "SERVING")
    # consent: one of two replicas updated, an old pod still there.
    assert rows["consent"].rollout == "rolling out (1/2 updated)"
    assert rows["consent"].health == "SERVING"
    assert rows["consent"].pods_not_ready == ("hb-healthbank-consent-5f6a7b8c9-kq2xs",)
    # identity: past its progress deadline, nothing ready.
    assert rows["identity"].rollout == "stalled (progress deadline exceeded)"
    assert rows["identity"].health == "DOWN"
    # ingest: a new generation the controller has not observed yet, one pod unready.
    assert rows["ingest"].rollout == "waiting for the controller"
    assert rows["ingest"].health == "DEGRADED"


def test_the_selector_is_the_charts_labels() -> None:
    assert label_selector(None) == "app.kubernetes.io/name=healthbank"
    assert label_selector("hb") == "app.kubernetes.io/name=healthbank,app.kubernetes.io/instance=hb"
    # The fixtures carry the labels the chart renders.
    deployment = json.loads((FIXTURES / "deployments.json").read_text())["items"][0]
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "healthbank"


def test_without_a_cluster_the_command_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No kubeconfig file and no service account: a clear line and exit code 2.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["cluster", "status", "-n", "healthbank"]) == 2
    assert capsys.readouterr().err == (
        "healthbank cluster status: no kubeconfig, and not running in a pod\n"
    )
