"""Master patient index rules: what identifies a person and how a hospital patient matches one.

Pure functions and value types: no gRPC, no storage, no keys. Person tokens, person names
and hospital ids follow :mod:`healthbank.contracts.names`. National ID numbers appear here
only as arguments on their way to being pseudonymised; nothing here stores, logs or returns
them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import date
from enum import StrEnum

from healthbank.contracts.names import HOSPITAL_ID_RULE, is_hospital_id

# The pseudonym domain of person tokens: token = HMAC(pseudonym key, "national-id", id).
NATIONAL_ID_DOMAIN = "national-id"

MAX_MRN_LENGTH = 64
MAX_DEMOGRAPHIC_LENGTH = 200
SEX_VALUES = frozenset({"male", "female", "other", "unknown"})

_BIRTH_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class MatchMethod(StrEnum):
    """How a hospital patient was matched to a person."""

    NATIONAL_ID = "national_id"
    HOSPITAL_MRN = "hospital_mrn"
    CREATED = "created"


class MrnLinkedToOtherPerson(Exception):
    """The hospital's record number already belongs to a different person."""


class NationalIdRequired(Exception):
    """The patient is not known yet, and a new person needs a national ID."""


class PersonNotFound(Exception):
    """Nobody with that national ID or person token is in the index."""


@dataclass(frozen=True)
class Resolution:
    """The person a hospital patient resolved to, and how."""

    person_token: str
    match_method: MatchMethod


@dataclass(frozen=True)
class HospitalLink:
    """A hospital's medical record number for a person."""

    hospital_id: str
    mrn: str


@dataclass(frozen=True)
class Demographics:
    """Demographics as a hospital sent them; only ever stored sealed."""

    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""
    sex: str = ""
    phone: str = ""

    def is_empty(self) -> bool:
        """True when no field is set."""
        return not any(asdict(self).values())

    def to_bytes(self) -> bytes:
        """The plaintext that is sealed into the person's profile (JSON, UTF-8)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, plaintext: bytes) -> Demographics:
        """Inverse of :meth:`to_bytes`."""
        return cls(**json.loads(plaintext))


def demographics_aad(person_token: str) -> bytes:
    """Associated data binding sealed demographics to their person (moving them breaks them)."""
    return f"person-demographics:{person_token}".encode()


def hospital_id_problem(hospital_id: str) -> str | None:
    """Why ``hospital_id`` is unacceptable, or None if it is fine."""
    if not hospital_id:
        return "is required"
    if not is_hospital_id(hospital_id):
        return HOSPITAL_ID_RULE
    return None


def mrn_problem(mrn: str) -> str | None:
    """Why a medical record number is unacceptable, or None if it is fine."""
    if not mrn:
        return "is required"
    if len(mrn) > MAX_MRN_LENGTH:
        return f"must be at most {MAX_MRN_LENGTH} characters"
    if not mrn.isprintable() or mrn != mrn.strip():
        return "must be printable characters without leading or trailing spaces"
    return None


def demographics_problems(demographics: Demographics) -> list[tuple[str, str]]:
    """What is wrong with demographics, as (field, rule) pairs; values are never echoed."""
    problems: list[tuple[str, str]] = []
    for field, value in asdict(demographics).items():
        if len(value) > MAX_DEMOGRAPHIC_LENGTH:
            problems.append((field, f"must be at most {MAX_DEMOGRAPHIC_LENGTH} characters"))
        elif value and not value.isprintable():
            problems.append((field, "must be printable characters"))
    if demographics.birth_date and not _is_iso_date(demographics.birth_date):
        problems.append(("birth_date", "must be a date as YYYY-MM-DD"))
    if demographics.sex and demographics.sex not in SEX_VALUES:
        problems.append(("sex", "must be one of " + ", ".join(sorted(SEX_VALUES))))
    return problems


def _is_iso_date(value: str) -> bool:
    if not _BIRTH_DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def match_existing_link(linked_token: str, national_token: str | None) -> Resolution:
    """Resolve a patient whose (hospital, MRN) is already linked to ``linked_token``.

    A national ID that pseudonymises to another person means the hospital's record number
    and the ID disagree: never silently move the link (raises MrnLinkedToOtherPerson).
    """
    if national_token is not None and national_token != linked_token:
        raise MrnLinkedToOtherPerson()
    return Resolution(linked_token, MatchMethod.HOSPITAL_MRN)
