"""skaffold.yaml: one artifact (the Containerfile), the chart, dev and prod profiles.

`skaffold render --offline` runs when tools/deploy/install_tools.sh could build skaffold;
the Go module proxy refuses its module today (ADR 27), so the structure is also checked
here directly, against the files it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_tools import CHART, documents, run, tool
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


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_skaffold_render_offline(profile: str, tmp_path: Path) -> None:
    skaffold = tool("skaffold")
    if skaffold is None:
        pytest.skip("skaffold is not installable from the Go module proxy (ADR 27)")
    result = run(
        [
            skaffold,
            "render",
            "--offline",
            "--digest-source=tag",
            "-p",
            profile,
            "--filename",
            SKAFFOLD,
        ],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    kinds = {obj["kind"] for obj in documents(result.stdout)}
    assert {"Deployment", "Service", "NetworkPolicy"} <= kinds
