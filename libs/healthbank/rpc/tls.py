"""Mutual TLS: credentials from the settings, and who the verified peer certificate names.

A process with ``HEALTHBANK_TLS_CA_FILE``/``_CERT_FILE``/``_KEY_FILE`` serves only clients
presenting a certificate from that CA and dials with its own. The server then knows the
peer (:func:`peer_identity`, from the certificate's common name, see
:mod:`healthbank.crypto.pki` for the naming) and :func:`bind_principal` holds the token's
principal to it: a service principal must come over that service's certificate, a hospital
engine's over that hospital's engine certificate. A call without a token over a service
certificate is that service (how services call each other without development tokens), and
over an engine certificate that hospital's engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped, unused-ignore]

from healthbank.contracts.principal import Principal, PrincipalKind, Purpose
from healthbank.crypto.pki import CLIENT_PREFIX, ENGINE_PREFIX, engine_common_name
from healthbank.rpc.authz import INTERNAL_SERVICES
from healthbank.rpc.errors import ServiceError

__all__ = [
    "Peer",
    "PeerKind",
    "TlsSettings",
    "bind_principal",
    "channel_credentials",
    "peer_identity",
    "server_credentials",
]


class TlsSettings(Protocol):
    """The TLS part of ``healthbank.core.config.Settings``."""

    @property
    def tls_ca_file(self) -> Path | None:
        """The CA bundle peers' certificates must chain to (None: plaintext)."""
        ...

    @property
    def tls_cert_file(self) -> Path | None:
        """This process's certificate."""
        ...

    @property
    def tls_key_file(self) -> Path | None:
        """This process's private key."""
        ...


class PeerKind(StrEnum):
    """What a verified client certificate says its holder is."""

    SERVICE = "service"
    HOSPITAL_ENGINE = "hospital_engine"
    CLIENT = "client"


@dataclass(frozen=True)
class Peer:
    """The holder of a verified client certificate: a service, an engine of ``name`` (the
    hospital id), or another client."""

    kind: PeerKind
    name: str


def _files(settings: TlsSettings) -> tuple[bytes, bytes, bytes] | None:
    if settings.tls_ca_file is None or settings.tls_cert_file is None:
        return None
    if settings.tls_key_file is None:
        return None
    return (
        settings.tls_ca_file.read_bytes(),
        settings.tls_cert_file.read_bytes(),
        settings.tls_key_file.read_bytes(),
    )


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """mTLS server credentials requiring a client certificate; None when TLS is off."""
    files = _files(settings)
    if files is None:
        return None
    ca, certificate, key = files
    return grpc.ssl_server_credentials(
        [(key, certificate)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(settings: TlsSettings) -> grpc.ChannelCredentials | None:
    """Channel credentials presenting this process's certificate; None when TLS is off."""
    files = _files(settings)
    if files is None:
        return None
    ca, certificate, key = files
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=certificate
    )


def peer_identity(context: Any) -> Peer | None:
    """The verified client certificate's holder; None on a plaintext connection."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or ()
    if not names:
        return None
    common_name = names[0].decode("utf-8", "replace")
    # The service identities are the authorization table's (the seven services and jobs).
    if common_name in INTERNAL_SERVICES:
        return Peer(PeerKind.SERVICE, common_name)
    if common_name.startswith(ENGINE_PREFIX):
        return Peer(PeerKind.HOSPITAL_ENGINE, common_name.removeprefix(ENGINE_PREFIX))
    return Peer(PeerKind.CLIENT, common_name.removeprefix(CLIENT_PREFIX))


def bind_principal(principal: Principal | None, peer: Peer | None) -> Principal | None:
    """The call's principal given its token's ``principal`` and the certificate's ``peer``.

    Raises:
        ServiceError: UNAUTHENTICATED (reason ``PEER_MISMATCH``) when a service or hospital
            engine principal arrives over a certificate that is not its own.
    """
    if peer is None:
        return principal
    if principal is None:
        # The certificate alone names a service or a hospital's engine; anyone else needs
        # a token to say who they are.
        if peer.kind == PeerKind.SERVICE:
            return Principal(PrincipalKind.SERVICE, peer.name, purpose=Purpose.OPERATIONS)
        if peer.kind == PeerKind.HOSPITAL_ENGINE:
            return Principal(
                PrincipalKind.HOSPITAL_ENGINE,
                engine_common_name(peer.name),
                hospital_id=peer.name,
                purpose=Purpose.OPERATIONS,
            )
        return None
    if principal.kind == PrincipalKind.SERVICE:
        matches = peer.kind == PeerKind.SERVICE and peer.name == principal.subject
    elif principal.kind == PrincipalKind.HOSPITAL_ENGINE:
        matches = peer.kind == PeerKind.HOSPITAL_ENGINE and peer.name == principal.hospital_id
    else:
        # People's tokens come through a front end or are forwarded by a service.
        matches = True
    if not matches:
        raise ServiceError.unauthenticated(
            "credentials do not match the client certificate", reason="PEER_MISMATCH"
        )
    return principal
