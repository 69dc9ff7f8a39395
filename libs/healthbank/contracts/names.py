"""Resource names and id rules every service agrees on, written once.

A person is known to every service only by a person token: the hex HMAC-SHA256 pseudonym
identity mints (see ADR 4), so exactly 64 lowercase hex digits. Resources hang under the
person they belong to (AIP-122 style):

- ``persons/{person_token}``
- ``persons/{person_token}/records/{record_id}`` (record ids are ULIDs)
- ``persons/{person_token}/grants/{grant_id}``, ``persons/{person_token}/breakGlass/{id}``
  (consent's resources; consent owns their id rules)

The ``*_RULE`` constants are the field-violation descriptions that go with the checks, so a
caller sees the same sentence for the same mistake from every service.
"""

from __future__ import annotations

import re

from healthbank.core.ids import is_ulid

__all__ = [
    "HOSPITAL_ID_RULE",
    "PERSON_NAME_RULE",
    "PERSON_TOKEN_RULE",
    "RECORD_NAME_RULE",
    "is_hospital_id",
    "is_person_token",
    "owning_person_token",
    "parse_person_name",
    "parse_record_name",
    "person_name",
    "record_name",
]

PERSON_TOKEN_RULE = "must be a person token (64 lowercase hex digits)"
"""How a bad person token is described in a field violation."""

PERSON_NAME_RULE = "must be persons/{person_token} (a person token is 64 lowercase hex digits)"
"""The field-violation description of a malformed person resource name."""

RECORD_NAME_RULE = (
    "must be persons/{person_token}/records/{record_id} (64 lowercase hex digits, then a ULID)"
)
"""The field-violation description of a malformed record resource name."""

HOSPITAL_ID_RULE = "must be 1-64 characters of letters, digits, '.', '_' or '-'"
"""The field-violation description of a malformed hospital id."""

_PERSON_TOKEN = re.compile(r"[0-9a-f]{64}")
_PERSON_NAME = re.compile(r"persons/([0-9a-f]{64})")
_RECORD_NAME = re.compile(r"persons/([0-9a-f]{64})/records/([^/]+)")
# The person itself or anything below it: persons/{token}[/collection/id...].
_OWNED_NAME = re.compile(r"persons/([0-9a-f]{64})(?:/[^/]+/[^/]+)*")
# A hospital id travels in tokens, resource fields and Cassandra keys: keep it plain.
_HOSPITAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_person_token(value: str) -> bool:
    """True if ``value`` has the shape of a person token."""
    return _PERSON_TOKEN.fullmatch(value) is not None


def is_hospital_id(value: str) -> bool:
    """True if ``value`` is a well-formed hospital id (see :data:`HOSPITAL_ID_RULE`)."""
    return _HOSPITAL_ID.fullmatch(value) is not None


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
    if match is None or not is_ulid(match.group(2)):
        return None
    return match.group(1), match.group(2)


def owning_person_token(name: str) -> str | None:
    """The person token of ``persons/{token}`` or of any resource under it, else None.

    For checks that a resource belongs to the person a request or event is about, whatever
    kind of resource it is (record, grant, break-glass session).
    """
    match = _OWNED_NAME.fullmatch(name)
    return match.group(1) if match else None
