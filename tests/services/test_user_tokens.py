"""EdDSA user tokens over real gRPC: identity configured as in production (mTLS, registered
issuers, no development tokens) authenticates a hospital's clinician and refuses every bad
token with UNAUTHENTICATED and nothing that says why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from service_support import (
    TEST_CLIENT,
    RunningServices,
    auth_metadata,
    error_details,
    rpc_error,
)
from service_support import service_settings as make_settings

from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.contracts.tokens import mint_user_token
from healthbank.crypto.pki import engine_common_name
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


@dataclass
class Identity:
    running: RunningServices

    def stub(self, holder: str = TEST_CLIENT) -> identity_pb2_grpc.IdentityServiceStub:
        """A stub presenting ``holder``'s certificate."""
        return identity_pb2_grpc.IdentityServiceStub(
            self.running.channel("identity", holder=holder)
        )


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[Identity]:
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
        yield Identity(running)


async def test_a_registered_hospitals_clinician_is_authenticated(
    identity: Identity,
) -> None:
    # Past authentication: the authorization table answers (clinicians may not read persons).
    error = await rpc_error(identity.stub().GetPerson(GET_PERSON, metadata=bearer(token())))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error).reason == "PRINCIPAL_KIND_NOT_ALLOWED"


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
async def test_bad_user_tokens_are_unauthenticated(identity: Identity, case: str) -> None:
    error = await rpc_error(
        identity.stub().GetPerson(GET_PERSON, metadata=bearer(BAD_TOKENS[case]()))
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    expected = "credentials expired" if case == "expired" else "invalid credentials"
    assert details.message == expected
    assert details.field_violations == []


async def test_development_tokens_are_refused_when_turned_off(
    identity: Identity, tmp_path: Path
) -> None:
    development = auth_metadata(make_settings(tmp_path), CLINICIAN)
    error = await rpc_error(identity.stub().GetPerson(GET_PERSON, metadata=development))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_hospital_engine_token_works_only_over_its_engine_certificate(
    identity: Identity,
) -> None:
    engine = token(Principal(PrincipalKind.HOSPITAL_ENGINE, "engine-1", "hospital-a"))
    own = await rpc_error(
        identity.stub(engine_common_name("hospital-a")).GetPerson(
            GET_PERSON, metadata=bearer(engine)
        )
    )
    # Authenticated; whether an engine may read persons is authorization's answer.
    assert own.code() != grpc.StatusCode.UNAUTHENTICATED
    other = await rpc_error(
        identity.stub(engine_common_name("hospital-b")).GetPerson(
            GET_PERSON, metadata=bearer(engine)
        )
    )
    assert error_details(other).reason == "PEER_MISMATCH"
