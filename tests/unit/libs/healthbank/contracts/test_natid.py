"""Unit tests for the GB 11643 national ID helpers."""

from __future__ import annotations

from datetime import date

import pytest

from healthbank.contracts.natid import (
    InvalidNationalId,
    make_national_id,
    national_id_check_char,
    normalize_national_id,
    parse_national_id,
    validate_national_id,
)

# The widely published specimen number (Beijing Chaoyang, 1949-12-31, female).
SPECIMEN = "11010519491231002X"
TODAY = date(2026, 1, 1)


def test_specimen_is_valid() -> None:
    assert validate_national_id(SPECIMEN, today=TODAY) == SPECIMEN


def test_normalize_strips_spaces_and_upper_cases_x() -> None:
    assert normalize_national_id(" 110105 19491231 002x\n") == SPECIMEN
    assert validate_national_id("110105 19491231 002x", today=TODAY) == SPECIMEN


def test_normalize_folds_full_width_characters() -> None:
    # Chinese input methods often produce full-width digits and letters.
    full_width = "".join(chr(ord(char) + 0xFEE0) for char in SPECIMEN.lower())
    assert normalize_national_id(full_width) == SPECIMEN
    assert normalize_national_id("110105\u300019491231002X") == SPECIMEN  # ideographic space


def test_check_char_follows_iso_7064_mod_11_2() -> None:
    # Sum of weights * digits for 11010519491231002 is 167; 167 % 11 = 2 -> "X".
    assert national_id_check_char(SPECIMEN[:17]) == "X"
    assert national_id_check_char("44052418800101001") == "4"
    with pytest.raises(ValueError):
        national_id_check_char("1234")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("11010519491231002", "must be 18 characters, got 17"),
        ("11010519491231002XX", "must be 18 characters, got 19"),
        ("1101051949123100AX", "must be 17 digits followed by a digit or X"),
        ("11010519491231002Y", "must be 17 digits followed by a digit or X"),
        # Arabic-Indic digits are digits to str.isdigit, but not ID digits.
        ("\u0661" * 17 + "X", "must be 17 digits followed by a digit or X"),
        ("99010519491231002X", "region code is not a known province"),
        ("110105194902300021", "birth date part is not a valid date"),
        ("110105203001010021", "birth date part is out of range"),
        ("110105184901010021", "birth date part is out of range"),
        ("110105194912310021", "check digit mismatch"),
    ],
)
def test_invalid_ids_say_why_without_the_number(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNationalId) as raised:
        validate_national_id(raw, today=TODAY)
    assert raised.value.reason == reason
    message = str(raised.value)
    assert normalize_national_id(raw) not in message
    assert raw[:6] not in message and raw[6:14] not in message


def test_every_single_digit_error_is_caught() -> None:
    for position in range(17):
        digit = int(SPECIMEN[position])
        mutated = SPECIMEN[:position] + str((digit + 1) % 10) + SPECIMEN[position + 1 :]
        with pytest.raises(InvalidNationalId):
            validate_national_id(mutated, today=TODAY)


def test_make_national_id_round_trips() -> None:
    made = make_national_id("110105", date(1949, 12, 31), 2)
    assert made == SPECIMEN
    male = make_national_id("440524", date(1988, 2, 29), 17)
    parts = parse_national_id(male, today=TODAY)
    assert (parts.region, parts.birth_date, parts.sequence, parts.sex) == (
        "440524",
        date(1988, 2, 29),
        17,
        "male",
    )
    assert parse_national_id(SPECIMEN, today=TODAY).sex == "female"


@pytest.mark.parametrize(
    ("region", "birth", "seq"),
    [
        ("11010", date(1990, 1, 1), 1),
        ("99xxxx", date(1990, 1, 1), 1),
        ("990105", date(1990, 1, 1), 1),
        ("110105", date(1990, 1, 1), 1000),
        ("110105", date(1990, 1, 1), -1),
        ("110105", date(1700, 1, 1), 1),
    ],
)
def test_make_national_id_rejects_bad_parts(region: str, birth: date, seq: int) -> None:
    with pytest.raises(ValueError):
        make_national_id(region, birth, seq)


def test_many_synthetic_ids_validate() -> None:
    for seq in range(0, 1000, 37):
        made = make_national_id("310104", date(1970 + seq % 50, 1 + seq % 12, 1 + seq % 28), seq)
        assert validate_national_id(made, today=TODAY) == made
