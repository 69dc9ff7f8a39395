"""EdDSA user tokens over real gRPC: identity configured as in production (mTLS, registered
issuers, no development tokens) authenticates a hospital's clinician and refuses every bad
token with UNAUTHENTICATED and nothing that says why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from service_support import RunningServices, auth_metadata, error_details, rpc_error
from service_support import service_settings as make_settings

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.contracts.tokens import mint_user_token
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from services.identity.app import open_service as open_identity

HOSPITAL_KEY = Ed25519PrivateKey.generate()
CLINICIAN = Principal(PrincipalKind.CLINICIAN, "dr-1", "hospital-a")
GET_PERSON = identity_pb2.GetPersonRequest(name="persons/" + "a" * 64)


def token(
    principal: Principal = CLINICIAN,
    *,
    key: Ed25519PrivateKey = HOSPITAL_KEY,
    issuer_id: str = "hospital-a",
    audience: str = "identity",
    lifetime: int = 3600,
    issued_ago: timedelta = timedelta(0),
) -> str:
    return mint_user_token(
        principal,
        issuer_id=issuer_id,
        key=key,
        audience=audience,
        lifetime_seconds=lifetime,
        now=datetime.now(UTC) - issued_ago,
    )


def bearer(jwt: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {jwt}"),)


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[identity_pb2_grpc.IdentityServiceStub]:
    issuers = tmp_path / "issuers.json"
    public_pem = HOSPITAL_KEY.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    issuers.write_text(
        json.dumps(
            {
                "issuers": {
                    "hospital-a": {"public_key": public_pem.decode(), "hospital_id": "hospital-a"}
                }
            }
        )
    )
    settings = make_settings(
        tmp_path / "data",
        {"HEALTHBANK_DEV_TOKENS": "false", "HEALTHBANK_TOKEN_ISSUERS_FILE": str(issuers)},
    )
    async with AsyncExitStack() as exits:
        running = RunningServices(exits, pki_dir=tmp_path / "pki")
        await running.start("identity", open_identity(running.settings_of("identity", settings)))
        yield identity_pb2_grpc.IdentityServiceStub(running.channel("identity"))


async def test_a_registered_hospitals_clinician_is_authenticated(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    # Past authentication: the person is simply unknown.
    error = await rpc_error(identity.GetPerson(GET_PERSON, metadata=bearer(token())))
    assert error.code() == grpc.StatusCode.NOT_FOUND


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: token(issued_ago=timedelta(hours=2), lifetime=3600),
    "not yet valid beyond the skew": lambda: token(issued_ago=-timedelta(minutes=5)),
    "longer than a clinician may hold one": lambda: token(lifetime=13 * 3600),
    "for another service": lambda: token(audience="record-lookup"),
    "from an unknown issuer": lambda: token(issuer_id="hospital-z"),
    "signed with another key": lambda: token(key=Ed25519PrivateKey.generate()),
    "a clinician of another hospital": lambda: token(
        Principal(PrincipalKind.CLINICIAN, "dr-2", "hospital-b")
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_user_tokens_are_unauthenticated(
    identity: identity_pb2_grpc.IdentityServiceStub, case: str
) -> None:
    error = await rpc_error(identity.GetPerson(GET_PERSON, metadata=bearer(BAD_TOKENS[case]())))
    details = error_details(error)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    expected = "credentials expired" if case == "expired" else "invalid credentials"
    assert details.message == expected
    assert details.field_violations == []


async def test_development_tokens_are_refused_when_turned_off(
    identity: identity_pb2_grpc.IdentityServiceStub, tmp_path: Path
) -> None:
    development = auth_metadata(make_settings(tmp_path), CLINICIAN)
    error = await rpc_error(identity.GetPerson(GET_PERSON, metadata=development))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
