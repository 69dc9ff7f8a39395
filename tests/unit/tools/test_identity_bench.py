"""tools/bench/identity.py: the persons the service gave are scored pair by pair."""

from __future__ import annotations

from datetime import timedelta

import pytest
from repo_paths import REPO

from healthbank.dev.scripts import load_script
from services.identity.match_weights import DEFAULT_WEIGHTS
from services.identity.matching import MatchFeatures, features

IDENTITY = load_script(REPO / "tools" / "bench" / "identity.py", "healthbank_tools_bench_identity")


def test_the_services_persons_are_scored_by_the_pairs_they_put_together() -> None:
    # One person for 0, 1 and 2 (pairs 0-1, 0-2, 1-2), two for 3 and 4; truly 0-1 and 3-4.
    persons = {0: "a", 1: "a", 2: "a", 3: "b", 4: "c"}
    figures = IDENTITY.service_quality(persons, {(0, 1), (3, 4)})
    assert figures == {"service_precision": pytest.approx(1 / 3), "service_recall": 0.5}


def test_the_matchers_pairs_leave_a_newborns_arriving_registration_undecided() -> None:
    # Two registrations of one baby boy, no given name yet, the family's phone and home.
    def baby(born: str) -> MatchFeatures:
        return features("王", "", born, "male", "13812345678", "北京市朝阳区建国路88号3单元502")

    newborn = IDENTITY.TODAY - timedelta(days=3)
    young = [baby(newborn.isoformat()), baby(newborn.isoformat())]
    older = [baby("2015-06-08"), baby("2015-06-08")]
    assert IDENTITY.decided_pairs(young, DEFAULT_WEIGHTS) == (set(), set())
    assert IDENTITY.decided_pairs(older, DEFAULT_WEIGHTS) == ({(0, 1)}, set())
