"""User tokens: EdDSA (Ed25519) JWTs from registered issuers, verified per service.

Each hospital runs an issuer for its staff and its integration engine; a city issuer (an
issuer without a hospital) signs for patients, proxies, privacy officers, auditors,
committee members and researchers. The registry (:class:`IssuerRegistry`, loaded from the
JSON file ``HEALTHBANK_TOKEN_ISSUERS_FILE`` names) maps each issuer id to its public key::

    {"issuers": {"hospital-a": {"public_key": "-----BEGIN PUBLIC KEY-----...",
                                "hospital_id": "hospital-a"},
                 "city": {"public_key": "-----BEGIN PUBLIC KEY-----..."}}}

:func:`verify_user_token` accepts a token only if every rule holds: header ``alg`` EdDSA
(so ``none`` and HS256-with-the-public-key confusion fail), a registered ``iss`` whose key
made the signature, ``aud`` naming the verifying service, ``iat``/``nbf``/``exp`` within
:data:`CLOCK_SKEW_SECONDS`, a lifetime (``exp - iat``) within the kind's maximum
(:data:`MAX_LIFETIME_SECONDS`), a principal that passes ``principal_problems``, and a
hospital issuer minting only its own hospital's clinicians, emergency staff and engine.
Services never hold JWTs: they are known by their mTLS certificates (ADR 11).

Every refusal is the same :class:`~healthbank.contracts.principal.InvalidToken` ("invalid
credentials"), except an expired token, so probing learns nothing about the rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from healthbank.contracts.principal import (
    InvalidPrincipal,
    InvalidToken,
    Principal,
    PrincipalKind,
    Purpose,
    VerifiedToken,
    principal_problems,
)

__all__ = [
    "ALGORITHM",
    "CLOCK_SKEW_SECONDS",
    "HOSPITAL_ISSUED_KINDS",
    "MAX_LIFETIME_SECONDS",
    "Issuer",
    "IssuerRegistry",
    "check_user_token",
    "load_issuer_registry",
    "mint_user_token",
    "verify_user_token",
]

ALGORITHM = "EdDSA"
CLOCK_SKEW_SECONDS = 60

_HOUR = 3600
MAX_LIFETIME_SECONDS: Mapping[PrincipalKind, int] = {
    # A shift at most: a stolen staff token is useless by the next one.
    PrincipalKind.CLINICIAN: 12 * _HOUR,
    PrincipalKind.EMERGENCY: 12 * _HOUR,
    PrincipalKind.PRIVACY_OFFICER: 8 * _HOUR,
    PrincipalKind.AUDITOR: 8 * _HOUR,
    PrincipalKind.COMMITTEE: 8 * _HOUR,
    PrincipalKind.RESEARCHER: 8 * _HOUR,
    # People at home and machines re-authenticate often: their tokens live where they are
    # easiest to steal (a phone, an integration engine's configuration).
    PrincipalKind.PATIENT: _HOUR,
    PrincipalKind.PROXY: _HOUR,
    PrincipalKind.HOSPITAL_ENGINE: _HOUR,
}
"""Longest ``exp - iat`` per kind; a kind missing here (SERVICE) is never issued as a JWT."""

HOSPITAL_ISSUED_KINDS = frozenset(
    {PrincipalKind.CLINICIAN, PrincipalKind.EMERGENCY, PrincipalKind.HOSPITAL_ENGINE}
)
"""The kinds a hospital's issuer mints (for its own hospital); the city issuer mints the rest."""

_REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "kind", "pur"]
_MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class Issuer:
    """A registered token issuer: its public key and, for a hospital's, the hospital."""

    issuer_id: str
    public_key: Ed25519PublicKey
    hospital_id: str = ""


class IssuerRegistry:
    """Issuer id → :class:`Issuer`: whose signatures this deployment accepts."""

    def __init__(self, issuers: Mapping[str, Issuer] | None = None) -> None:
        self._issuers = dict(issuers or {})

    def get(self, issuer_id: str) -> Issuer | None:
        """The issuer registered as ``issuer_id``, or None."""
        return self._issuers.get(issuer_id)

    def __len__(self) -> int:
        return len(self._issuers)


def load_issuer_registry(path: Path) -> IssuerRegistry:
    """Read the issuers file (see the module docstring); ValueError when malformed."""
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
        issuers: dict[str, Issuer] = {}
        for issuer_id, entry in document["issuers"].items():
            key = load_pem_public_key(entry["public_key"].encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"issuer {issuer_id}: public_key must be an Ed25519 key")
            hospital_id = entry.get("hospital_id", "")
            if principal_problems(issuer_id, hospital_id):
                raise ValueError(f"issuer {issuer_id}: malformed issuer id or hospital_id")
            issuers[issuer_id] = Issuer(issuer_id, key, hospital_id)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name}: not an issuers file ({type(error).__name__})") from None
    return IssuerRegistry(issuers)


def mint_user_token(
    principal: Principal,
    *,
    issuer_id: str,
    key: Ed25519PrivateKey,
    audience: str | list[str],
    lifetime_seconds: int,
    now: datetime | None = None,
) -> str:
    """Sign ``principal`` as ``issuer_id`` for ``audience`` (what an issuer does; tests)."""
    issued_at = int((now or datetime.now(UTC)).timestamp())
    claims = {
        "iss": issuer_id,
        "sub": principal.subject,
        "aud": audience,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + lifetime_seconds,
        "kind": principal.kind.value,
        "hos": principal.hospital_id,
        "roles": list(principal.roles),
        "pur": principal.purpose.value,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_user_token(
    token: str, registry: IssuerRegistry, audience: str, now: datetime | None = None
) -> Principal:
    """The principal of a JWT that passes every rule (module docstring); InvalidToken if not."""
    return check_user_token(token, registry, audience, now).principal


def check_user_token(
    token: str, registry: IssuerRegistry, audience: str, now: datetime | None = None
) -> VerifiedToken:
    """A JWT that passes every rule (module docstring): its principal and the times it is
    valid in (skew allowed); InvalidToken if not."""
    invalid = InvalidToken("INVALID_TOKEN", "invalid credentials")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        issuer = registry.get(str(unverified.get("iss", "")))
        if issuer is None:
            raise invalid
        moment = (now or datetime.now(UTC)).timestamp()
        claims = jwt.decode(
            token,
            issuer.public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer.issuer_id,
            leeway=0,
            options={
                "require": _REQUIRED_CLAIMS,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
        principal = _principal(claims)
        valid_from, valid_until = _check_times(claims, principal.kind, moment)
    except jwt.PyJWTError:
        raise invalid from None
    except (InvalidPrincipal, ValueError, KeyError, TypeError):
        raise invalid from None
    if issuer.hospital_id:
        allowed = principal.kind in HOSPITAL_ISSUED_KINDS
        allowed = allowed and principal.hospital_id == issuer.hospital_id
    else:
        allowed = principal.kind not in HOSPITAL_ISSUED_KINDS
    if not allowed:
        raise invalid
    return VerifiedToken(principal, valid_from, valid_until)


def _principal(claims: Mapping[str, Any]) -> Principal:
    kind = PrincipalKind(claims["kind"])
    subject, hospital_id = _text(claims["sub"]), _text(claims.get("hos", ""))
    problems = principal_problems(subject, hospital_id)
    if problems:
        raise InvalidPrincipal(problems)
    roles = tuple(_text(role) for role in claims.get("roles", []))
    return Principal(kind, subject, hospital_id, roles, Purpose(claims["pur"]))


def _check_times(
    claims: Mapping[str, Any], kind: PrincipalKind, moment: float
) -> tuple[float, float]:
    """Times with bounded skew; the lifetime within the kind's maximum (ValueError if not).
    Returns the times the token is valid in, skew allowed: [from, until)."""
    issued_at, expires_at = _number(claims["iat"]), _number(claims["exp"])
    not_before = _number(claims.get("nbf", issued_at))
    maximum = MAX_LIFETIME_SECONDS.get(kind)
    if maximum is None or expires_at - issued_at > maximum or expires_at <= issued_at:
        raise ValueError("lifetime")
    if issued_at > moment + CLOCK_SKEW_SECONDS or not_before > moment + CLOCK_SKEW_SECONDS:
        raise ValueError("not yet valid")
    if moment >= expires_at + CLOCK_SKEW_SECONDS:
        raise InvalidToken("TOKEN_EXPIRED", "credentials expired")
    return max(issued_at, not_before) - CLOCK_SKEW_SECONDS, expires_at + CLOCK_SKEW_SECONDS


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string claim")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a numeric date")
    return float(value)
