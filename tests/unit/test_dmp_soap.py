"""SOAP 1.2 / WS-Addressing / WS-Security envelope and MTOM/XOP packaging (W3C XOP, IHE ITI TF-2x App. V)."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree

from dui.dmp import soap
from dui.dmp.ebrim import provide_request
from dui.dmp.errors import Transient
from dui.dmp.metadata import submission_set
from dui.dmp.vihf import sign_vihf, verify_vihf
from tests.unit.dmp_samples import SOURCE_ID, dlu_entry
from tests.unit.test_dmp_vihf import CONTEXT, PKI

NOW = dt.datetime(2026, 3, 12, 11, 0, tzinfo=dt.UTC)


def _message() -> tuple[str, bytes, bytes, str]:
    entry, data = dlu_entry()
    request = provide_request(entry, submission_set(entry, SOURCE_ID, f"{SOURCE_ID}.7", NOW), "doc1@dui")
    assertion = sign_vihf(CONTEXT, PKI.signing.cert, PKI.signing.key, dt.datetime.now(dt.UTC))
    env = soap.envelope(soap.ACTION_PROVIDE, "https://dmp.test/ws", request, assertion)
    xml = etree.tostring(env, encoding="UTF-8", xml_declaration=True)
    content_type, body = soap.mtom_package(xml, soap.ACTION_PROVIDE, {"doc1@dui": (data, "text/xml")})
    return content_type, body, data, entry.hash


def test_mtom_parses_back_with_the_cda_byte_identical() -> None:
    content_type, body, data, digest = _message()
    assert content_type.startswith('multipart/related; type="application/xop+xml"')
    assert "start=" in content_type and "boundary=" in content_type
    message = soap.parse_mtom(content_type, body)
    parts = soap.resolve_includes(message)
    assert parts == {"doc1@dui": data}
    assert hashlib.sha1(parts["doc1@dui"]).hexdigest() == digest and len(parts["doc1@dui"]) == len(data)


def test_envelope_headers_and_the_vihf_still_verifies() -> None:
    content_type, body, _, _ = _message()
    root = etree.fromstring(soap.parse_mtom(content_type, body).root)
    ns = {"s": soap.NS_SOAP, "wsa": soap.NS_WSA, "wsse": soap.NS_WSSE,
          "saml": "urn:oasis:names:tc:SAML:2.0:assertion"}
    assert root.findtext("s:Header/wsa:Action", namespaces=ns) == "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    assert root.findtext("s:Header/wsa:MessageID", namespaces=ns).startswith("urn:uuid:")
    assert root.findtext("s:Header/wsa:To", namespaces=ns) == "https://dmp.test/ws"
    assertion = root.find("s:Header/wsse:Security/saml:Assertion", ns)
    assert verify_vihf(etree.tostring(assertion), ca_pem=PKI.ca)["Ressource_URN"] == ("urn:dmp",)
    assert root.find("s:Body/{urn:ihe:iti:xds-b:2007}ProvideAndRegisterDocumentSetRequest", ns) is not None


def test_plain_soap_and_broken_multipart() -> None:
    assert soap.parse_mtom("application/soap+xml", b"<x/>").root == b"<x/>"
    with pytest.raises(ValueError):
        soap.parse_mtom('multipart/related; boundary="b"', b"--b\r\nContent-ID: <a>\r\n\r\nxx")


def _write_tls(tmp_path: Path) -> tuple[str, str, str, str]:
    (tmp_path / "ca.pem").write_bytes(PKI.ca)
    (tmp_path / "cert.pem").write_bytes(PKI.signing.cert)
    (tmp_path / "key.pem").write_bytes(PKI.signing.key)
    key = serialization.load_pem_private_key(PKI.signing.key, None)
    cert = x509.load_pem_x509_certificate(PKI.signing.cert)
    blob = pkcs12.serialize_key_and_certificates(b"cachet", key, cert, None,  # type: ignore[arg-type]
                                                 serialization.BestAvailableEncryption(b"secret"))
    (tmp_path / "client.p12").write_bytes(blob)
    return str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(
        tmp_path / "client.p12")


def test_tls_context_pem_and_pkcs12(tmp_path: Path) -> None:
    ca, cert, key, p12 = _write_tls(tmp_path)
    assert soap.tls_context(ca, cert, key) is not None
    assert soap.tls_context(ca, p12, passphrase=b"secret") is not None
    with pytest.raises(ValueError):
        soap.tls_context(ca, p12, passphrase=b"wrong")


def test_unreachable_dmp_is_transient(tmp_path: Path) -> None:
    ca, cert, key, _ = _write_tls(tmp_path)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = soap.SoapDmpGateway(f"https://127.0.0.1:{port}/dmp", cert, key, ca, PKI.signing.cert,
                                  PKI.signing.key, 2.0, vihf=CONTEXT, source_id=SOURCE_ID)
    entry, data = dlu_entry()
    with pytest.raises(Transient):
        gateway.provide(entry, data)


def test_check_reads_an_iti18_answer() -> None:
    unknown = b"""<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
      xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
      status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><rs:RegistryErrorList>
      <rs:RegistryError errorCode="XDSUnknownPatientId" codeContext="x"
       severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>
      </query:AdhocQueryResponse>"""
    assert not soap.read_access(unknown).exists
    ok = b"""<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
      status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>"""
    assert soap.read_access(ok).authorized
    query = soap.find_documents("1^^^&1.2&ISO^NH")
    assert query.find(".//{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}AdhocQuery").get("id") == soap.FIND_DOCUMENTS
