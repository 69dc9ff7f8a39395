"""Master patient index rules: what identifies a person and how a hospital patient matches one.

Pure functions and value types: no gRPC, no storage, no keys. Person tokens, person names
and hospital ids follow :mod:`healthbank.contracts.names`. National ID numbers and hospital
record numbers appear here only as arguments on their way to being hashed under a key;
nothing here stores, logs or returns them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from healthbank.contracts.demographics import MAX_DEMOGRAPHIC_LENGTH
from healthbank.contracts.names import HOSPITAL_ID_RULE, is_hospital_id

# Keyed-hash domains (ADR 16). A person created from a national ID keeps the token rule of
# ADR 4: token = HMAC(pseudonym key, "national-id", id), which also keys the ID's claim.
NATIONAL_ID_DOMAIN = "national-id"
# The stored form of a hospital record number: a keyed hash of (hospital, MRN).
MRN_LINK_DOMAIN = "hospital-mrn"
# The token of a person first known by a hospital record number only: another keyed hash
# of (hospital, MRN), so racing first messages agree on one person without coordination.
MRN_PERSON_DOMAIN = "hospital-mrn-person"
# Blocking keys of probabilistic matching (ADR 25), stored only as keyed hashes.
MATCH_BLOCK_DOMAIN = "match-block"
# The claim two registrations of one new person race for: a keyed hash of the romanized
# name and birth date, so simultaneous first registrations at two hospitals make one person.
MATCH_CLAIM_DOMAIN = "match-claim"

MAX_MRN_LENGTH = 64
SEX_VALUES = frozenset({"male", "female", "other", "unknown"})

_BIRTH_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class MatchMethod(StrEnum):
    """How a hospital patient was matched to a person."""

    NATIONAL_ID = "national_id"
    HOSPITAL_MRN = "hospital_mrn"
    CREATED = "created"
    DEMOGRAPHICS = "demographics"


class IdentityRead(StrEnum):
    """A read of the index that reveals something about a person (each one is audited)."""

    NATIONAL_ID_LOOKUP = "national_id_lookup"
    PERSON = "person"


class IdentityChange(StrEnum):
    """A change of the index a privacy officer makes (each one is audited first)."""

    PERSONS_MERGED = "PERSONS_MERGED"
    PERSONS_UNMERGED = "PERSONS_UNMERGED"
    MATCH_REVIEW_ACCEPTED = "MATCH_REVIEW_ACCEPTED"
    MATCH_REVIEW_REJECTED = "MATCH_REVIEW_REJECTED"
    # A hospital merged two of its record numbers (HL7 ADT^A40), and the person of the
    # prior one, known to that hospital only, was merged by ingest on its behalf.
    HOSPITAL_RECORDS_MERGED = "HOSPITAL_RECORDS_MERGED"


class PriorRecordOutcome(StrEnum):
    """What a resolve did with one of the hospital's prior record numbers (ADR 33)."""

    ALREADY_SAME_PERSON = "already_same_person"
    LINKED = "linked"
    MERGED = "merged"
    REVIEW = "review"


class ReviewStatus(StrEnum):
    """Where a match review stands."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class MergeRefused(Exception):
    """A merge or unmerge the index's state forbids; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class MrnLinkedToOtherPerson(Exception):
    """The hospital's record number already belongs to a different person."""


class PersonNotFound(Exception):
    """Nobody with that national ID or person token is in the index."""


@dataclass(frozen=True)
class Resolution:
    """The person a hospital patient resolved to, and how."""

    person_token: str
    match_method: MatchMethod
    review_pending: bool = False


@dataclass(frozen=True)
class FoundPerson:
    """A person found by national ID, and every person merged into them (ADR 33)."""

    person_token: str
    merged_tokens: list[str]


@dataclass(frozen=True)
class HospitalLink:
    """A hospital's medical record number for a person, as stored: its keyed hash."""

    hospital_id: str
    mrn_hash: str


@dataclass(frozen=True)
class PendingMerge:
    """Two persons that a message says are one: left for the MPI's review, never merged here.

    ``mrn_person_token`` holds the hospital's record number, ``national_id_person_token``
    the national ID the message carried; ``hospital_id`` sent the message.
    """

    mrn_person_token: str
    national_id_person_token: str
    hospital_id: str
    detect_time: datetime


@dataclass(frozen=True)
class Demographics:
    """Demographics as a hospital sent them; only ever stored sealed."""

    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""
    sex: str = ""
    phone: str = ""
    address: str = ""

    def by_field(self) -> dict[str, str]:
        """Each field's value by its name (every field is a str, so a shallow copy is
        ``dataclasses.asdict``'s answer at a twentieth of its cost, several times a
        registration)."""
        return dict(vars(self))

    def is_empty(self) -> bool:
        """True when no field is set."""
        return not any(vars(self).values())

    def to_bytes(self) -> bytes:
        """The plaintext that is sealed into the person's profile (JSON, UTF-8)."""
        return json.dumps(self.by_field(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, plaintext: bytes) -> Demographics:
        """Inverse of :meth:`to_bytes`."""
        return cls(**json.loads(plaintext))


@dataclass(frozen=True)
class NationalIdClaim:
    """The outcome of claiming a national ID: who holds it after the claim, and whether
    this claim is what made them the holder (not an earlier or concurrent one)."""

    holder: str
    won: bool


@dataclass(frozen=True)
class SealedProfile:
    """What matching needs of a stored person: sealed demographics, national ID's hash."""

    person_token: str
    sealed_demographics: bytes | None
    national_id_hash: str | None = None


@dataclass(frozen=True)
class ReviewItem:
    """A new person who resembles a known one: the MPI's review decides if they are one.

    ``levels`` says, per compared field, how the two agreed ("exact", "one_edit",
    "different", "missing" ...); never a value.
    """

    review_id: str
    person_token: str
    candidate_token: str
    probability: float
    levels: dict[str, str]
    create_time: datetime
    status: ReviewStatus = ReviewStatus.PENDING
    merge_id: str = ""


@dataclass(frozen=True)
class MergeRecord:
    """A merge as made, with what it moved, so an unmerge restores exactly the earlier state.

    ``moved_links`` are the absorbed person's (hospital, MRN hash) links that now point to
    the survivor; ``national_id_hash`` the absorbed person's ID moved with them, if any.
    """

    merge_id: str
    survivor_token: str
    absorbed_token: str
    moved_links: tuple[tuple[str, str], ...]
    national_id_hash: str | None
    merge_time: datetime
    undone: bool = False


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
    for field, value in demographics.by_field().items():
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


def hospital_mrn(hospital_id: str, mrn: str) -> str:
    """The value hashed for a (hospital, MRN) pair (hospital ids never contain NUL)."""
    return f"{hospital_id}\x00{mrn}"
