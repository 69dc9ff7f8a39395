"""Mutual TLS between services: identity served with a certificate from a local CA, called
by ingest (as ingest would), by the test, and by parties that must be turned away; and the
same with certificates issued by the real OpenBao's PKI engine (ADR 11's recipe)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import hvac
import pytest
from service_support import (
    RunningServices,
    auth_metadata,
    error_details,
    mtls_channel,
    rpc_error,
    service_settings,
)

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.core.config import SERVICE_NAMES, Settings
from healthbank.crypto.pki import create_ca, engine_common_name, issue_certificate
from healthbank.identity.v1 import identity_pb2, identity_pb2_grpc
from healthbank.rpc import service_client_factory
from healthbank.rpc.clients import open_channel
from services.identity.app import open_service as open_identity

INGEST = Principal(PrincipalKind.SERVICE, "ingest", purpose=Purpose.OPERATIONS)
ENGINE_A = Principal(PrincipalKind.HOSPITAL_ENGINE, "engine-1", "hospital-a")
RESOLVE = identity_pb2.ResolveRequest(
    hospital_id="hospital-a", mrn="MRN-0001", national_id="110101199003074514"
)


@dataclass
class Identity:
    running: RunningServices
    settings: Settings
    pki_dir: Path

    @property
    def address(self) -> str:
        return self.running.addresses["identity"]

    def stub(self, channel: grpc.aio.Channel) -> identity_pb2_grpc.IdentityServiceStub:
        self.running.exits.push_async_callback(channel.close)
        return identity_pb2_grpc.IdentityServiceStub(channel)

    def as_holder(self, holder: str) -> identity_pb2_grpc.IdentityServiceStub:
        """A stub presenting ``holder``'s certificate from the services' CA."""
        return self.stub(self.running.channel("identity", holder=holder))


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[Identity]:
    settings = service_settings(tmp_path / "data")
    async with AsyncExitStack() as exits:
        running = RunningServices(exits, pki_dir=tmp_path / "pki")
        await running.start("identity", open_identity(running.settings_of("identity", settings)))
        yield Identity(running, settings, tmp_path / "pki")


async def test_a_service_calls_another_over_mtls(identity: Identity) -> None:
    clients = identity.running.clients(identity.settings, "ingest")
    stub = identity_pb2_grpc.IdentityServiceStub(clients.channel("identity"))
    response = await stub.Resolve(RESOLVE)
    assert len(response.person_token) == 64


async def test_without_development_tokens_the_certificate_alone_names_the_service(
    identity: Identity,
) -> None:
    # How services call each other in production: no token, the certificate says who.
    settings = identity.settings.model_copy(update={"dev_tokens": False})
    clients = identity.running.clients(settings, "ingest")
    stub = identity_pb2_grpc.IdentityServiceStub(clients.channel("identity"))
    assert len((await stub.Resolve(RESOLVE)).person_token) == 64
    # The test's own certificate names no service: the same call without a token is refused.
    refused = await rpc_error(identity.as_holder("client.tests").Resolve(RESOLVE))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_client_without_a_certificate_is_refused(identity: Identity) -> None:
    ca = (identity.pki_dir / "ca.pem").read_bytes()
    no_certificate = grpc.ssl_channel_credentials(root_certificates=ca)
    stub = identity.stub(open_channel(identity.address, credentials=no_certificate))
    error = await rpc_error(
        stub.Resolve(RESOLVE, metadata=auth_metadata(identity.settings, INGEST))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    plaintext = identity.stub(open_channel(identity.address))
    error = await rpc_error(
        plaintext.Resolve(RESOLVE, metadata=auth_metadata(identity.settings, INGEST))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(identity: Identity, tmp_path: Path) -> None:
    other_ca = create_ca("another CA")
    certificate, key = issue_certificate(other_ca, "ingest")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(identity.pki_dir / "ca.pem").read_bytes(),
        private_key=key,
        certificate_chain=certificate,
    )
    stub = identity.stub(open_channel(identity.address, credentials=credentials))
    error = await rpc_error(
        stub.Resolve(RESOLVE, metadata=auth_metadata(identity.settings, INGEST))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The test's client trusts only the services' CA: a server of another CA is refused too.
    stranger = mtls_channel(identity.address, tmp_path / "other-pki")
    error = await rpc_error(
        identity.stub(stranger).Resolve(RESOLVE, metadata=auth_metadata(identity.settings, INGEST))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_service_token_over_another_services_certificate_is_refused(
    identity: Identity,
) -> None:
    stub = identity.as_holder("record-lookup")
    error = await rpc_error(
        stub.Resolve(RESOLVE, metadata=auth_metadata(identity.settings, INGEST))
    )
    details = error_details(error)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "PEER_MISMATCH")
    assert "ingest" not in details.message and "record-lookup" not in details.message
    # The same token over ingest's own certificate is fine.
    response = await identity.as_holder("ingest").Resolve(
        RESOLVE, metadata=auth_metadata(identity.settings, INGEST)
    )
    assert len(response.person_token) == 64


async def test_a_hospital_engine_token_needs_that_hospitals_engine_certificate(
    identity: Identity,
) -> None:
    metadata = auth_metadata(identity.settings, ENGINE_A)
    for holder in (engine_common_name("hospital-b"), "ingest", "client.tests"):
        error = await rpc_error(identity.as_holder(holder).Resolve(RESOLVE, metadata=metadata))
        assert error_details(error).reason == "PEER_MISMATCH", holder
    # Over its own certificate the engine is authenticated; what it may do is authorization's.
    own = await rpc_error(
        identity.as_holder(engine_common_name("hospital-a")).Resolve(RESOLVE, metadata=metadata)
    )
    assert own.code() == grpc.StatusCode.PERMISSION_DENIED
    # The engine certificate alone authenticates the engine too (no token).
    alone = await rpc_error(identity.as_holder(engine_common_name("hospital-a")).Resolve(RESOLVE))
    assert alone.code() == grpc.StatusCode.PERMISSION_DENIED
    # Without a token, a client certificate says nobody in particular.
    nobody = await rpc_error(identity.as_holder("client.tests").Resolve(RESOLVE))
    assert nobody.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
def vault_pki(vault_root: hvac.Client, tmp_path: Path) -> Iterator[Callable[[str], Settings]]:
    """ADR 11's deployment recipe on the real OpenBao: a pki mount with a root CA and one
    role for the services; yields settings_for(service) with a certificate it issued."""
    mount = f"pki-{uuid.uuid4().hex[:12]}"
    vault_root.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "72h"})
    try:
        vault_root.secrets.pki.generate_root(
            "internal", "healthbank test CA", extra_params={"ttl": "72h"}, mount_point=mount
        )
        vault_root.secrets.pki.create_or_update_role(
            "services",
            extra_params={
                "allowed_domains": ",".join(SERVICE_NAMES),
                "allow_bare_domains": True,
                "allow_localhost": True,
                "allow_ip_sans": True,
                "server_flag": True,
                "client_flag": True,
                "key_type": "ec",
                "key_bits": 256,
                "max_ttl": "72h",
            },
            mount_point=mount,
        )

        def settings_for(service: str) -> Settings:
            issued = vault_root.secrets.pki.generate_certificate(
                "services",
                service,
                extra_params={"alt_names": "localhost", "ip_sans": "127.0.0.1", "ttl": "1h"},
                mount_point=mount,
            )["data"]
            folder = tmp_path / "vault-pki" / service
            folder.mkdir(parents=True)
            (folder / "ca.pem").write_text(issued["issuing_ca"])
            (folder / "cert.pem").write_text(issued["certificate"])
            (folder / "key.pem").write_text(issued["private_key"])
            return service_settings(tmp_path / "data").model_copy(
                update={
                    "tls_ca_file": folder / "ca.pem",
                    "tls_cert_file": folder / "cert.pem",
                    "tls_key_file": folder / "key.pem",
                }
            )

        yield settings_for
    finally:
        vault_root.sys.disable_secrets_engine(path=mount)


async def test_certificates_from_vault_pki_work_the_same(
    vault_pki: Callable[[str], Settings],
) -> None:
    async with AsyncExitStack() as exits:
        running = RunningServices(exits)
        await running.start("identity", open_identity(vault_pki("identity")))
        # Production: no development token, the certificate names the calling service.
        ingest = vault_pki("ingest").model_copy(update={"dev_tokens": False})
        clients = service_client_factory(ingest, "ingest", addresses=running.addresses)
        exits.push_async_callback(clients.close)
        stub = identity_pb2_grpc.IdentityServiceStub(clients.channel("identity"))
        assert len((await stub.Resolve(RESOLVE)).person_token) == 64
