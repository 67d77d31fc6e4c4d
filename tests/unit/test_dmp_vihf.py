"""VIHF 4.0 signed with signxml, verified independently; tampering detected (DOMAIN §4.3)."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from dui.dmp.metadata import Code
from dui.dmp.vihf import RESOURCE_ID, SUBJECT_ROLE, VihfContext, VihfInvalid, sign_vihf, verify_vihf
from tests.dmp_pki import make_dmp_pki

PKI = make_dmp_pki()
CONTEXT = VihfContext(subject_nameid="1690000001", subject_name="EHPAD Les Tilleuls", structure_id="1690000001",
                      sector="SA17^1.2.250.1.71.4.2.4", roles=(Code("10", "1.2.250.1.213.1.1.4.5", "Médecin"),),
                      ins="236056912312345", ins_oid="1.2.250.1.213.1.4.10", lps_name="DUI-EHPAD",
                      lps_version="0.1.0", lps_homologation="NON-HOMOLOGUE")


def _signed() -> bytes:
    return etree.tostring(sign_vihf(CONTEXT, PKI.signing.cert, PKI.signing.key, dt.datetime.now(dt.UTC)))


def test_signed_then_verified() -> None:
    xml = _signed()
    for attributes in (verify_vihf(xml, cert_pem=PKI.signing.cert), verify_vihf(xml, ca_pem=PKI.ca)):
        assert attributes["VIHF_Version"] == ("4.0",)
        assert attributes["Authentification_Mode"] == ("INDIRECTE",)
        assert attributes["Identifiant_Structure"] == ("1690000001",)
        assert attributes["Secteur_Activite"] == ("SA17^1.2.250.1.71.4.2.4",)
        assert attributes[SUBJECT_ROLE] == ("10^Médecin^1.2.250.1.213.1.1.4.5",)
        assert attributes[RESOURCE_ID] == ("236056912312345^^^&1.2.250.1.213.1.4.10&ISO^NH",)
        assert attributes["Ressource_URN"] == ("urn:dmp",)
        assert attributes["urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"] == (
            "normal^Accès normal^1.2.250.1.213.1.1.4.248",)
        assert attributes["LPS_Nom"] == ("DUI-EHPAD",) and attributes["LPS_ID_HOMOLOGATION_DMP"] == ("NON-HOMOLOGUE",)


def test_signature_shape() -> None:
    root = etree.fromstring(_signed())
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    assert root[1].tag == f"{ds}Signature"  # right after Issuer (SAML 2.0 §5.4.1)
    algorithms = {e.tag.removeprefix(ds): e.get("Algorithm") for e in root[1].iter() if e.get("Algorithm")}
    assert algorithms["CanonicalizationMethod"] == "http://www.w3.org/2001/10/xml-exc-c14n#"
    assert algorithms["SignatureMethod"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert root.find(f"{ds}Signature/{ds}SignedInfo/{ds}Reference").get("URI") == "#" + root.get("ID")


def test_tampering_is_detected() -> None:
    xml = _signed()
    with pytest.raises(VihfInvalid):
        verify_vihf(xml.replace(b"236056912312345", b"236056912312346"), cert_pem=PKI.signing.cert)
    with pytest.raises(VihfInvalid):
        verify_vihf(xml.replace(b"INDIRECTE", b"DIRECTE"), ca_pem=PKI.ca)


def test_another_signer_is_refused() -> None:
    xml = _signed()
    with pytest.raises(VihfInvalid):
        verify_vihf(xml, cert_pem=PKI.foreign_signing.cert)
    with pytest.raises(VihfInvalid):
        verify_vihf(xml, ca_pem=PKI.other_ca)
    forged = etree.tostring(sign_vihf(CONTEXT, PKI.foreign_signing.cert, PKI.foreign_signing.key,
                                      dt.datetime.now(dt.UTC)))
    with pytest.raises(VihfInvalid):
        verify_vihf(forged, ca_pem=PKI.ca)
