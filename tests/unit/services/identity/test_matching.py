"""The matcher: names in any script agree, twins and conflicting records are never linked,
weights come from data."""

from __future__ import annotations

import sys
from datetime import date

import pytest
from repo_paths import REPO

from services.identity import matching

sys.path.insert(0, str(REPO / "tools" / "bench"))
from identity_population import PopulationGenerator, true_pairs


def test_characters_and_pinyin_with_or_without_tones_romanize_alike() -> None:
    assert matching.romanize("小明") == matching.romanize("Xiǎo-Míng") == "xiaoming"
    assert matching.romanize("Xiao Ming") == "xiaoming"
    assert matching.romanize("吕") == matching.romanize("Lǚ") == "lu"


def test_swapped_given_and_family_names_share_blocking_keys_and_compare_as_swapped() -> None:
    straight = matching.features("张", "伟", "1980-03-04")
    swapped = matching.features("Wei", "Zhang", "1980-03-04")
    assert matching.blocking_keys(straight) == matching.blocking_keys(swapped)
    assert matching.compare(straight, swapped)[0] == 1  # the "swapped" level


def test_day_and_month_swapped_is_its_own_level() -> None:
    left = matching.features(birth_date="1980-03-04")
    right = matching.features(birth_date="1980-04-03")
    assert matching.compare(left, right)[1] == 1


def test_a_missing_field_adds_no_evidence() -> None:
    vector = matching.compare(matching.features("张", "伟"), matching.features("张", "伟"))
    assert vector[1:] == (matching.NULL_LEVEL,) * 4


@pytest.fixture(scope="module")
def weights() -> matching.MatchWeights:
    registrations = PopulationGenerator(3, date(2026, 12, 1)).population(1500)
    records = [
        matching.features(
            r.family_name, r.given_name, r.birth_date, r.sex, r.phone, r.address, r.national_id
        )
        for r in registrations
    ]
    return matching.estimate_weights(records, random_pair_count=50_000)


def test_em_learns_that_agreement_is_evidence_for_a_match(
    weights: matching.MatchWeights,
) -> None:
    for index, comparison in enumerate(matching.COMPARISONS):
        best, worst = 0, len(comparison.levels) - 1
        ratio_best = weights.m[index][best] / weights.u[index][best]
        ratio_worst = weights.m[index][worst] / weights.u[index][worst]
        assert ratio_best > 1 > ratio_worst, comparison.field


def test_one_person_registered_twice_with_typical_errors_is_linked(
    weights: matching.MatchWeights,
) -> None:
    at_first = matching.features(
        "王", "晓明", "1975-06-08", "male", "13812345678", "北京市朝阳区建国路88号3单元502"
    )
    later = matching.features(
        "Wáng", "Xiǎo Míng", "1975-08-06", "male", "+86 138 1234 5678", "北京市朝阳区建国路88号"
    )
    pair = matching.score(weights, at_first, later)
    assert matching.decide(pair, matching.MatchThresholds()) is matching.MatchOutcome.LINK
    assert pair.levels["birth_date"] == "day_month_swapped"


HOME = ("13812345678", "北京市朝阳区建国路88号3单元502")


def linked_at_any_score(pair: matching.ScoredPair) -> bool:
    """Whether ``pair`` is linked with the link threshold at 0: only a rule keeps it apart."""
    return matching.decide(pair, matching.MatchThresholds(link=0.0)) is matching.MatchOutcome.LINK


@pytest.mark.parametrize(
    ("first", "second", "held_as"),
    [
        pytest.param(
            matching.features("王", "明伟", "2015-06-08", "male", *HOME),
            matching.features("王", "明涛", "2015-06-08", "male", *HOME),
            "twins",
            id="twins with the same birth date and address",
        ),
        pytest.param(
            # 平 (ping) and 静 (jing): one letter apart in pinyin, two names in characters.
            matching.features("张", "博平", "2014-07-22", "male", *HOME),
            matching.features("张", "博静", "2014-07-22", "male", *HOME),
            "twins",
            id="twins typed in characters one pinyin letter apart",
        ),
        pytest.param(
            matching.features("吴", "春建", "2015-06-08", "male", *HOME),
            matching.features("Wu", "Chun-Juan", "2015-06-08", "female", *HOME),
            "conflicting",
            id="a boy and a girl with one birth date and home",
        ),
        pytest.param(
            matching.features("王", "晓明", "1975-06-08", "male", *HOME, national_id="a"),
            matching.features("王", "晓明", "1975-06-08", "male", *HOME, national_id="b"),
            "conflicting",
            id="two different national IDs",
        ),
        pytest.param(
            # Born a digit apart (2017, 2019) on one day, one given character in common.
            matching.features("周", "芳宇", "2019-01-14", "male", *HOME),
            matching.features("Zhou", "Fanggui", "2017-01-14", "male", *HOME),
            "siblings",
            id="a brother born two years later, sharing a character of his name",
        ),
    ],
)
def test_pairs_a_rule_holds_apart_are_never_linked(
    weights: matching.MatchWeights,
    first: matching.MatchFeatures,
    second: matching.MatchFeatures,
    held_as: str,
) -> None:
    pair = matching.score(weights, first, second)
    assert getattr(pair, held_as)
    assert not linked_at_any_score(pair)


def test_one_national_id_outranks_a_mistyped_sex(weights: matching.MatchWeights) -> None:
    first = matching.features("王", "晓明", "1975-06-08", "male", national_id="a")
    second = matching.features("王", "晓明", "1975-06-08", "female", national_id="a")
    pair = matching.score(weights, first, second)
    assert not pair.conflicting
    assert matching.decide(pair, matching.MatchThresholds()) is matching.MatchOutcome.LINK


def test_a_mistyped_sex_under_one_name_is_left_to_the_weights(
    weights: matching.MatchWeights,
) -> None:
    # Twins' names differ: with the same name on both records, the sex is the typo.
    first = matching.features("王", "晓明", "1975-06-08", "male", *HOME)
    second = matching.features("Xiǎomíng", "Wáng", "1975-06-08", "female", *HOME)
    pair = matching.score(weights, first, second)
    assert not pair.conflicting
    assert matching.decide(pair, matching.MatchThresholds()) is matching.MatchOutcome.LINK


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(("Wáng", "Xiǎo Míng"), id="the same name in pinyin"),
        pytest.param(("Wang", "Xiaoning"), id="the name with a letter typo"),
    ],
)
def test_one_person_with_a_mistyped_birth_year_is_not_taken_for_a_sibling(
    later: tuple[str, str],
) -> None:
    first = matching.features("王", "晓明", "1975-06-08", "male", *HOME)
    second = matching.features(*later, "1976-06-08", "male", *HOME)
    assert not matching.could_be_siblings(first, second)


def test_a_homophone_character_is_not_mistaken_for_a_twin() -> None:
    first = matching.features("王", "明伟", "2015-06-08")
    second = matching.features("王", "明维", "2015-06-08")
    assert not matching.could_be_twins(first, second)


def test_newborns_are_recognised_by_birth_date() -> None:
    today = date(2026, 12, 1)
    assert matching.is_newborn("20261120", today, 28)
    assert not matching.is_newborn("20250101", today, 28)
    assert not matching.is_newborn("", today, 28)


def test_generated_population_has_twins_newborns_and_duplicates() -> None:
    registrations = PopulationGenerator(5, date(2026, 12, 1)).population(800)
    assert len(true_pairs(registrations)) > 200
    assert any(r.given_name == "" and r.birth_date.startswith("2026-11") for r in registrations)
