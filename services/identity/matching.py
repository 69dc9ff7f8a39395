"""Probabilistic matching of patient demographics (Fellegi-Sunter), pure: no I/O, no keys.

A registration's demographics are normalized into :class:`MatchFeatures` (names as toneless
pinyin or plain Latin letters, whatever script they came in), compared field by field into a
*comparison vector* of agreement levels (:data:`COMPARISONS`), and the vector is scored with
m / u probabilities that :func:`estimate_weights` learns from the data by expectation
maximisation (ADR 25). :func:`decide` turns a score into one of three outcomes — link, review,
new person — under thresholds the caller owns, and never links possible twins (same birth
date and family name, given names more than one edit apart), possible siblings (different
birth years, names more than a typo apart, one phone or address), or a pair whose national
IDs disagree, or whose sexes disagree under different names: those go to review at most
(ADR 46, ADR 48).

Candidates are found by :func:`blocking_keys`: only records sharing one key are compared. The
identity service stores the keys as keyed hashes; this module only derives them.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from pypinyin import Style, lazy_pinyin
from rapidfuzz.distance import JaroWinkler, Levenshtein

_CJK = re.compile(r"[\u3400-\u9fff]")
_NOT_LETTER = re.compile(r"[^a-z]")
_NOT_DIGIT = re.compile(r"\D")
# Full-width forms (digits, letters) typed on Chinese keyboards fold to ASCII under NFKC.
_ADDRESS_NOISE = re.compile(r"[\s,，.。#\-—]")

NULL_LEVEL = -1
"""A comparison with a field missing on either side: no evidence either way."""
_ONE_EDIT_LEVEL = 2  # the name comparison's "one_edit": the names are a typo apart at most

NAME_FUZZY_SIMILARITY = 0.9
"""Jaro-Winkler similarity above which two full names are a fuzzy match."""
ADDRESS_FUZZY_SIMILARITY = 0.9


@dataclass(frozen=True)
class MatchFeatures:
    """Comparison-ready demographics: every field normalized, "" when unknown."""

    family: str = ""
    given: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""
    phone: str = ""
    address: str = ""
    national_id: str = ""  # any stable form of the ID (the service passes its keyed hash)
    # The given name as typed when it was typed in Chinese characters (else ""): two
    # characters that romanize apart are two names, however close their pinyin.
    given_characters: str = ""


def romanize(name: str) -> str:
    """A name as lowercase Latin letters: Chinese characters as toneless pinyin, tone marks
    and ü folded, spaces, hyphens and apostrophes dropped ("Xiǎo-Míng" and "小明" agree)."""
    if _CJK.search(name):
        name = "".join(lazy_pinyin(name, style=Style.NORMAL, v_to_u=True))
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    letters = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _NOT_LETTER.sub("", letters)


def normalize_address(address: str) -> str:
    """An address with width, case, spaces and punctuation folded."""
    return _ADDRESS_NOISE.sub("", unicodedata.normalize("NFKC", address).casefold())


def features(
    family_name: str = "",
    given_name: str = "",
    birth_date: str = "",
    sex: str = "",
    phone: str = "",
    address: str = "",
    national_id: str = "",
) -> MatchFeatures:
    """Normalize demographics as a hospital sent them (birth date as YYYY-MM-DD)."""
    digits = _NOT_DIGIT.sub("", phone)
    return MatchFeatures(
        family=romanize(family_name),
        given=romanize(given_name),
        birth_date=birth_date.replace("-", "") if birth_date else "",
        sex=sex if sex in ("male", "female") else "",
        # The subscriber number: a country code or trunk prefix does not make another phone.
        phone=digits[-11:] if len(digits) >= 7 else "",
        address=normalize_address(address),
        national_id=national_id,
        given_characters="".join(_CJK.findall(given_name)),
    )


# --- comparisons ---------------------------------------------------------------------------


def _name_level(left: MatchFeatures, right: MatchFeatures) -> int:
    if not (left.family or left.given) or not (right.family or right.given):
        return NULL_LEVEL
    if left.family == right.family and left.given == right.given:
        return 0
    if left.family == right.given and left.given == right.family:
        return 1  # given and family names swapped (Western order typed into Chinese fields)
    straight = left.family + left.given
    swapped = left.given + left.family
    other = right.family + right.given
    if min(Levenshtein.distance(straight, other), Levenshtein.distance(swapped, other)) <= 1:
        return _ONE_EDIT_LEVEL
    if (
        max(JaroWinkler.similarity(straight, other), JaroWinkler.similarity(swapped, other))
        >= NAME_FUZZY_SIMILARITY
    ):
        return 3
    if left.family and left.family == right.family:
        return 4
    return 5


def _birth_date_level(left: MatchFeatures, right: MatchFeatures) -> int:
    a, b = left.birth_date, right.birth_date
    if not a or not b:
        return NULL_LEVEL
    if a == b:
        return 0
    if a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return 1  # day and month swapped
    if Levenshtein.distance(a, b) <= 1 or _one_transposition(a, b):
        return 2
    if a[:4] == b[:4]:
        return 3
    return 4


def _one_transposition(a: str, b: str) -> bool:
    differ = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else []
    return (
        len(differ) == 2
        and differ[1] == differ[0] + 1
        and a[differ[0]] == b[differ[1]]
        and a[differ[1]] == b[differ[0]]
    )


def _exact(name: str) -> Callable[[MatchFeatures, MatchFeatures], int]:
    def level(left: MatchFeatures, right: MatchFeatures) -> int:
        a, b = getattr(left, name), getattr(right, name)
        if not a or not b:
            return NULL_LEVEL
        return 0 if a == b else 1

    return level


def _contact_level(left: MatchFeatures, right: MatchFeatures) -> int:
    """Phone and address as one comparison: a household shares both, so counting them as
    independent evidence would link every member of a family."""
    phone = _exact("phone")(left, right)
    if not left.address or not right.address:
        address = NULL_LEVEL
    elif left.address == right.address:
        address = 0
    elif JaroWinkler.similarity(left.address, right.address) >= ADDRESS_FUZZY_SIMILARITY:
        address = 1
    else:
        address = 2
    if phone == NULL_LEVEL and address == NULL_LEVEL:
        return NULL_LEVEL
    if phone == 0:
        return 0 if address in (0, 1) else 1
    if address == 0:
        return 2
    if address == 1:
        return 3
    return 4


@dataclass(frozen=True)
class Comparison:
    """One field's comparison: its levels, best first, and how a pair gets one."""

    field: str
    levels: tuple[str, ...]
    level: Callable[[MatchFeatures, MatchFeatures], int]


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "name",
        ("exact", "swapped", "one_edit", "fuzzy", "family_only", "different"),
        _name_level,
    ),
    Comparison(
        "birth_date",
        ("exact", "day_month_swapped", "one_edit", "same_year", "different"),
        _birth_date_level,
    ),
    Comparison("sex", ("exact", "different"), _exact("sex")),
    Comparison(
        "contact",
        ("phone_and_address", "phone", "address", "address_fuzzy", "different"),
        _contact_level,
    ),
    Comparison("national_id", ("exact", "different"), _exact("national_id")),
)
"""The comparison levels (tools/bench/identity.py gives Splink the same ones in SQL)."""
# The name's place in COMPARISONS, and so in a comparison vector.
_NAME_COMPARISON = next(i for i, c in enumerate(COMPARISONS) if c.field == "name")

ComparisonVector = tuple[int, ...]


def compare(left: MatchFeatures, right: MatchFeatures) -> ComparisonVector:
    """The agreement level of each comparison (:data:`NULL_LEVEL` when a side is missing)."""
    return tuple(comparison.level(left, right) for comparison in COMPARISONS)


# --- blocking ------------------------------------------------------------------------------


class BlockingRule(StrEnum):
    """Which records are compared: those sharing the key of one rule."""

    NAME_INITIALS_BIRTH_YEAR = "name_initials_birth_year"
    FULL_NAME = "full_name"
    PHONE = "phone"
    BIRTH_DATE = "birth_date"
    NATIONAL_ID = "national_id"


def blocking_keys(person: MatchFeatures) -> list[tuple[BlockingRule, str]]:
    """The record's blocking keys, one per rule it has the fields for.

    Names enter in sorted order, so swapped given and family names share every key.
    """
    keys: list[tuple[BlockingRule, str]] = []
    names = sorted(part for part in (person.family, person.given) if part)
    if names and person.birth_date:
        initials = "".join(part[0] for part in names)
        keys.append((BlockingRule.NAME_INITIALS_BIRTH_YEAR, f"{initials}:{person.birth_date[:4]}"))
    if names:
        keys.append((BlockingRule.FULL_NAME, " ".join(names)))
    if person.phone:
        keys.append((BlockingRule.PHONE, person.phone))
    if person.birth_date:
        keys.append((BlockingRule.BIRTH_DATE, person.birth_date))
    if person.national_id:
        keys.append((BlockingRule.NATIONAL_ID, person.national_id))
    return keys


def candidate_pairs(records: Sequence[MatchFeatures]) -> set[tuple[int, int]]:
    """Index pairs (i < j) of the records that share at least one blocking key."""
    blocks: dict[tuple[BlockingRule, str], list[int]] = {}
    for position, record in enumerate(records):
        for key in blocking_keys(record):
            blocks.setdefault(key, []).append(position)
    pairs: set[tuple[int, int]] = set()
    for members in blocks.values():
        for i, left in enumerate(members):
            for right in members[i + 1 :]:
                pairs.add((left, right))
    return pairs


# --- weights -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchWeights:
    """Fellegi-Sunter parameters: P(level | match), P(level | non-match), the prior."""

    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    prior: float  # P(match) for a candidate pair

    def log2_bayes_factor(self, vector: ComparisonVector) -> float:
        """The match weight of a comparison vector (a missing field adds nothing)."""
        weight = math.log2(self.prior / (1 - self.prior))
        for index, level in enumerate(vector):
            if level != NULL_LEVEL:
                weight += math.log2(self.m[index][level] / self.u[index][level])
        return weight

    def probability(self, vector: ComparisonVector) -> float:
        """P(match | comparison vector)."""
        return 1 / (1 + 2 ** -self.log2_bayes_factor(vector))


_FLOOR = 1e-6

TRAINING_RULES: tuple[tuple[BlockingRule, tuple[str, ...]], ...] = (
    (BlockingRule.BIRTH_DATE, ("birth_date",)),
    (BlockingRule.FULL_NAME, ("name",)),
)
"""EM sessions: the pairs sharing a key of each rule, the comparisons that rule decides
left out of that session (they agree by construction)."""


def estimate_weights(
    records: Sequence[MatchFeatures],
    random_pair_count: int = 200_000,
    seed: int = 0,
    iterations: int = 25,
) -> MatchWeights:
    """Fellegi-Sunter parameters learnt from unlabelled records, as Splink learns them.

    u, P(level | non-match), is counted on pairs drawn at random (nearly all non-matches);
    m, P(level | match), by expectation maximisation within the pairs of each training rule
    (:data:`TRAINING_RULES`), the rule's own comparisons left out of its session, each
    comparison's m averaged over the sessions that estimated it; the prior is the expected
    number of matches in the first session divided by that rule's recall (its field's m of
    agreeing) over all pairs (ADR 25).
    """
    sizes = [len(comparison.levels) for comparison in COMPARISONS]
    fields = [comparison.field for comparison in COMPARISONS]
    sampled = [
        compare(records[a], records[b])
        for a, b in random_pairs(random_pair_count, len(records), seed)
    ]
    u = [
        _distribution(column, size)
        for column, size in zip(_columns(Counter(sampled), len(sizes)), sizes, strict=True)
    ]
    estimates: list[list[list[float]]] = [[] for _ in sizes]
    session_matches: list[float] = []
    for rule, left_out in TRAINING_RULES:
        active = [index for index, name in enumerate(fields) if name not in left_out]
        patterns = Counter(compare(records[a], records[b]) for a, b in _block_pairs(records, rule))
        m, matches = _expectation_maximisation(patterns, u, active, sizes, iterations)
        session_matches.append(matches)
        for index in active:
            estimates[index].append(m[index])
    m_final = [
        [sum(row[level] for row in rows) / len(rows) for level in range(size)]
        if rows
        else [1.0 / size] * size
        for rows, size in zip(estimates, sizes, strict=True)
    ]
    first_rule_field = fields.index(TRAINING_RULES[0][1][0])
    total_matches = session_matches[0] / m_final[first_rule_field][0]
    all_pairs = len(records) * (len(records) - 1) / 2
    prior = min(max(total_matches / max(all_pairs, 1), _FLOOR * _FLOOR), 0.5)
    return MatchWeights(_frozen(m_final), _frozen(u), prior)


def _block_pairs(records: Sequence[MatchFeatures], rule: BlockingRule) -> set[tuple[int, int]]:
    blocks: dict[str, list[int]] = {}
    for position, record in enumerate(records):
        for key_rule, key in blocking_keys(record):
            if key_rule == rule:
                blocks.setdefault(key, []).append(position)
    return {
        (members[i], members[j])
        for members in blocks.values()
        for i in range(len(members))
        for j in range(i + 1, len(members))
    }


def _expectation_maximisation(
    patterns: Counter[ComparisonVector],
    u: list[list[float]],
    active: list[int],
    sizes: list[int],
    iterations: int,
) -> tuple[list[list[float]], float]:
    """m for the active comparisons and the expected matches among ``patterns`` (u fixed)."""
    m = [[0.9 if level == 0 else 0.1 / (size - 1) for level in range(size)] for size in sizes]
    prior = 0.5
    matches = 0.0
    for _ in range(iterations):
        m_counts = [[_FLOOR] * size for size in sizes]
        matches = 0.0
        total = 0
        for vector, count in patterns.items():
            odds = prior / (1 - prior)
            for index in active:
                level = vector[index]
                if level != NULL_LEVEL:
                    odds *= m[index][level] / u[index][level]
            posterior = odds / (1 + odds)
            matches += posterior * count
            total += count
            for index in active:
                if vector[index] != NULL_LEVEL:
                    m_counts[index][vector[index]] += posterior * count
        m = [_normalized(row) for row in m_counts]
        prior = min(max(matches / max(total, 1), _FLOOR), 1 - _FLOOR)
    return m, matches


def _columns(patterns: Counter[ComparisonVector], width: int) -> list[Counter[int]]:
    columns: list[Counter[int]] = [Counter() for _ in range(width)]
    for vector, count in patterns.items():
        for index, level in enumerate(vector):
            if level != NULL_LEVEL:
                columns[index][level] += count
    return columns


def _distribution(counts: Counter[int], size: int) -> list[float]:
    return _normalized([counts[level] + 1.0 for level in range(size)])


def _normalized(row: list[float]) -> list[float]:
    total = sum(row)
    return [max(value / total, _FLOOR) for value in row]


def _frozen(rows: list[list[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(row) for row in rows)


def random_pairs(count: int, population: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct-index pairs drawn at random from ``population`` records."""
    rng = random.Random(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < count and population > 1:
        left, right = rng.randrange(population), rng.randrange(population)
        if left != right:
            pairs.append((left, right))
    return pairs


# --- decisions -----------------------------------------------------------------------------


class MatchOutcome(StrEnum):
    """What becomes of a registration after matching."""

    LINK = "link"
    REVIEW = "review"
    NEW_PERSON = "new_person"


@dataclass(frozen=True)
class MatchThresholds:
    """Posterior match probabilities at or above which a pair is linked or reviewed."""

    link: float = 0.97
    review: float = 0.5


@dataclass(frozen=True)
class ScoredPair:
    """A candidate's score and the level of each comparison, for the review queue."""

    probability: float
    weight: float
    levels: dict[str, str] = field(default_factory=dict)
    twins: bool = False
    siblings: bool = False
    conflicting: bool = False


def score(weights: MatchWeights, left: MatchFeatures, right: MatchFeatures) -> ScoredPair:
    """Compare two records and score them."""
    vector = compare(left, right)
    levels = {
        comparison.field: "missing" if level == NULL_LEVEL else comparison.levels[level]
        for comparison, level in zip(COMPARISONS, vector, strict=True)
    }
    return ScoredPair(
        probability=weights.probability(vector),
        weight=weights.log2_bayes_factor(vector),
        levels=levels,
        twins=could_be_twins(left, right),
        siblings=could_be_siblings(left, right, name_level=vector[_NAME_COMPARISON]),
        conflicting=records_conflict(left, right),
    )


def could_be_twins(left: MatchFeatures, right: MatchFeatures) -> bool:
    """Same birth date and family name, given names more than one edit apart, or typed in
    characters on both sides that romanize apart.

    A typo is one edit (a homophone character is none: both romanize alike); a twin's given
    name differs by a syllable, which can be one letter in pinyin (平 ping, 静 jing): typed in
    characters, that is a different character, not a typo. Such a pair is never linked
    automatically.
    """
    if not left.birth_date or left.birth_date != right.birth_date:
        return False
    if left.national_id and left.national_id == right.national_id:
        return False
    same_order = left.family == right.family and left.given and right.given
    swapped = left.family == right.given and left.given == right.family
    apart = Levenshtein.distance(left.given, right.given) > 1 or _characters_apart(left, right)
    return bool(left.family and same_order and not swapped and apart)


def _characters_apart(left: MatchFeatures, right: MatchFeatures) -> bool:
    """Given names typed in characters on both sides that romanize apart: two names, however
    close their pinyin (平 ping, 静 jing), where a homophone character romanizes alike."""
    return bool(left.given_characters and right.given_characters and left.given != right.given)


def could_be_siblings(
    left: MatchFeatures, right: MatchFeatures, name_level: int | None = None
) -> bool:
    """Born in different years, named apart (:func:`names_apart`), and sharing a phone or an
    address, without one national ID on both: what two children of one household look like.

    Such a pair can score as a link (one family name, a given character in common, a
    family phone and home, and a birth date a digit apart), and is reviewed instead. One
    person with a mistyped birth year is still linked when the names are within a typo of
    each other (ADR 48). ``name_level``: the pair's name comparison, if already made.
    """
    if not (left.birth_date and right.birth_date) or left.birth_date[:4] == right.birth_date[:4]:
        return False
    if left.national_id and left.national_id == right.national_id:
        return False
    if not names_apart(left, right, name_level):
        return False
    same_phone = bool(left.phone) and left.phone == right.phone
    same_address = bool(left.address) and left.address == right.address
    return same_phone or same_address


def names_apart(left: MatchFeatures, right: MatchFeatures, name_level: int | None = None) -> bool:
    """More than a typo between the names: over one edit apart in either order, or given
    names typed in characters on both sides that romanize apart, or a name missing."""
    level = _name_level(left, right) if name_level is None else name_level
    return level == NULL_LEVEL or level > _ONE_EDIT_LEVEL or _characters_apart(left, right)


def records_conflict(left: MatchFeatures, right: MatchFeatures) -> bool:
    """Both records give a national ID and the IDs differ; or, without two IDs, both give a
    sex, the sexes differ and the names differ too.

    Neither is a typo the weights should outvote: two IDs that pass their checksum are two
    people, and opposite sexes with a shared birth date and home are what twins look like
    (EM learns a mild weight for a sex disagreement because households fill its training
    blocks). Twins' given names differ, though: the same name written on both records
    (either order, a homophone character alike) makes the sex the typo, and the weights
    decide. IDs that agree make the sex the typo whatever the names.
    """
    if left.national_id and right.national_id:
        return left.national_id != right.national_id
    if not (left.sex and right.sex) or left.sex == right.sex:
        return False
    return not same_name(left, right)


def same_name(left: MatchFeatures, right: MatchFeatures) -> bool:
    """Both give a family and a given name, and they agree, in the same or swapped order."""
    if not (left.family and left.given and right.family and right.given):
        return False
    return (left.family, left.given) in ((right.family, right.given), (right.given, right.family))


def decide(pair: ScoredPair, thresholds: MatchThresholds) -> MatchOutcome:
    """Link, review or new person for one scored candidate; possible twins or siblings and
    conflicting records are reviewed at most."""
    held_apart = pair.twins or pair.siblings or pair.conflicting
    if pair.probability >= thresholds.link and not held_apart:
        return MatchOutcome.LINK
    if pair.probability >= thresholds.review:
        return MatchOutcome.REVIEW
    return MatchOutcome.NEW_PERSON


def is_newborn(birth_date: str, today: date, newborn_days: int) -> bool:
    """True when a YYYYMMDD birth date is at most ``newborn_days`` before ``today``."""
    if not birth_date:
        return False
    try:
        born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
    except ValueError:
        return False
    return 0 <= (today - born).days <= newborn_days
