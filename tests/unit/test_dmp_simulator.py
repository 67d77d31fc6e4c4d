"""The DMP simulator, driven by a small ITI-41 client written here by hand (not the DUI's DMP client).

The requests are built from IHE ITI TF-3 §4.2 (ebRIM), SOAP 1.2 / MTOM-XOP and the VIHF of DOMAIN.md §4.3; the
VIHF assertion is signed with signxml by the client certificate of the simulator's PKI.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.parser
import email.policy
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from lxml import etree
from signxml import XMLSigner, methods  # type: ignore[attr-defined]

from dui.dmp import simulator_checks as c
from dui.dmp.simulator import ITI41_ACTION, DmpSimulator
from ins.insi.pki import Pki, make_pki

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NSMAP = {"rim": c.NS_RIM, "lcm": c.NS_LCM, "xdsb": c.NS_XDSB, "saml": c.NS_SAML, "rs": c.NS_RS,
         "soap": NS_SOAP, "xop": c.NS_XOP}
MATRICULE = "279035121518989"
INS = f"{MATRICULE}^^^&1.2.250.1.213.1.4.10&ISO^NH"
OTHER_INS = "180012B12345678^^^&1.2.250.1.213.1.4.10&ISO^NH"
RIM = f"{{{c.NS_RIM}}}"


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("dmp-pki"))


@pytest.fixture(scope="module")
def dmp(pki: Pki) -> Iterator[DmpSimulator]:
    with DmpSimulator(pki, timeout_seconds=1.5) as simulator:
        yield simulator


# --- the hand-written client --------------------------------------------------------------------------------

def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, RIM + "Slot", name=name)
    value_list = etree.SubElement(slot, RIM + "ValueList")
    for value in values:
        etree.SubElement(value_list, RIM + "Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    etree.SubElement(etree.SubElement(parent, RIM + "Name"), RIM + "LocalizedString", value=text)


def _classify(parent: etree._Element, scheme: str, code: str, system: str, display: str) -> None:
    node = etree.SubElement(parent, RIM + "Classification", classificationScheme=scheme,
                            classifiedObject=parent.get("id", ""), nodeRepresentation=code,
                            id=f"urn:uuid:{uuid.uuid4()}")
    _slot(node, "codingScheme", system)
    _name(node, display)


def _identify(parent: etree._Element, scheme: str, value: str, name: str) -> None:
    node = etree.SubElement(parent, RIM + "ExternalIdentifier", identificationScheme=scheme, value=value,
                            registryObject=parent.get("id", ""), id=f"urn:uuid:{uuid.uuid4()}")
    _name(node, name)


@dataclass
class Doc:
    entry_uuid: str
    unique_id: str
    content: bytes


def new_doc(content: bytes | None = None) -> Doc:
    unique_id = f"1.2.250.1.999.1.{uuid.uuid4().int % 10**12}"
    return Doc(f"urn:uuid:{uuid.uuid4()}", unique_id, content or f"<ClinicalDocument>{unique_id}</ClinicalDocument>"
               .encode())


def provide_request(doc: Doc, *, patient: str = INS, replaces: str | None = None, inline: bool = False
                    ) -> etree._Element:
    """A ProvideAndRegisterDocumentSetRequest for one DLU document."""
    request = etree.Element(q(c.NS_XDSB, "ProvideAndRegisterDocumentSetRequest"), nsmap={
        "xdsb": c.NS_XDSB, "lcm": c.NS_LCM, "rim": c.NS_RIM, "xop": c.NS_XOP})
    objects = etree.SubElement(etree.SubElement(request, q(c.NS_LCM, "SubmitObjectsRequest")),
                               RIM + "RegistryObjectList")
    entry = etree.SubElement(objects, RIM + "ExtrinsicObject", id=doc.entry_uuid, mimeType="text/xml",
                             objectType=c.DE_STABLE)
    _slot(entry, "creationTime", "20261205101500")
    _slot(entry, "languageCode", "fr-FR")
    _slot(entry, "sourcePatientId", INS.removesuffix("^NH"))
    _slot(entry, "hash", hashlib.sha1(doc.content).hexdigest())
    _slot(entry, "size", str(len(doc.content)))
    _slot(entry, "serviceStartTime", "20261201")
    _name(entry, "Dossier de liaison d'urgence")
    author = etree.SubElement(entry, RIM + "Classification", classificationScheme=c.DE_AUTHOR,
                              classifiedObject=doc.entry_uuid, nodeRepresentation="", id=f"urn:uuid:{uuid.uuid4()}")
    _slot(author, "authorInstitution", "EHPAD Les Tilleuls^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^10000000001")
    _classify(entry, c.DE_CLASS_CODE, "11", "1.2.250.1.213.1.1.4.1", "Synthèse")
    _classify(entry, c.DE_CONFIDENTIALITY_CODE, "N", "2.16.840.1.113883.5.25", "Normal")
    _classify(entry, c.DE_FORMAT_CODE, "urn:asip:ci-sis:dlu:2015", "1.2.250.1.213.1.1.4.2.282", "DLU")
    _classify(entry, c.DE_FACILITY_TYPE_CODE, "SA17", "1.2.250.1.71.4.2.4", "EHPAD")
    _classify(entry, c.DE_PRACTICE_SETTING_CODE, "ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Établissement")
    _classify(entry, c.DE_TYPE_CODE, "74207-2", c.LOINC, "Document de liaison d'urgence")
    _identify(entry, c.DE_PATIENT_ID, patient, "XDSDocumentEntry.patientId")
    _identify(entry, c.DE_UNIQUE_ID, doc.unique_id, "XDSDocumentEntry.uniqueId")
    package = etree.SubElement(objects, RIM + "RegistryPackage", id="SubmissionSet01")
    _slot(package, "submissionTime", "20261205101600")
    _classify(package, c.SS_CONTENT_TYPE_CODE, "11", "1.2.250.1.213.1.1.4.1", "Synthèse")
    _identify(package, c.SS_UNIQUE_ID, f"1.2.250.1.999.2.{uuid.uuid4().int % 10**12}", "XDSSubmissionSet.uniqueId")
    _identify(package, c.SS_SOURCE_ID, "1.2.250.1.999.3", "XDSSubmissionSet.sourceId")
    _identify(package, c.SS_PATIENT_ID, INS, "XDSSubmissionSet.patientId")
    etree.SubElement(objects, RIM + "Classification", classifiedObject="SubmissionSet01",
                     classificationNode=c.SUBMISSION_SET_NODE, id=f"urn:uuid:{uuid.uuid4()}")
    member = etree.SubElement(objects, RIM + "Association", associationType=c.HAS_MEMBER,
                              sourceObject="SubmissionSet01", targetObject=doc.entry_uuid, id="HasMember01")
    _slot(member, "SubmissionSetStatus", "Original")
    if replaces:
        etree.SubElement(objects, RIM + "Association", associationType=c.RPLC, sourceObject=doc.entry_uuid,
                         targetObject=replaces, id="Replace01")
    document = etree.SubElement(request, q(c.NS_XDSB, "Document"), id=doc.entry_uuid)
    if inline:
        document.text = base64.b64encode(doc.content).decode()
    else:
        etree.SubElement(document, q(c.NS_XOP, "Include"), href="cid:doc1%40dui.example")
    return request


def vihf(pki: Pki, *, resource_id: str = INS, signer: tuple[Path, Path] | None = None,
         change: Callable[[dict[str, str]], object] | None = None) -> etree._Element:
    """A VIHF 4.0 SAML assertion, signed (enveloped, exc-c14n, ECDSA-SHA256) by the PKI's client certificate."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    attributes = {
        c.VIHF_VERSION: "4.0", c.AUTH_MODE: "INDIRECTE", c.STRUCTURE_ID: "10000000001",
        c.SECTOR: "SA17^1.2.250.1.71.4.2.4",
        c.SUBJECT_ID: "EHPAD Les Tilleuls", c.RESOURCE_URN: "urn:dmp", c.RESOURCE_ID: resource_id,
        c.LPS_NAME: "DUI EHPAD", c.LPS_VERSION: "0.1.0",
    }
    if change:
        change(attributes)
    saml = f"{{{c.NS_SAML}}}"
    assertion = etree.Element(saml + "Assertion", nsmap={"saml": c.NS_SAML}, ID=f"_{uuid.uuid4().hex}",
                              Version="2.0", IssueInstant=now.isoformat().replace("+00:00", "Z"))
    etree.SubElement(assertion, saml + "Issuer").text = "urn:dui:ehpad:les-tilleuls"
    etree.SubElement(assertion, q(c.NS_DS, "Signature"), nsmap={"ds": c.NS_DS}, Id="placeholder")
    subject = etree.SubElement(assertion, saml + "Subject")
    etree.SubElement(subject, saml + "NameID").text = "EHPAD Les Tilleuls"
    etree.SubElement(assertion, saml + "Conditions",
                     NotBefore=(now - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
                     NotOnOrAfter=(now + dt.timedelta(minutes=10)).isoformat().replace("+00:00", "Z"))
    statement = etree.SubElement(assertion, saml + "AttributeStatement")
    for name, value in attributes.items():
        attribute = etree.SubElement(statement, saml + "Attribute", Name=name)
        etree.SubElement(attribute, saml + "AttributeValue").text = value
    for name, code, system in ((c.SUBJECT_ROLE, "10", "1.2.250.1.213.1.1.4.6"),
                               (c.PURPOSE_OF_USE, "normal", c.PURPOSE_OF_USE_SYSTEM)):
        if name in attributes:
            continue
        value = etree.SubElement(etree.SubElement(statement, saml + "Attribute", Name=name), saml + "AttributeValue")
        etree.SubElement(value, "{urn:hl7-org:v3}Role" if name == c.SUBJECT_ROLE else "{urn:hl7-org:v3}PurposeOfUse",
                         code=code, codeSystem=system)
    cert, key = signer or (pki.client_cert, pki.client_key)
    signed: etree._Element = XMLSigner(method=methods.enveloped, signature_algorithm="ecdsa-sha256",
                                       digest_algorithm="sha256",
                                       c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#").sign(
        assertion, key=key.read_bytes(), cert=cert.read_text())
    return signed


def envelope(request: etree._Element, assertion: etree._Element | None, action: str = ITI41_ACTION) -> bytes:
    root = etree.Element(q(NS_SOAP, "Envelope"), nsmap={"soap": NS_SOAP, "wsa": NS_WSA})
    header = etree.SubElement(root, q(NS_SOAP, "Header"))
    etree.SubElement(header, q(NS_WSA, "Action")).text = action
    etree.SubElement(header, q(NS_WSA, "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
    security = etree.SubElement(header, q(NS_WSSE, "Security"), nsmap={"wsse": NS_WSSE})
    if assertion is not None:
        security.append(assertion)
    etree.SubElement(root, q(NS_SOAP, "Body")).append(request)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def mtom(soap: bytes, content: bytes) -> tuple[bytes, str]:
    boundary = "MIMEBoundary_dui_test"
    body = (
        f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
        f'type="application/soap+xml"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root@dui.example>\r\n\r\n'
    ).encode() + soap + (
        f"\r\n--{boundary}\r\nContent-Type: text/xml\r\nContent-Transfer-Encoding: binary\r\n"
        "Content-ID: <doc1@dui.example>\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    content_type = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
                    f'start="<root@dui.example>"; start-info="application/soap+xml"; action="{ITI41_ACTION}"')
    return body, content_type


@dataclass
class Answer:
    http: requests.Response
    root: etree._Element

    @property
    def status(self) -> str:
        return str(self.root.find(".//rs:RegistryResponse", NSMAP).get("status"))

    @property
    def codes(self) -> list[str]:
        return [str(e.get("errorCode")) for e in self.root.iterfind(".//rs:RegistryError", NSMAP)]

    @property
    def contexts(self) -> str:
        return " | ".join(str(e.get("codeContext")) for e in self.root.iterfind(".//rs:RegistryError", NSMAP))


def post(dmp: DmpSimulator, pki: Pki, body: bytes, content_type: str, *, timeout: float = 10.0,
         cert: tuple[str, str] | None = None) -> Answer:
    response = requests.post(dmp.url, data=body, headers={"Content-Type": content_type}, timeout=timeout,
                             cert=cert or (str(pki.client_cert), str(pki.client_key)), verify=str(pki.ca_cert))
    media = response.headers["Content-Type"]
    data = response.content
    if media.startswith("multipart/related"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {media}\r\n\r\n".encode() + data)
        payload = next(message.iter_parts()).get_payload(decode=True)
        assert isinstance(payload, bytes)
        data = payload
    return Answer(response, etree.fromstring(data))


def submit(dmp: DmpSimulator, pki: Pki, doc: Doc, *, mutate: Callable[[etree._Element], None] | None = None,
           assertion: etree._Element | bool | None = True, timeout: float = 10.0, **kwargs: object) -> Answer:
    request = provide_request(doc, **kwargs)  # type: ignore[arg-type]
    if mutate:
        mutate(request)
    signed = vihf(pki) if assertion is True else None if assertion is False else assertion
    body, content_type = mtom(envelope(request, signed), doc.content)
    return post(dmp, pki, body, content_type, timeout=timeout)


# --- success, duplicates, replacement -----------------------------------------------------------------------

def test_a_valid_submission_is_stored_once(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    answer = submit(dmp, pki, doc)
    assert answer.http.status_code == 200
    assert answer.http.headers["X-Simulator"] == "DMP"
    assert answer.http.headers["Content-Type"].startswith("multipart/related")
    assert answer.status == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success", answer.contexts
    assert dmp.count(doc.unique_id) == 1
    entry = dmp.entry(doc.unique_id)
    assert entry is not None and entry.content == doc.content and entry.format_code == "urn:asip:ci-sis:dlu:2015"
    assert doc.unique_id in [e.unique_id for e in dmp.documents_for(MATRICULE)]
    assert doc.unique_id in [e.unique_id for e in dmp.documents_for(INS)]


def test_plain_soap_with_an_inline_document(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    soap = envelope(provide_request(doc, inline=True), vihf(pki))
    answer = post(dmp, pki, soap, "application/soap+xml; charset=utf-8")
    assert answer.status.endswith(":Success"), answer.contexts
    assert answer.http.headers["Content-Type"].startswith("application/soap+xml")
    assert dmp.count(doc.unique_id) == 1


def test_the_same_document_twice_is_counted_once_and_another_hash_is_a_duplicate(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    assert submit(dmp, pki, doc).status.endswith(":Success")
    again = submit(dmp, pki, doc)
    assert again.status.endswith(":Success"), again.contexts
    assert dmp.count(doc.unique_id) == 1
    changed = Doc(f"urn:uuid:{uuid.uuid4()}", doc.unique_id, b"<ClinicalDocument>another</ClinicalDocument>")
    refused = submit(dmp, pki, changed)
    assert refused.status.endswith(":Failure")
    assert refused.codes == ["XDSDuplicateUniqueIdInRegistry"]
    assert dmp.count(doc.unique_id) == 1


def test_a_replacement_deprecates_the_replaced_document(dmp: DmpSimulator, pki: Pki) -> None:
    first, second = new_doc(), new_doc()
    assert submit(dmp, pki, first).status.endswith(":Success")
    answer = submit(dmp, pki, second, replaces=first.entry_uuid)
    assert answer.status.endswith(":Success"), answer.contexts
    old, new = dmp.entry(first.unique_id), dmp.entry(second.unique_id)
    assert old is not None and old.status == c.DEPRECATED
    assert new is not None and new.status == c.APPROVED and new.replaces == first.entry_uuid
    unknown = submit(dmp, pki, new_doc(), replaces=f"urn:uuid:{uuid.uuid4()}")
    assert unknown.codes == ["XDSRegistryMetadataError"] and "RPLC" in unknown.contexts
    twice = submit(dmp, pki, new_doc(), replaces=first.entry_uuid)  # already deprecated
    assert twice.codes == ["XDSRegistryMetadataError"]


# --- metadata checks ----------------------------------------------------------------------------------------

def _remove(xpath: str) -> Callable[[etree._Element], None]:
    def mutate(request: etree._Element) -> None:
        found = request.xpath(xpath, namespaces=NSMAP)
        assert found, xpath
        for node in found:
            node.getparent().remove(node)
    return mutate


def _set(xpath: str, attribute: str | None, value: str) -> Callable[[etree._Element], None]:
    def mutate(request: etree._Element) -> None:
        found = request.xpath(xpath, namespaces=NSMAP)
        assert found, xpath
        for node in found:
            if attribute is None:
                node.text = value
            else:
                node.set(attribute, value)
    return mutate


EO = "//rim:ExtrinsicObject"
SS = "//rim:RegistryPackage"


@pytest.mark.parametrize(("mutate", "code"), [
    (_remove(f"{EO}/rim:Slot[@name='creationTime']"), "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Slot[@name='languageCode']"), "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Slot[@name='sourcePatientId']"), "XDSRegistryMetadataError"),
    (_set(f"{EO}/rim:Slot[@name='serviceStartTime']//rim:Value", None, "2026-12-01"), "XDSRegistryMetadataError"),
    (_set(f"{EO}/rim:Slot[@name='hash']//rim:Value", None, "0" * 40), "XDSNonIdenticalHash"),
    (_set(f"{EO}/rim:Slot[@name='size']//rim:Value", None, "3"), "XDSNonIdenticalSize"),
    (_remove(f"{EO}/rim:Slot[@name='hash']"), "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Classification[@classificationScheme='{c.DE_CLASS_CODE}']"), "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Classification[@classificationScheme='{c.DE_AUTHOR}']"), "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Classification[@classificationScheme='{c.DE_FACILITY_TYPE_CODE}']"),
     "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Classification[@classificationScheme='{c.DE_PRACTICE_SETTING_CODE}']"),
     "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:Classification[@classificationScheme='{c.DE_CONFIDENTIALITY_CODE}']"),
     "XDSRegistryMetadataError"),
    (_set(f"{EO}/rim:Classification[@classificationScheme='{c.DE_FORMAT_CODE}']", "nodeRepresentation",
          "urn:example:unknown"), "XDSRegistryMetadataError"),
    (_set(f"{EO}/rim:Classification[@classificationScheme='{c.DE_TYPE_CODE}']/rim:Slot//rim:Value", None,
          "1.2.3"), "XDSRegistryMetadataError"),
    (_set(EO, "objectType", "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"), "XDSRegistryMetadataError"),
    (_remove(f"{EO}/rim:ExternalIdentifier[@identificationScheme='{c.DE_UNIQUE_ID}']"), "XDSRegistryMetadataError"),
    (_set(f"{EO}/rim:ExternalIdentifier[@identificationScheme='{c.DE_PATIENT_ID}']", "value", OTHER_INS),
     "XDSPatientIdDoesNotMatch"),
    (_set(f"{EO}/rim:ExternalIdentifier[@identificationScheme='{c.DE_PATIENT_ID}']", "value",
          f"{MATRICULE}^^^&1.2.250.1.213.1.4.2&ISO^NH"), "XDSUnknownPatientId"),
    (_set(f"{EO}/rim:ExternalIdentifier[@identificationScheme='{c.DE_PATIENT_ID}']", "value", MATRICULE),
     "XDSRegistryMetadataError"),
    (_remove(f"{SS}/rim:ExternalIdentifier[@identificationScheme='{c.SS_SOURCE_ID}']"), "XDSRegistryMetadataError"),
    (_remove(f"{SS}/rim:ExternalIdentifier[@identificationScheme='{c.SS_UNIQUE_ID}']"), "XDSRegistryMetadataError"),
    (_remove(f"{SS}/rim:Classification[@classificationScheme='{c.SS_CONTENT_TYPE_CODE}']"),
     "XDSRegistryMetadataError"),
    (_remove(f"//rim:Classification[@classificationNode='{c.SUBMISSION_SET_NODE}']"), "XDSRegistryMetadataError"),
    (_remove("//rim:Association"), "XDSRegistryMetadataError"),
    (_set("//rim:Association/rim:Slot//rim:Value", None, "Reference"), "XDSRegistryMetadataError"),
    (_set("//xop:Include", "href", "cid:nowhere%40dui.example"), "XDSMissingDocument"),
    (_set("//xdsb:Document", "id", "urn:uuid:00000000-0000-4000-8000-000000000000"), "XDSMissingDocumentMetadata"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_each_metadata_check_has_its_xds_error(dmp: DmpSimulator, pki: Pki,
                                              mutate: Callable[[etree._Element], None], code: str) -> None:
    doc = new_doc()
    answer = submit(dmp, pki, doc, mutate=mutate)
    assert answer.http.status_code == 200
    assert answer.status.endswith(":Failure")
    assert answer.codes == [code], answer.contexts
    assert dmp.count(doc.unique_id) == 0


# --- VIHF ---------------------------------------------------------------------------------------------------

def _tampered(pki: Pki) -> etree._Element:
    assertion = vihf(pki)
    value = assertion.find(f".//saml:Attribute[@Name='{c.STRUCTURE_ID}']/saml:AttributeValue", NSMAP)
    value.text = "99999999999"
    return assertion


@pytest.mark.parametrize(("make", "context"), [
    (lambda pki: None, "no SAML 2.0 Assertion"),
    (_tampered, "bad signature"),
    (lambda pki: vihf(pki, signer=(pki.untrusted_client_cert, pki.untrusted_client_key)), "bad signature"),
    (lambda pki: vihf(pki, change=lambda a: a.update({c.VIHF_VERSION: "3.0"})), "VIHF_Version"),
    (lambda pki: vihf(pki, change=lambda a: a.update({c.AUTH_MODE: "DIRECTE"})), "Authentification_Mode"),
    (lambda pki: vihf(pki, change=lambda a: a.update({c.RESOURCE_URN: "urn:other"})), "Ressource_URN"),
    (lambda pki: vihf(pki, change=lambda a: a.update({c.SECTOR: "EHPAD"})), "Secteur_Activite"),
    (lambda pki: vihf(pki, change=lambda a: a.pop(c.STRUCTURE_ID)), "Identifiant_Structure"),
    (lambda pki: vihf(pki, change=lambda a: a.update({c.PURPOSE_OF_USE: "research"})), "purposeofuse"),
    (lambda pki: vihf(pki, resource_id=OTHER_INS), "resource-id"),
], ids=["missing", "tampered", "untrusted-signer", "version", "auth-mode", "urn", "sector", "structure",
        "purpose", "other-patient"])
def test_a_bad_or_missing_vihf_is_an_xds_error(dmp: DmpSimulator, pki: Pki,
                                              make: Callable[[Pki], etree._Element | None], context: str) -> None:
    doc = new_doc()
    assertion = make(pki)
    answer = submit(dmp, pki, doc, assertion=False if assertion is None else assertion)
    assert answer.http.status_code == 200
    assert answer.codes == ["XDSRegistryError"]
    assert "VIHF refused" in answer.contexts and context in answer.contexts, answer.contexts
    assert dmp.count(doc.unique_id) == 0


# --- SOAP and TLS -------------------------------------------------------------------------------------------

def test_another_action_is_a_soap_fault(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    soap = envelope(provide_request(doc), vihf(pki), action="urn:ihe:iti:2007:RetrieveDocumentSet")
    body, content_type = mtom(soap, doc.content)
    response = requests.post(dmp.url, data=body, headers={"Content-Type": content_type}, timeout=10,
                             cert=(str(pki.client_cert), str(pki.client_key)), verify=str(pki.ca_cert))
    assert response.status_code == 400
    fault = etree.fromstring(response.content)
    assert fault.findtext(".//soap:Code/soap:Value", namespaces=NSMAP) == "soap:Sender"
    assert fault.findtext(".//soap:Subcode/soap:Value", namespaces=NSMAP) == "wsa:ActionNotSupported"


def test_a_doctype_is_refused(dmp: DmpSimulator, pki: Pki) -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
    response = requests.post(dmp.url, data=body, headers={"Content-Type": "application/soap+xml"}, timeout=10,
                             cert=(str(pki.client_cert), str(pki.client_key)), verify=str(pki.ca_cert))
    assert response.status_code == 400 and b"DOCTYPE" in response.content


@pytest.mark.parametrize("which", ["none", "untrusted"])
def test_a_client_without_a_certificate_of_the_ca_is_refused_at_tls(dmp: DmpSimulator, pki: Pki, which: str) -> None:
    cert = None if which == "none" else (str(pki.untrusted_client_cert), str(pki.untrusted_client_key))
    before = dmp.received
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(dmp.url, data=b"<x/>", headers={"Content-Type": "application/soap+xml"}, timeout=10,
                      cert=cert, verify=str(pki.ca_cert))
    assert dmp.received == before


# --- faults -------------------------------------------------------------------------------------------------

def test_drop_after_store_then_the_retry_is_counted_once(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    dmp.next_faults(["drop-after-store"])
    with pytest.raises(requests.exceptions.ConnectionError):
        submit(dmp, pki, doc)
    assert dmp.count(doc.unique_id) == 1
    assert submit(dmp, pki, doc).status.endswith(":Success")
    assert dmp.count(doc.unique_id) == 1


def test_a_replacement_retried_after_a_lost_answer_is_a_success(dmp: DmpSimulator, pki: Pki) -> None:
    first, second = new_doc(), new_doc()
    assert submit(dmp, pki, first).status.endswith(":Success")
    dmp.next_faults(["drop-after-store"])
    with pytest.raises(requests.exceptions.ConnectionError):
        submit(dmp, pki, second, replaces=first.entry_uuid)
    retried = submit(dmp, pki, second, replaces=first.entry_uuid)
    assert retried.status.endswith(":Success"), retried.contexts
    assert dmp.count(second.unique_id) == 1
    old = dmp.entry(first.unique_id)
    assert old is not None and old.status == c.DEPRECATED


def test_drop_before_store(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    dmp.next_faults(["drop-before-store"])
    with pytest.raises(requests.exceptions.ConnectionError):
        submit(dmp, pki, doc)
    assert dmp.count(doc.unique_id) == 0


def test_timeout_the_client_gives_up_and_the_document_is_stored(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    dmp.next_faults(["timeout"])
    with pytest.raises(requests.exceptions.Timeout):
        submit(dmp, pki, doc, timeout=0.5)
    assert dmp.count(doc.unique_id) == 1
    time.sleep(1.2)  # the simulator's late answer goes nowhere


def test_http_500_and_refuse_store_nothing(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    dmp.next_faults(["http-500", "refuse"])
    response = requests.post(dmp.url, data=mtom(envelope(provide_request(doc), vihf(pki)), doc.content)[0],
                             headers={"Content-Type": mtom(b"", b"")[1]}, timeout=10,
                             cert=(str(pki.client_cert), str(pki.client_key)), verify=str(pki.ca_cert))
    assert response.status_code == 500
    assert etree.fromstring(response.content).findtext(".//soap:Code/soap:Value", namespaces=NSMAP) == "soap:Receiver"
    refused = submit(dmp, pki, doc)
    assert refused.status.endswith(":Failure") and refused.codes == ["XDSRegistryError"]
    assert dmp.count(doc.unique_id) == 0
    assert submit(dmp, pki, doc).status.endswith(":Success")
    assert dmp.count(doc.unique_id) == 1


def test_unknown_faults_are_refused(dmp: DmpSimulator) -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        dmp.next_faults(["explode"])


def test_a_binary_pdf_attachment_keeps_its_bytes(dmp: DmpSimulator, pki: Pki) -> None:
    content = b"%PDF-1.7\r\n%\xe2\xe3\xcf\xd3\n\x00\x01\r\x0d\x0a\xff--MIMEBoundary\n" + bytes(range(256)) + b"\r\n"
    doc = new_doc(content)
    pdf = _set(f"{EO}/rim:Classification[@classificationScheme='{c.DE_FORMAT_CODE}']", "nodeRepresentation",
               "urn:ihe:iti:xds-sd:pdf:2008")
    answer = submit(dmp, pki, doc, mutate=pdf)
    assert answer.status.endswith(":Success"), answer.contexts
    entry = dmp.entry(doc.unique_id)
    assert entry is not None and entry.content == content and entry.size == len(content)


def test_it_says_it_is_a_simulator_in_its_log(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="dui.dmp.simulator"), DmpSimulator(pki) as simulator:
        assert simulator.url.startswith("https://127.0.0.1:")
    assert "DMP SIMULATOR" in caplog.text and "not the DMP" in caplog.text


def test_a_soap_11_envelope_is_a_version_mismatch(dmp: DmpSimulator, pki: Pki) -> None:
    body = b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>'
    response = requests.post(dmp.url, data=body, headers={"Content-Type": "application/soap+xml"}, timeout=10,
                             cert=(str(pki.client_cert), str(pki.client_key)), verify=str(pki.ca_cert))
    assert response.status_code == 500
    assert response.headers["X-Simulator"] == "DMP"
    code = etree.fromstring(response.content).findtext(".//soap:Code/soap:Value", namespaces=NSMAP)
    assert code == "soap:VersionMismatch"


def test_an_ins_without_a_dmp_is_an_unknown_patient(pki: Pki) -> None:
    with DmpSimulator(pki, patients=["180012B12345678"]) as simulator:
        doc = new_doc()
        answer = submit(simulator, pki, doc)
        assert answer.codes == ["XDSUnknownPatientId"]
        assert simulator.count(doc.unique_id) == 0


def test_an_expired_assertion_is_refused(pki: Pki) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with pytest.raises(c.XdsError, match="not valid now"):
        c.check_vihf(vihf(pki), pki.ca_cert, now=later)
    checked = c.check_vihf(vihf(pki), pki.ca_cert)
    assert checked.resource_id == INS and checked.structure == "10000000001"


def test_concurrent_twins_are_stored_once(dmp: DmpSimulator, pki: Pki) -> None:
    doc = new_doc()
    bodies = [mtom(envelope(provide_request(doc), vihf(pki)), doc.content) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda body: post(dmp, pki, *body), bodies))
    assert all(a.status.endswith(":Success") for a in answers), [a.contexts for a in answers]
    assert dmp.count(doc.unique_id) == 1
