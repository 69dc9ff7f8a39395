"""Resource names and id rules every service agrees on, written once.

A person is known to every service only by a person token: the hex HMAC-SHA256 pseudonym
identity mints (see ADR 4), so exactly 64 lowercase hex digits. Resources hang under the
person they belong to (AIP-122 style):

- ``persons/{person_token}``
- ``persons/{person_token}/records/{record_id}``
"""

from __future__ import annotations

import re

__all__ = [
    "PERSON_NAME_RULE",
    "PERSON_TOKEN_RULE",
    "is_person_token",
    "parse_person_name",
    "parse_record_name",
    "person_name",
    "record_name",
]

PERSON_TOKEN_RULE = "64 lowercase hex digits"
"""How a bad person token is described in a field violation."""

PERSON_NAME_RULE = f"must be persons/{{person_token}} ({PERSON_TOKEN_RULE})"
"""The field-violation description of a malformed person resource name."""

_PERSON_TOKEN = re.compile(r"[0-9a-f]{64}")
_PERSON_NAME = re.compile(r"persons/([0-9a-f]{64})")
_RECORD_NAME = re.compile(r"persons/([0-9a-f]{64})/records/([^/]+)")


def is_person_token(value: str) -> bool:
    """True if ``value`` has the shape of a person token."""
    return _PERSON_TOKEN.fullmatch(value) is not None


def person_name(person_token: str) -> str:
    """Resource name of a person: ``persons/{person_token}``."""
    return f"persons/{person_token}"


def parse_person_name(name: str) -> str | None:
    """The person token in ``persons/{person_token}``, or None when ``name`` is malformed."""
    match = _PERSON_NAME.fullmatch(name)
    return match.group(1) if match else None


def record_name(person_token: str, record_id: str) -> str:
    """Resource name of a record: ``persons/{person_token}/records/{record_id}``."""
    return f"persons/{person_token}/records/{record_id}"


def parse_record_name(name: str) -> tuple[str, str] | None:
    """(person token, record id) of a record name, or None when ``name`` is malformed."""
    match = _RECORD_NAME.fullmatch(name)
    return (match.group(1), match.group(2)) if match else None
