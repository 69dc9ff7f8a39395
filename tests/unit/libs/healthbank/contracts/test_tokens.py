"""EdDSA user tokens: what verify_user_token accepts, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from healthbank.contracts.principal import InvalidToken, Principal, PrincipalKind, Purpose
from healthbank.contracts.tokens import (
    CLOCK_SKEW_SECONDS,
    MAX_LIFETIME_SECONDS,
    Issuer,
    IssuerRegistry,
    load_issuer_registry,
    mint_user_token,
    verify_user_token,
)

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOUR = 3600
HOSPITAL_KEY = Ed25519PrivateKey.generate()
CITY_KEY = Ed25519PrivateKey.generate()
REGISTRY = IssuerRegistry(
    {
        "hospital-a": Issuer("hospital-a", HOSPITAL_KEY.public_key(), "hospital-a"),
        "city": Issuer("city", CITY_KEY.public_key()),
    }
)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", "hospital-a", ("physician",))
PATIENT = Principal(PrincipalKind.PATIENT, "a" * 64, purpose=Purpose.PATIENT_ACCESS)


def mint(
    principal: Principal = CLINICIAN,
    *,
    issuer_id: str = "hospital-a",
    key: Ed25519PrivateKey = HOSPITAL_KEY,
    audience: str = "record-lookup",
    lifetime: int = HOUR,
    issued: datetime = NOW,
) -> str:
    return mint_user_token(
        principal,
        issuer_id=issuer_id,
        key=key,
        audience=audience,
        lifetime_seconds=lifetime,
        now=issued,
    )


def verify(token: str, now: datetime = NOW, audience: str = "record-lookup") -> Principal:
    return verify_user_token(token, REGISTRY, audience, now=now)


def refused(token: str, now: datetime = NOW) -> InvalidToken:
    with pytest.raises(InvalidToken) as raised:
        verify(token, now)
    return raised.value


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handmade(header: dict[str, Any], signature: bytes | None = None) -> str:
    """A token with ``header`` over a valid clinician's claims, signed by hand."""
    claims = json.loads(base64.urlsafe_b64decode(mint().split(".")[1] + "=="))
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(signature or b'')}"


def test_a_valid_token_gives_its_principal() -> None:
    assert verify(mint()) == CLINICIAN
    assert verify(mint(PATIENT, issuer_id="city", key=CITY_KEY)) == PATIENT


def test_the_clock_skew_is_tolerated_both_ways() -> None:
    early = NOW - timedelta(seconds=CLOCK_SKEW_SECONDS - 1)
    assert verify(mint(), now=early) == CLINICIAN
    late = NOW + timedelta(seconds=HOUR + CLOCK_SKEW_SECONDS - 1)
    assert verify(mint(), now=late) == CLINICIAN


def test_an_expired_token_is_refused_as_expired() -> None:
    error = refused(mint(), now=NOW + timedelta(seconds=HOUR + CLOCK_SKEW_SECONDS))
    assert (error.reason, error.message) == ("TOKEN_EXPIRED", "credentials expired")


def test_clinician_and_emergency_tokens_live_at_most_twelve_hours() -> None:
    assert MAX_LIFETIME_SECONDS[PrincipalKind.CLINICIAN] == 12 * HOUR
    assert MAX_LIFETIME_SECONDS[PrincipalKind.EMERGENCY] == 12 * HOUR
    assert verify(mint(lifetime=12 * HOUR)) == CLINICIAN


def test_a_service_principal_is_never_a_user_token() -> None:
    service = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
    error = refused(mint(service, issuer_id="city", key=CITY_KEY, lifetime=60))
    assert error.reason == "INVALID_TOKEN"


BAD_TOKENS = {
    "not yet valid beyond the skew": lambda: mint(
        issued=NOW + timedelta(seconds=CLOCK_SKEW_SECONDS + 1)
    ),
    "lifetime over the clinician maximum": lambda: mint(lifetime=12 * HOUR + 1),
    "patient lifetime over its maximum": lambda: mint(
        PATIENT, issuer_id="city", key=CITY_KEY, lifetime=2 * HOUR
    ),
    "wrong audience": lambda: mint(audience="consent"),
    "unknown issuer": lambda: mint(issuer_id="hospital-z"),
    "wrong key": lambda: mint(key=Ed25519PrivateKey.generate()),
    "alg none": lambda: handmade({"alg": "none", "typ": "JWT"}),
    "HS256 with the public key as secret": lambda: _hs256_confusion(),
    "hospital issuer minting another hospital's clinician": lambda: mint(
        Principal(PrincipalKind.CLINICIAN, "dr-2", "hospital-b")
    ),
    "hospital issuer minting a patient": lambda: mint(PATIENT),
    "city issuer minting a clinician": lambda: mint(issuer_id="city", key=CITY_KEY),
    "hospital issuer minting another hospital's engine": lambda: mint(
        Principal(PrincipalKind.HOSPITAL_ENGINE, "engine", "hospital-b")
    ),
    "malformed subject": lambda: mint(Principal(PrincipalKind.CLINICIAN, "dr 1", "hospital-a")),
    "not a JWT": lambda: "not-a-token",
}


def _hs256_confusion() -> str:
    public_pem = HOSPITAL_KEY.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = handmade({"alg": "HS256", "typ": "JWT"})
    signing_input = unsigned.rsplit(".", 1)[0]
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_refused_without_saying_why(case: str) -> None:
    error = refused(BAD_TOKENS[case]())
    assert (error.reason, error.message) == ("INVALID_TOKEN", "invalid credentials")


def test_the_issuers_file_registers_public_keys(tmp_path: Path) -> None:
    pem = HOSPITAL_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "issuers.json"
    path.write_text(
        json.dumps(
            {"issuers": {"hospital-a": {"public_key": pem.decode(), "hospital_id": "hospital-a"}}}
        )
    )
    registry = load_issuer_registry(path)
    assert verify_user_token(mint(), registry, "record-lookup", now=NOW) == CLINICIAN
    path.write_text(json.dumps({"issuers": {"hospital-a": {}}}))
    with pytest.raises(ValueError, match="not an issuers file"):
        load_issuer_registry(path)
