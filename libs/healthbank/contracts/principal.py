"""Who is calling: the principal carried by every RPC, and its one codec per form.

A principal has four forms, each written once here:

- token (:func:`encode_token` / :func:`decode_token`): travels in the ``authorization``
  metadata as ``Bearer <token>``. The format (``hb1.<payload>.<hmac>``, HMAC-SHA256 under a
  shared secret) is a development stand-in: the server side only depends on "a verifier
  turns a token into a :class:`Principal` or raises UNAUTHENTICATED", so mTLS identities and
  asymmetrically signed tokens (Vault Transit ``sign``) can replace it without touching
  servicers;
- proto (:func:`principal_to_proto` / :func:`principal_from_proto`): ``common.v1.Principal``
  in consent checks and audit events;
- stored (:func:`principal_to_json` / :func:`principal_from_json`): compact JSON, for a
  service that keeps a principal in its own tables;
- log (:func:`principal_log_fields`): the part of a principal a log line may carry.

Every decoder applies the same rules (:func:`principal_problems`), so a principal one form
accepts is accepted by all of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from healthbank.common.v1 import common_pb2
from healthbank.contracts.names import HOSPITAL_ID_RULE, is_hospital_id, is_person_token

__all__ = [
    "SUBJECT_RULE",
    "TOKEN_VERSION",
    "InvalidPrincipal",
    "InvalidToken",
    "Principal",
    "PrincipalKind",
    "Purpose",
    "VerifiedToken",
    "decode_token",
    "encode_token",
    "is_principal_subject",
    "principal_from_json",
    "principal_from_proto",
    "principal_log_fields",
    "principal_problems",
    "principal_to_json",
    "principal_to_proto",
    "verify_dev_token",
]

TOKEN_VERSION = "hb1"

# Refuse absurd inputs before doing any work on them.
_MAX_TOKEN_LENGTH = 8192

SUBJECT_RULE = "must be 1-128 visible ASCII characters"
"""The field-violation description of a malformed principal subject."""

# Subjects are opaque ids (staff id, person token, service name): visible ASCII, bounded.
_SUBJECT = re.compile(r"[\x21-\x7e]{1,128}")
_KIND_PREFIX = "PRINCIPAL_KIND_"
_PURPOSE_PREFIX = "PURPOSE_OF_USE_"


class InvalidToken(Exception):
    """A token that is malformed, forged or expired; ``reason`` says which, for the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidPrincipal(ValueError):
    """A principal that breaks the rules; ``violations`` are (field, rule) pairs.

    Fields are named as in ``common.v1.Principal`` (``kind``, ``subject``, ``hospital_id``,
    ``purpose``), so a servicer can prefix them with where the principal sat in its request.
    """

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("invalid principal: " + ", ".join(field for field, _ in violations))
        self.violations = violations


class PrincipalKind(StrEnum):
    """The kind of party making a call."""

    CLINICIAN = "clinician"
    PATIENT = "patient"
    EMERGENCY = "emergency"
    COMMITTEE = "committee"
    RESEARCHER = "researcher"
    SERVICE = "service"
    HOSPITAL_ENGINE = "hospital_engine"
    PRIVACY_OFFICER = "privacy_officer"
    AUDITOR = "auditor"
    PROXY = "proxy"


class Purpose(StrEnum):
    """The purpose of use a call declares; consent decisions depend on it."""

    TREATMENT = "treatment"
    EMERGENCY = "emergency"
    RESEARCH = "research"
    PATIENT_ACCESS = "patient_access"
    OPERATIONS = "operations"


@dataclass(frozen=True)
class Principal:
    """A verified caller: kind, subject id, hospital, roles and declared purpose of use.

    ``subject`` is an opaque id (staff id, person token, service name), never a name or a
    national ID number, because principals end up in audit entries (and, in the part
    :func:`principal_log_fields` allows, in logs).
    """

    kind: PrincipalKind
    subject: str
    hospital_id: str = ""
    roles: tuple[str, ...] = ()
    purpose: Purpose = Purpose.TREATMENT

    def has_role(self, role: str) -> bool:
        """True if the principal holds ``role``."""
        return role in self.roles


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _sign(signing_input: str, secret: bytes) -> str:
    return _b64encode(hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def _epoch_seconds(now: datetime | None) -> int:
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return int(moment.timestamp())


def encode_token(
    principal: Principal,
    secret: bytes,
    ttl_seconds: int = 3600,
    now: datetime | None = None,
) -> str:
    """Sign ``principal`` into a ``hb1.<b64url json>.<b64url hmac-sha256>`` token."""
    if not secret:
        raise ValueError("token secret must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued_at = _epoch_seconds(now)
    claims = {
        "kind": principal.kind.value,
        "sub": principal.subject,
        "hos": principal.hospital_id,
        "roles": list(principal.roles),
        "pur": principal.purpose.value,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{TOKEN_VERSION}.{payload}"
    return f"{signing_input}.{_sign(signing_input, secret)}"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token's principal and the times (epoch seconds) it is valid in: from
    ``valid_from`` (inclusive) to ``valid_until`` (exclusive)."""

    principal: Principal
    valid_from: float
    valid_until: float

    def valid_at(self, moment: float) -> bool:
        """Whether the token is still (or already) valid at ``moment``."""
        return self.valid_from <= moment < self.valid_until


def decode_token(token: str, secret: bytes, now: datetime | None = None) -> Principal:
    """Verify ``token`` and return its principal (see :func:`verify_dev_token`)."""
    return verify_dev_token(token, secret, now).principal


def verify_dev_token(token: str, secret: bytes, now: datetime | None = None) -> VerifiedToken:
    """Verify ``token`` and return its principal and validity.

    Raises:
        InvalidToken: if the token is malformed, its signature does not match, its
            principal breaks :func:`principal_problems`, or it has expired (the RPC layer
            answers UNAUTHENTICATED). The message never says which, beyond "expired", so
            probing learns nothing.
    """
    invalid = InvalidToken("INVALID_TOKEN", "invalid credentials")
    if not secret or len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise invalid
    version, payload, signature = parts
    expected = _sign(f"{version}.{payload}", secret)
    # Constant-time comparison so the signature cannot be guessed byte by byte.
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        raise invalid
    try:
        claims: Any = json.loads(_b64decode(payload))
        principal = _checked(
            kind=PrincipalKind(claims["kind"]),
            subject=_expect_str(claims["sub"]),
            hospital_id=_expect_str(claims.get("hos", "")),
            roles=tuple(_expect_str(role) for role in claims.get("roles", [])),
            purpose=Purpose(claims.get("pur", Purpose.TREATMENT.value)),
        )
        expires_at = int(claims["exp"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        # InvalidPrincipal is a ValueError: a signed but malformed principal is refused too.
        raise invalid from exc
    if _epoch_seconds(now) >= expires_at:
        raise InvalidToken("TOKEN_EXPIRED", "credentials expired")
    # Expired at the whole second ``expires_at``, as checked above.
    return VerifiedToken(principal, float("-inf"), float(expires_at))


def _expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string claim")
    return value


def is_principal_subject(value: str) -> bool:
    """True if ``value`` may be a principal's subject (see :data:`SUBJECT_RULE`)."""
    return _SUBJECT.fullmatch(value) is not None


def principal_problems(subject: str, hospital_id: str) -> list[tuple[str, str]]:
    """What is wrong with a principal's free-text fields, as (field, rule) pairs.

    Kind and purpose are enums and checked by each decoder; values are never echoed.
    """
    problems: list[tuple[str, str]] = []
    if not subject:
        problems.append(("subject", "is required"))
    elif not is_principal_subject(subject):
        problems.append(("subject", SUBJECT_RULE))
    if hospital_id and not is_hospital_id(hospital_id):
        problems.append(("hospital_id", HOSPITAL_ID_RULE))
    return problems


def _checked(
    kind: PrincipalKind,
    subject: str,
    hospital_id: str,
    roles: tuple[str, ...],
    purpose: Purpose,
) -> Principal:
    problems = principal_problems(subject, hospital_id)
    if problems:
        raise InvalidPrincipal(problems)
    return Principal(kind, subject, hospital_id, roles, purpose)


_DomainEnum = TypeVar("_DomainEnum", PrincipalKind, Purpose)


def principal_to_proto(principal: Principal) -> common_pb2.Principal:
    """The principal as recorded in consent requests and audit events."""
    return common_pb2.Principal(
        kind=_KIND_PREFIX + principal.kind.name,
        subject=principal.subject,
        hospital_id=principal.hospital_id,
        roles=list(principal.roles),
        purpose=_PURPOSE_PREFIX + principal.purpose.name,
    )


def principal_from_proto(message: common_pb2.Principal) -> Principal:
    """Inverse of :func:`principal_to_proto`.

    Raises:
        InvalidPrincipal: listing every field that is unset, unknown or malformed.
    """
    kind = _enum_member(PrincipalKind, common_pb2.PrincipalKind, message.kind, _KIND_PREFIX)
    purpose = _enum_member(Purpose, common_pb2.PurposeOfUse, message.purpose, _PURPOSE_PREFIX)
    problems: list[tuple[str, str]] = []
    if kind is None:
        problems.append(("kind", "is required and must be a known kind"))
    problems += principal_problems(message.subject, message.hospital_id)
    if purpose is None:
        problems.append(("purpose", "is required and must be a known purpose"))
    if problems or kind is None or purpose is None:
        raise InvalidPrincipal(problems)
    return Principal(kind, message.subject, message.hospital_id, tuple(message.roles), purpose)


def _enum_member(
    domain_enum: type[_DomainEnum], proto_enum: Any, number: int, prefix: str
) -> _DomainEnum | None:
    """The domain member named like proto enum ``number``; None if unset or unknown."""
    try:
        # Proto3 enums are open: an unknown number arrives as is and has no name.
        proto_name: str = proto_enum.Name(number)
        return domain_enum[proto_name.removeprefix(prefix)]
    except (ValueError, KeyError):
        return None


def principal_to_json(principal: Principal) -> str:
    """The principal as compact JSON: the stored form in every backend."""
    return json.dumps(
        {
            "kind": principal.kind.value,
            "subject": principal.subject,
            "hospital_id": principal.hospital_id,
            "roles": list(principal.roles),
            "purpose": principal.purpose.value,
        },
        separators=(",", ":"),
    )


def principal_from_json(text: str) -> Principal:
    """Inverse of :func:`principal_to_json`; ValueError (InvalidPrincipal) when malformed."""
    try:
        fields: Any = json.loads(text)
        return _checked(
            kind=PrincipalKind(fields["kind"]),
            subject=_expect_str(fields["subject"]),
            hospital_id=_expect_str(fields["hospital_id"]),
            roles=tuple(_expect_str(role) for role in fields["roles"]),
            purpose=Purpose(fields["purpose"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError("not a stored principal") from exc


def principal_log_fields(principal: Principal) -> dict[str, str]:
    """What of ``principal`` a log line may carry (pass as ``extra=``).

    Kind, purpose and hospital always; the subject only when it names no human being
    directly: a service's or a hospital engine's name, or a patient's person token (a
    pseudonym). Staff ids of
    clinicians, emergency staff, committee members and researchers identify a person, so
    they stay in the access-controlled audit ledger and out of logs.
    """
    fields = {
        "principal_kind": principal.kind.value,
        "principal_purpose": principal.purpose.value,
    }
    if principal.hospital_id:
        fields["principal_hospital"] = principal.hospital_id
    if principal.kind == PrincipalKind.SERVICE:
        fields["principal_service"] = principal.subject
    elif principal.kind == PrincipalKind.HOSPITAL_ENGINE:
        fields["principal_engine"] = principal.subject
    elif principal.kind == PrincipalKind.PATIENT and is_person_token(principal.subject):
        fields["principal_person_token"] = principal.subject
    return fields
