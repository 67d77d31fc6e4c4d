"""A throw-away RSA PKI for the DMP tests: a CA, a "cachet" certificate for the VIHF, a TLS client certificate,
and a certificate from another CA. FOR TESTS ONLY."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class DmpPki:
    ca: bytes
    signing: Pair
    other_ca: bytes
    foreign_signing: Pair


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DUI EHPAD tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey,
          ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = (builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ehpad-tilleuls.test")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    return key, _cert(cn, key, _name(cn), key, ca=True)


def make_dmp_pki() -> DmpPki:
    ca_key, ca_cert = _ca("AC de test DMP")
    other_key, other_cert = _ca("Autre AC")
    signing_key, foreign_key = _key(), _key()
    signing = _cert("EHPAD Les Tilleuls - cachet (tests)", signing_key, ca_cert.subject, ca_key, ca=False)
    foreign = _cert("EHPAD Les Tilleuls - cachet (tests)", foreign_key, other_cert.subject, other_key, ca=False)
    pem = serialization.Encoding.PEM
    return DmpPki(ca=ca_cert.public_bytes(pem), signing=Pair(signing.public_bytes(pem), _pem_key(signing_key)),
                  other_ca=other_cert.public_bytes(pem),
                  foreign_signing=Pair(foreign.public_bytes(pem), _pem_key(foreign_key)))
