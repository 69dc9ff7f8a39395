"""The service's one token verifier: a token that verified is remembered for the times it is
valid in, never past them, and a refused one is never remembered (ADR 66)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

import healthbank.rpc.auth as auth
from healthbank.contracts.principal import (
    InvalidToken,
    Principal,
    PrincipalKind,
    VerifiedToken,
    encode_token,
)
from healthbank.contracts.tokens import CLOCK_SKEW_SECONDS, mint_user_token

SECRET = "test-secret"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", "hospital-a", ("physician",))


@dataclass
class Settings:
    token_issuers_file: Path | None = None
    dev_tokens: bool = True
    auth_secret: SecretStr = field(default_factory=lambda: SecretStr(SECRET))


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens actually checked (signature and claims), in order."""
    checked: list[str] = []
    real = auth.verify_dev_token

    def counted(token: str, secret: bytes, now: datetime | None = None) -> VerifiedToken:
        checked.append(token)
        return real(token, secret, now)

    monkeypatch.setattr(auth, "verify_dev_token", counted)
    return checked


def dev_token(subject: str = "dr-1", ttl: int = 3600) -> str:
    principal = Principal(PrincipalKind.CLINICIAN, subject, "hospital-a", ("physician",))
    return encode_token(principal, SECRET.encode(), ttl_seconds=ttl, now=NOW)


def test_a_token_is_checked_once_then_remembered_until_it_expires(checks: list[str]) -> None:
    clock = Clock()
    verify = auth.token_verifier(Settings(), "record-lookup", clock)
    token = dev_token(ttl=600)
    assert [verify(token) for _ in range(3)] == [CLINICIAN] * 3
    assert checks == [token]
    clock.now += 599
    assert verify(token) == CLINICIAN
    clock.now += 1  # the whole second it expires at
    with pytest.raises(InvalidToken) as expired:
        verify(token)
    assert expired.value.reason == "TOKEN_EXPIRED"
    assert checks == [token, token]


def test_a_refused_token_is_checked_again_every_time(checks: list[str]) -> None:
    verify = auth.token_verifier(Settings(), "record-lookup", Clock())
    forged = dev_token()[:-2] + "AA"
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verify(forged)
    assert checks == [forged, forged]


def test_dev_tokens_are_refused_when_turned_off(checks: list[str]) -> None:
    verify = auth.token_verifier(Settings(dev_tokens=False), "record-lookup", Clock())
    with pytest.raises(InvalidToken):
        verify(dev_token())
    assert checks == []


def test_only_so_many_tokens_are_remembered(
    checks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS_KEPT", 3)
    verify = auth.token_verifier(Settings(), "record-lookup", Clock())
    first, *others = [dev_token(f"dr-{n}") for n in range(4)]
    for token in (first, *others, first):
        verify(token)
    # The fourth token pushed the first out: it was checked again.
    assert checks == [first, *others, first]


def test_a_long_token_is_checked_every_time(
    checks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = dev_token()
    monkeypatch.setattr(auth, "LONGEST_TOKEN_KEPT", len(token) - 1)
    verify = auth.token_verifier(Settings(), "record-lookup", Clock())
    assert [verify(token), verify(token)] == [CLINICIAN, CLINICIAN]
    assert checks == [token, token]


def test_a_jwt_is_remembered_within_its_skewed_window(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    issuers = tmp_path / "issuers.json"
    registered = {"public_key": pem.decode(), "hospital_id": "hospital-a"}
    issuers.write_text(json.dumps({"issuers": {"hospital-a": registered}}))
    token = mint_user_token(
        CLINICIAN,
        issuer_id="hospital-a",
        key=key,
        audience="record-lookup",
        lifetime_seconds=3600,
        now=NOW,
    )
    clock = Clock()
    clock.now -= CLOCK_SKEW_SECONDS  # as early as the skew allows
    verify = auth.token_verifier(Settings(token_issuers_file=issuers), "record-lookup", clock)
    assert verify(token) == CLINICIAN
    clock.now = NOW.timestamp() + 3600 + CLOCK_SKEW_SECONDS - 1
    assert verify(token) == CLINICIAN
    clock.now += 1
    with pytest.raises(InvalidToken) as expired:
        verify(token)
    assert expired.value.reason == "TOKEN_EXPIRED"
    # Another service's audience is refused, remembered or not.
    other = auth.token_verifier(Settings(token_issuers_file=issuers), "consent", Clock())
    with pytest.raises(InvalidToken):
        other(token)
