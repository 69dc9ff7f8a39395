"""skaffold.yaml: one artifact (the Containerfile), the chart, dev and prod profiles.

skaffold itself cannot be had here: the Go module proxy answers 403 "This module version is
not available" for github.com/GoogleContainerTools/skaffold (and /v2), so `skaffold render
--offline` is not run (ADR 27); the structure is checked directly, against the files it
names, and the chart it deploys is rendered and validated by test_chart.py.
"""

from __future__ import annotations

import yaml
from deploy_tools import CHART
from repo_paths import REPO

SKAFFOLD = REPO / "skaffold.yaml"


def test_skaffold_builds_the_containerfile_and_deploys_the_chart() -> None:
    config = yaml.safe_load(SKAFFOLD.read_text())
    (artifact,) = config["build"]["artifacts"]
    assert (REPO / artifact["docker"]["dockerfile"]).is_file()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    profiles = {profile["name"]: profile for profile in config["profiles"]}
    assert set(profiles) == {"dev", "prod"}
    for name, profile in profiles.items():
        (patch,) = profile["patches"]
        assert patch["value"] == [f"charts/healthbank/values-{name}.yaml"]
        assert (REPO / patch["value"][0]).is_file()
