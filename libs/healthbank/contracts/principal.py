"""Who is calling: the principal carried by every RPC.

A principal travels in the ``authorization`` metadata as ``Bearer <token>``. The token
format here (``hb1.<payload>.<hmac>``, HMAC-SHA256 under a shared secret) is a
development stand-in: the server side only depends on "a verifier turns a token into a
:class:`Principal` or raises UNAUTHENTICATED", so mTLS identities and asymmetrically
signed tokens (Vault Transit ``sign``) can replace it without touching servicers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from healthbank.common.v1 import common_pb2

__all__ = [
    "TOKEN_VERSION",
    "InvalidToken",
    "Principal",
    "PrincipalKind",
    "Purpose",
    "decode_token",
    "encode_token",
    "principal_from_proto",
    "principal_to_proto",
]

TOKEN_VERSION = "hb1"

# Refuse absurd inputs before doing any work on them.
_MAX_TOKEN_LENGTH = 8192


class InvalidToken(Exception):
    """A token that is malformed, forged or expired; ``reason`` says which, for the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PrincipalKind(StrEnum):
    """The kind of party making a call."""

    CLINICIAN = "clinician"
    PATIENT = "patient"
    EMERGENCY = "emergency"
    COMMITTEE = "committee"
    RESEARCHER = "researcher"
    SERVICE = "service"


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
    national ID number, because principals end up in logs and audit entries.
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


def decode_token(token: str, secret: bytes, now: datetime | None = None) -> Principal:
    """Verify ``token`` and return its principal.

    Raises:
        InvalidToken: if the token is malformed, its signature does not match, or it has
            expired (the RPC layer answers UNAUTHENTICATED). The message never says which,
            beyond "expired", so probing learns nothing.
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
        principal = Principal(
            kind=PrincipalKind(claims["kind"]),
            subject=_expect_str(claims["sub"]),
            hospital_id=_expect_str(claims.get("hos", "")),
            roles=tuple(_expect_str(role) for role in claims.get("roles", [])),
            purpose=Purpose(claims.get("pur", Purpose.TREATMENT.value)),
        )
        expires_at = int(claims["exp"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid from exc
    if not principal.subject:
        raise invalid
    if _epoch_seconds(now) >= expires_at:
        raise InvalidToken("TOKEN_EXPIRED", "credentials expired")
    return principal


def _expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string claim")
    return value


def principal_to_proto(principal: Principal) -> common_pb2.Principal:
    """The principal as recorded in consent requests and audit events."""
    return common_pb2.Principal(
        kind=f"PRINCIPAL_KIND_{principal.kind.name}",
        subject=principal.subject,
        hospital_id=principal.hospital_id,
        roles=list(principal.roles),
        purpose=f"PURPOSE_OF_USE_{principal.purpose.name}",
    )


def principal_from_proto(message: common_pb2.Principal) -> Principal:
    """Inverse of principal_to_proto; ValueError for an unspecified kind or purpose."""
    kind = common_pb2.PrincipalKind.Name(message.kind).removeprefix("PRINCIPAL_KIND_")
    purpose = common_pb2.PurposeOfUse.Name(message.purpose).removeprefix("PURPOSE_OF_USE_")
    if kind == "UNSPECIFIED" or purpose == "UNSPECIFIED":
        raise ValueError("principal kind and purpose must be specified")
    return Principal(
        kind=PrincipalKind[kind],
        subject=message.subject,
        hospital_id=message.hospital_id,
        roles=tuple(message.roles),
        purpose=Purpose[purpose],
    )
