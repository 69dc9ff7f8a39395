"""The 18-character Chinese resident identity number (GB 11643-1999).

Layout: 6-digit administrative region code, 8-digit birth date (YYYYMMDD), 3-digit sequence
(odd for men, even for women), and an ISO 7064 MOD 11-2 check character (0-9 or X).

Errors raised here describe what is wrong with a number but never contain the number, so they
can be logged and returned to callers without leaking it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

NATIONAL_ID_LENGTH = 18

# ISO 7064 MOD 11-2 weights (2**(17-i) mod 11) and the check character for each remainder.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"

# Province-level codes of GB/T 2260, plus 83 used on Taiwan residents' residence permits.
_PROVINCE_CODES = frozenset(
    {
        "11", "12", "13", "14", "15",
        "21", "22", "23",
        "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46",
        "50", "51", "52", "53", "54",
        "61", "62", "63", "64", "65",
        "71", "81", "82", "83",
    }
)  # fmt: skip

# Nobody alive or on record in a health system was born before this.
_EARLIEST_BIRTH = date(1850, 1, 1)


class InvalidNationalId(ValueError):
    """A national ID failed validation; ``reason`` says why and never contains the number."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid national ID: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NationalIdParts:
    """The fields encoded in a valid national ID."""

    region: str
    birth_date: date
    sequence: int
    sex: Literal["male", "female"]


def normalize_national_id(raw: str) -> str:
    """Fold full-width characters, remove all whitespace, upper-case ``x``; does not validate."""
    # NFKC maps full-width digits and letters (common from Chinese input methods) to ASCII.
    return "".join(unicodedata.normalize("NFKC", raw).split()).upper()


def national_id_check_char(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character for the first 17 digits of an ID."""
    if len(first17) != NATIONAL_ID_LENGTH - 1 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the check character needs exactly 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def validate_national_id(raw: str, *, today: date | None = None) -> str:
    """Return the normalized ID, or raise :class:`InvalidNationalId` saying what is wrong.

    ``today`` (default: the current UTC date) bounds the birth date; pass it to make tests
    independent of the clock.
    """
    national_id = normalize_national_id(raw)
    if len(national_id) != NATIONAL_ID_LENGTH:
        raise InvalidNationalId(f"must be {NATIONAL_ID_LENGTH} characters, got {len(national_id)}")
    body, check = national_id[:-1], national_id[-1]
    if not (body.isascii() and body.isdigit()) or check not in "0123456789X":
        raise InvalidNationalId("must be 17 digits followed by a digit or X")
    if national_id[:2] not in _PROVINCE_CODES:
        raise InvalidNationalId("region code is not a known province")
    birth = _birth_date(national_id)
    if birth is None:
        raise InvalidNationalId("birth date part is not a valid date")
    if not _EARLIEST_BIRTH <= birth <= (today or datetime.now(UTC).date()):
        raise InvalidNationalId("birth date part is out of range")
    if national_id_check_char(body) != check:
        raise InvalidNationalId("check digit mismatch")
    return national_id


def parse_national_id(raw: str, *, today: date | None = None) -> NationalIdParts:
    """Validate an ID and return the region, birth date, sequence and sex it encodes."""
    national_id = validate_national_id(raw, today=today)
    birth = _birth_date(national_id)
    assert birth is not None  # validate_national_id checked it
    sequence = int(national_id[14:17])
    return NationalIdParts(
        region=national_id[:6],
        birth_date=birth,
        sequence=sequence,
        sex="male" if sequence % 2 else "female",
    )


def make_national_id(region: str, birth: date, seq: int) -> str:
    """Build a valid synthetic ID for demos and tests (odd ``seq`` = male, even = female).

    ``region`` is a 6-digit region code and ``seq`` the 3-digit sequence (0-999).
    """
    if len(region) != 6 or not (region.isascii() and region.isdigit()):
        raise ValueError("region must be 6 digits")
    if region[:2] not in _PROVINCE_CODES:
        raise ValueError("region must start with a known province code")
    if not 0 <= seq <= 999:
        raise ValueError("seq must be between 0 and 999")
    if birth < _EARLIEST_BIRTH:
        raise ValueError("birth date is out of range")
    body = f"{region}{birth:%Y%m%d}{seq:03d}"
    return body + national_id_check_char(body)


def _birth_date(national_id: str) -> date | None:
    """Decode the YYYYMMDD part (ASCII digits, checked before), or None when it is not a
    calendar date. (Not strptime: six times as slow, on every call that carries an ID.)"""
    try:
        return date(int(national_id[6:10]), int(national_id[10:12]), int(national_id[12:14]))
    except ValueError:
        return None
