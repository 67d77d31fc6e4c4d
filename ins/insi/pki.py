"""A throw-away PKI for the INSi simulator: FOR DEVELOPMENT AND TESTS ONLY.

It plays the roles the IGC-Santé and the CNAM play in production: a CA, a server certificate for the
simulator (``localhost`` and ``127.0.0.1``), a client certificate standing for the structure's
"INSI-AUTO" cachet certificate, and a second CA with a client certificate of its own, which the
simulator must refuse. Keys are EC P-256, written unencrypted (mode 0600). Never use any of it in
production: the real client certificate comes from the IGC-Santé and the real trust anchors from
the CNAM.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_COMMON_NAME = "EHPAD DEMO - INSI-AUTO (simulateur)"
_ORGANIZATION = "DUI EHPAD - PKI de developpement (ne pas utiliser en production)"
_VALIDITY = dt.timedelta(days=825)
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of a development PKI."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path
    other_ca_cert: Path


def _paths(directory: Path) -> Pki:
    return Pki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        untrusted_client_cert=directory / "untrusted-client.pem",
        untrusted_client_key=directory / "untrusted-client-key.pem",
        other_ca_cert=directory / "other-ca.pem",
    )


def make_pki(directory: Path) -> Pki:
    """Create the PKI in ``directory``, or reuse the one already there while its certificates are valid.

    Safe when several processes start at once (server workers): they take turns on a lock file, and
    the first one creates what the others then reuse.
    """
    pki = _paths(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(pki):
            _create(pki)
    return pki


def _create(pki: Pki) -> None:
    ca_key, ca_cert = _ca("DUI EHPAD - AC de test INSi (simulateur)")
    other_key, other_cert = _ca("Autre AC (non reconnue par le simulateur)")
    server_key, server_cert = _leaf("localhost", ca_key, ca_cert, server=True)
    client_key, client_cert = _leaf(CLIENT_COMMON_NAME, ca_key, ca_cert, server=False)
    rogue_key, rogue_cert = _leaf(CLIENT_COMMON_NAME, other_key, other_cert, server=False)
    _write_cert(pki.ca_cert, ca_cert)
    _write_cert(pki.other_ca_cert, other_cert)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.server_cert, server_cert)
    _write_key(pki.client_key, client_key)
    _write_cert(pki.client_cert, client_cert)
    _write_key(pki.untrusted_client_key, rogue_key)
    _write_cert(pki.untrusted_client_cert, rogue_cert)


def _usable(pki: Pki) -> bool:
    paths: list[Path] = [getattr(pki, f.name) for f in fields(pki)]
    if not all(p.is_file() for p in paths):
        return False
    deadline = dt.datetime.now(dt.UTC) + _RENEW_BEFORE
    try:
        certs = [x509.load_pem_x509_certificate(p.read_bytes()) for p in paths if not p.name.endswith("-key.pem")]
    except ValueError:
        return False
    return all(c.not_valid_after_utc > deadline for c in certs)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(common_name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *,
          server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key())
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_atomically(path, pem, 0o600)
