"""A local certificate authority for mutual TLS between services (development and tests).

:func:`create_ca` makes a self-signed CA; :func:`issue_certificate` signs one certificate
per party. The common name says who the holder is, and the server reads it back from the
verified peer certificate (``healthbank.rpc.tls.peer_identity``):

- a service: its name (``ingest``, ``record-lookup`` ...);
- a hospital's integration engine: ``engine.<hospital_id>`` (:func:`engine_common_name`);
- any other client (a front end, the demo, an operator's tool): ``client.<name>``.

Certificates carry the common name as a DNS name too (clients check the server they reach
is the service they meant) plus ``localhost`` and 127.0.0.1, and may serve and dial.
Deployments issue the same names from Vault/OpenBao PKI instead (docs/adr/0011).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CLIENT_PREFIX",
    "ENGINE_PREFIX",
    "CertificateAuthority",
    "IssuedFiles",
    "create_ca",
    "engine_common_name",
    "issue_certificate",
    "write_local_pki",
]

ENGINE_PREFIX = "engine."
CLIENT_PREFIX = "client."

# Local certificates outlive any development session; deployments rotate theirs (Vault PKI).
_VALIDITY = timedelta(days=365)
# Tolerate a peer whose clock is a little behind the one that issued the certificate.
_BACKDATE = timedelta(minutes=5)


def engine_common_name(hospital_id: str) -> str:
    """The common name of ``hospital_id``'s integration engine certificate."""
    return ENGINE_PREFIX + hospital_id


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA's certificate and signing key (PEM)."""

    certificate_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class IssuedFiles:
    """Where one party's CA bundle, certificate and key were written."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: supported by every TLS stack gRPC builds on, and quick to generate.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(
    name: str = "healthbank local CA", now: datetime | None = None
) -> CertificateAuthority:
    """A new self-signed certificate authority."""
    moment = now or datetime.now(UTC)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - _BACKDATE)
        .not_valid_after(moment + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_certificate(
    ca: CertificateAuthority, common_name: str, now: datetime | None = None
) -> tuple[bytes, bytes]:
    """A certificate for ``common_name`` signed by ``ca``: (certificate PEM, key PEM)."""
    moment = now or datetime.now(UTC)
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key made by create_ca")
    key = _new_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - _BACKDATE)
        .not_valid_after(moment + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(common_name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_local_pki(directory: Path, common_names: list[str]) -> dict[str, IssuedFiles]:
    """Create a CA in ``directory`` (kept if one is there) and a certificate per name.

    Files: ``ca.pem``, ``ca-key.pem``, ``<name>.pem``, ``<name>-key.pem`` (keys 0600).
    Returns each name's files; certificates already present are reused.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key_file = directory / "ca.pem", directory / "ca-key.pem"
    if ca_file.exists() and ca_key_file.exists():
        ca = CertificateAuthority(ca_file.read_bytes(), ca_key_file.read_bytes())
    else:
        ca = create_ca()
        _write(ca_key_file, ca.key_pem, secret=True)
        _write(ca_file, ca.certificate_pem)
    issued: dict[str, IssuedFiles] = {}
    for name in common_names:
        files = IssuedFiles(ca_file, directory / f"{name}.pem", directory / f"{name}-key.pem")
        if not (files.cert_file.exists() and files.key_file.exists()):
            certificate_pem, key_pem = issue_certificate(ca, name)
            _write(files.key_file, key_pem, secret=True)
            _write(files.cert_file, certificate_pem)
        issued[name] = files
    return issued


def _write(path: Path, content: bytes, *, secret: bool = False) -> None:
    # Keys are created owner-only, never readable for a moment in between.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
