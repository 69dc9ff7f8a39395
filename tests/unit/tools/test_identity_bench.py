"""tools/bench/identity.py: the persons the service gave are scored pair by pair."""

from __future__ import annotations

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script

IDENTITY = load_script(REPO / "tools" / "bench" / "identity.py", "healthbank_tools_bench_identity")


def test_the_services_persons_are_scored_by_the_pairs_they_put_together() -> None:
    # One person for 0, 1 and 2 (pairs 0-1, 0-2, 1-2), two for 3 and 4; truly 0-1 and 3-4.
    persons = {0: "a", 1: "a", 2: "a", 3: "b", 4: "c"}
    figures = IDENTITY.service_quality(persons, {(0, 1), (3, 4)})
    assert figures == {"service_precision": pytest.approx(1 / 3), "service_recall": 0.5}
