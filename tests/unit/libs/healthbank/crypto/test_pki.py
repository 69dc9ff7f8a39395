"""The local CA: certificates name their holder, chain to the CA, and keys stay private."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from healthbank.crypto.pki import engine_common_name, write_local_pki


def test_a_certificate_per_holder_signed_by_one_ca(tmp_path: Path) -> None:
    issued = write_local_pki(tmp_path, ["ingest", engine_common_name("hospital-a")])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    for name, files in issued.items():
        certificate = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        certificate.verify_directly_issued_by(ca)
        [common_name] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert common_name.value == name
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert name in names.value.get_values_for_type(x509.DNSName)
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
        assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    assert issued[engine_common_name("hospital-a")].cert_file.name == "engine.hospital-a.pem"


def test_an_existing_ca_and_certificates_are_reused(tmp_path: Path) -> None:
    first = write_local_pki(tmp_path, ["audit"])["audit"].cert_file.read_bytes()
    ca = (tmp_path / "ca.pem").read_bytes()
    again = write_local_pki(tmp_path, ["audit", "consent"])
    assert again["audit"].cert_file.read_bytes() == first
    assert (tmp_path / "ca.pem").read_bytes() == ca
    consent = x509.load_pem_x509_certificate(again["consent"].cert_file.read_bytes())
    consent.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
