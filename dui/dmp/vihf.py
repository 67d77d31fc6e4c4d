"""The VIHF 4.0 (Vecteur d'Identification et d'Habilitation Formelle): a SAML 2.0 assertion, signed with the
structure's "cachet" certificate, that the DMP reads in the WS-Security header (DOMAIN §4.3; CI-SIS "Volet
Transport synchrone pour client lourd" and HL7V2-CDA mapping.md for the attribute list).

Signature: XML-DSig enveloped, exclusive canonicalization, RSA-SHA256 and SHA-256 digests (``signxml``), placed
after ``Issuer`` as SAML 2.0 §5.4.1 requires, over the assertion's ``ID``.

UNCONFIRMED against the CNAM guide (docs/dmp.md): the ``Mode_Acces`` attribute, the exact form of the role and of
``Identifiant_Structure`` for an EHPAD (we send the FINESS idNat), the NameID format and the validity window.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import uuid
import warnings
from dataclasses import dataclass

from lxml import etree

from dui.dmp.metadata import Code, cx
from dui.fhir.xmlsafe import parse_untrusted

with warnings.catch_warnings():
    # signxml's annotations name DSA keys, which cryptography deprecates at attribute access
    warnings.simplefilter("ignore")
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
    from signxml.exceptions import InvalidInput, InvalidSignature
    from signxml.signer import XMLSigner
    from signxml.verifier import XMLVerifier

NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_HL7 = "urn:hl7-org:v3"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
SUBJECT_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:hl7:confidentiality-code"
PURPOSE_NORMAL = Code("normal", "1.2.250.1.213.1.1.4.248", "Accès normal")
SECRET_CONNECTION = Code("CONNEXION_SECRETE", "1.2.250.1.213.1.1.4.13", "Connexion secrète")  # UNCONFIRMED
VALIDITY = dt.timedelta(minutes=5)
_CE_ATTRIBUTES = {SUBJECT_ROLE: "Role", PURPOSE_OF_USE: "PurposeOfUse", CONFIDENTIALITY: "ConfidentialityCode"}


class VihfInvalid(ValueError):
    """The assertion is not a VIHF signed by the expected certificate, or it was altered."""


@dataclass(frozen=True)
class VihfContext:
    """Who asks, on behalf of which structure, for which patient: the facts of one VIHF.

    ``subject_nameid``: idNat of the user (or of the structure in ``INDIRECTE`` mode); ``subject_name``: its display
    name; ``structure_id``: Identifiant_Structure (idNat of the EHPAD, FINESS based); ``sector``: Secteur_Activite
    (``SA17^1.2.250.1.71.4.2.4``); ``roles``: subject:role (the first mandatory; a second for médecins/pharmaciens).
    """

    subject_nameid: str
    subject_name: str
    structure_id: str
    sector: str
    roles: tuple[Code, ...]
    ins: str
    ins_oid: str
    lps_name: str
    lps_version: str
    lps_homologation: str
    authentication_mode: str = "INDIRECTE"
    access_mode: str | None = None  # Mode_Acces (e.g. NORMAL / CENTRE15 / BRIS_DE_GLACE): UNCONFIRMED
    secret_connection: bool = False
    purpose: Code = PURPOSE_NORMAL


def _saml(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{NS_SAML}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def _attribute(statement: etree._Element, name: str, *values: str | Code) -> None:
    attribute = _saml(statement, "Attribute", Name=name)
    for value in values:
        holder = _saml(attribute, "AttributeValue")
        if isinstance(value, Code):
            etree.SubElement(holder, f"{{{NS_HL7}}}{_CE_ATTRIBUTES.get(name, 'Code')}",
                             {f"{{{NS_XSI}}}type": "CE", "code": value.code, "codeSystem": value.scheme,
                              **({"displayName": value.display} if value.display else {})})
        else:
            holder.text = value


def build_assertion(context: VihfContext, issuer: str, now: dt.datetime) -> etree._Element:
    """The unsigned assertion (with the ``ds:Signature`` placeholder where the signature goes)."""
    instant = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assertion = etree.Element(f"{{{NS_SAML}}}Assertion", {"ID": f"_{uuid.uuid4()}", "IssueInstant": instant,
                                                          "Version": "2.0"},
                              nsmap={"saml2": NS_SAML, "hl7": NS_HL7, "xsi": NS_XSI})
    _saml(assertion, "Issuer", issuer, Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName")
    etree.SubElement(assertion, f"{{{NS_DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": NS_DS})
    subject = _saml(assertion, "Subject")
    _saml(subject, "NameID", context.subject_nameid, Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified")
    _saml(subject, "SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:sender-vouches")
    _saml(assertion, "Conditions", NotBefore=instant,
          NotOnOrAfter=(now + VALIDITY).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    authn = _saml(assertion, "AuthnStatement", AuthnInstant=instant)
    _saml(_saml(authn, "AuthnContext"), "AuthnContextClassRef", "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient")
    statement = _saml(assertion, "AttributeStatement")
    _attribute(statement, "VIHF_Version", "4.0")
    _attribute(statement, "Authentification_Mode", context.authentication_mode)
    _attribute(statement, "Identifiant_Structure", context.structure_id)
    _attribute(statement, "Secteur_Activite", context.sector)
    _attribute(statement, SUBJECT_ID, context.subject_name)
    _attribute(statement, SUBJECT_ROLE, *context.roles)
    _attribute(statement, PURPOSE_OF_USE, context.purpose)
    _attribute(statement, RESOURCE_ID, cx(context.ins, context.ins_oid))
    _attribute(statement, "Ressource_URN", "urn:dmp")
    if context.access_mode:
        _attribute(statement, "Mode_Acces", context.access_mode)
    if context.secret_connection:
        _attribute(statement, CONFIDENTIALITY, SECRET_CONNECTION)
    _attribute(statement, "LPS_Nom", context.lps_name)
    _attribute(statement, "LPS_Version", context.lps_version)
    _attribute(statement, "LPS_ID_HOMOLOGATION_DMP", context.lps_homologation)
    return assertion


def sign_vihf(context: VihfContext, cert_pem: bytes, key_pem: bytes, now: dt.datetime,
              passphrase: bytes | None = None) -> etree._Element:
    """The VIHF of ``context`` signed with the structure's certificate (``cert_pem``) and RSA key (``key_pem``)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    assertion = build_assertion(context, cert.subject.rfc4514_string(), now)
    signer = XMLSigner(signature_algorithm=SignatureMethod.RSA_SHA256, digest_algorithm=DigestAlgorithm.SHA256,
                       c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
    signed: etree._Element = signer.sign(assertion, key=key_pem, passphrase=passphrase, cert=cert_pem.decode("ascii"),
                                         reference_uri="#" + assertion.get("ID"), id_attribute="ID")
    return signed


def _value(holder: etree._Element) -> str:
    coded = next((child for child in holder if isinstance(child.tag, str)), None)
    if coded is not None:
        return f"{coded.get('code')}^{coded.get('displayName') or ''}^{coded.get('codeSystem')}"
    return (holder.text or "").strip()


def verify_vihf(xml: bytes, cert_pem: bytes | None = None, ca_pem: bytes | None = None) -> dict[str, tuple[str, ...]]:
    """The attributes (name → values; a coded value as ``code^display^codeSystem``) of the signed VIHF ``xml``.

    The signature must be by ``cert_pem``, or by a certificate (carried in KeyInfo) that ``ca_pem`` issued. Only what
    the signature covers is read. Raises ``VihfInvalid``.
    """
    if (cert_pem is None) == (ca_pem is None):
        raise ValueError("give exactly one of cert_pem and ca_pem")
    root = parse_untrusted(xml)
    with tempfile.TemporaryDirectory() as private:
        ca_file = None
        if ca_pem is not None:  # signxml reads the trust anchors from a file
            ca_file = os.path.join(private, "ca.pem")
            with open(ca_file, "wb") as out:
                out.write(ca_pem)
        try:
            result = XMLVerifier().verify(root, x509_cert=cert_pem.decode("ascii") if cert_pem else None,
                                          ca_pem_file=ca_file, id_attribute="ID")
        except (InvalidSignature, InvalidInput) as exc:
            raise VihfInvalid(f"the VIHF signature does not verify: {exc}") from None
    signed = result.signed_xml if not isinstance(result, list) else None
    if signed is None or signed.tag != f"{{{NS_SAML}}}Assertion":
        raise VihfInvalid("the signature does not cover the assertion")
    attributes: dict[str, tuple[str, ...]] = {}
    for attribute in signed.iterfind(f"{{{NS_SAML}}}AttributeStatement/{{{NS_SAML}}}Attribute"):
        values = tuple(_value(v) for v in attribute.iterfind(f"{{{NS_SAML}}}AttributeValue"))
        attributes[attribute.get("Name", "")] = values
    if attributes.get("VIHF_Version") != ("4.0",):
        raise VihfInvalid("not a VIHF 4.0")
    return attributes
