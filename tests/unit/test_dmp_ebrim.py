"""ITI-41 ebRIM request and RegistryResponse (IHE ITI TF-2b §3.41, TF-3 §4.2.3, Table 4.2.5-1; ITI-57 TF-3 §4.2.2.2)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from lxml import etree

from dui.dmp import ebrim
from dui.dmp.metadata import ARCHIVED, submission_set
from tests.unit.dmp_samples import SOURCE_ID, dlu_entry

NS = {"rim": ebrim.NS_RIM, "lcm": ebrim.NS_LCM, "xdsb": ebrim.NS_XDSB, "xop": ebrim.NS_XOP}
NOW = dt.datetime(2026, 3, 12, 11, 0, tzinfo=dt.UTC)


def _request(replaces: str | None = None) -> tuple[etree._Element, str, str]:
    entry, _ = dlu_entry(masking=("MASQUE_PS",))
    submission = submission_set(entry, SOURCE_ID, f"{SOURCE_ID}.7", NOW)
    return ebrim.provide_request(entry, submission, "doc1@dui", replaces), entry.entry_uuid, submission.entry_uuid


def _scheme_values(obj: etree._Element, attribute: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for node in obj.iterfind("rim:Classification", NS):
        found.setdefault(node.get("classificationScheme"), []).append(node.get(attribute))
    return found


def test_extrinsic_object_classifications_and_identifiers() -> None:
    request, entry_id, _ = _request()
    [obj] = request.findall(".//rim:ExtrinsicObject", NS)
    assert obj.get("id") == entry_id and obj.get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    assert obj.get("mimeType") == "text/xml"
    codes = _scheme_values(obj, "nodeRepresentation")
    assert codes == {
        "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d": [""],
        "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a": ["11"],
        "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f": ["N", "MASQUE_PS"],
        "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d": ["urn:asip:ci-sis:dlu:2015"],
        "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1": ["SA17"],
        "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead": ["ETABLISSEMENT"],
        "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983": ["74207-2"],
    }
    assert all(c.get("classifiedObject") == entry_id for c in obj.iterfind("rim:Classification", NS))
    masking = obj.find("rim:Classification[@nodeRepresentation='MASQUE_PS']/rim:Slot/rim:ValueList/rim:Value", NS)
    assert masking.text == "1.2.250.1.213.1.1.4.13"
    ids = {e.get("identificationScheme"): e.get("value") for e in obj.iterfind("rim:ExternalIdentifier", NS)}
    assert ids == {"urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427": "236056912312345^^^&1.2.250.1.213.1.4.10&ISO^NH",
                   "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab": "1.2.250.1.999.1.2^DLU-p1-3"}
    slots = {s.get("name"): [v.text for v in s.iterfind("rim:ValueList/rim:Value", NS)]
             for s in obj.iterfind("rim:Slot", NS)}
    assert set(slots) == {"creationTime", "hash", "languageCode", "legalAuthenticator", "serviceStartTime", "size",
                          "sourcePatientId"}
    author = obj.find("rim:Classification[@classificationScheme='urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d']", NS)
    assert {s.get("name") for s in author.iterfind("rim:Slot", NS)} == {
        "authorPerson", "authorInstitution", "authorSpecialty"}


def test_submission_set_package_and_association() -> None:
    request, entry_id, set_id = _request()
    [package] = request.findall(".//rim:RegistryPackage", NS)
    assert package.get("id") == set_id
    ids = {e.get("identificationScheme"): e.get("value") for e in package.iterfind("rim:ExternalIdentifier", NS)}
    assert ids == {"urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8": f"{SOURCE_ID}.7",
                   "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832": SOURCE_ID,
                   "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446": "236056912312345^^^&1.2.250.1.213.1.4.10&ISO^NH"}
    assert set(_scheme_values(package, "nodeRepresentation")) == {
        "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d", "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"}
    node = request.find(".//rim:RegistryObjectList/rim:Classification", NS)
    assert (node.get("classificationNode"), node.get("classifiedObject")) == (
        "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", set_id)
    [member] = request.findall(".//rim:Association", NS)
    assert (member.get("associationType"), member.get("sourceObject"), member.get("targetObject")) == (
        ebrim.HAS_MEMBER, set_id, entry_id)
    include = request.find("xdsb:Document/xop:Include", NS)
    assert include.get("href") == "cid:doc1@dui"
    assert request.find("xdsb:Document", NS).get("id") == entry_id


def test_replacement_has_an_rplc_association() -> None:
    request, entry_id, _ = _request(replaces="urn:uuid:11111111-2222-3333-4444-555555555555")
    rplc = request.find(f".//rim:Association[@associationType='{ebrim.RPLC}']", NS)
    assert (rplc.get("sourceObject"), rplc.get("targetObject")) == (
        entry_id, "urn:uuid:11111111-2222-3333-4444-555555555555")


def test_update_request_new_version_and_status() -> None:
    entry, _ = dlu_entry()
    submission = submission_set(entry, SOURCE_ID, f"{SOURCE_ID}.8", NOW)
    new_version = dataclasses.replace(entry, entry_uuid="urn:uuid:33333333-0000-4000-8000-000000000002")
    request = ebrim.update_request(submission, entry=new_version, logical_id=entry.entry_uuid,
                                   previous_version="1", status_change=("", ARCHIVED))
    obj = request.find(".//rim:ExtrinsicObject", NS)
    assert obj.get("lid") == entry.entry_uuid and obj.get("id") == new_version.entry_uuid
    change = request.find(f".//rim:Association[@associationType='{ebrim.UPDATE_STATUS}']", NS)
    slots = {s.get("name"): s.findtext("rim:ValueList/rim:Value", namespaces=NS) for s in change.iterfind(
        "rim:Slot", NS)}
    assert slots == {"OriginalStatus": "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved", "NewStatus": ARCHIVED}
    previous = request.find(".//rim:Association/rim:Slot[@name='PreviousVersion']/rim:ValueList/rim:Value", NS)
    assert previous.text == "1"


RS = 'xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"'
SUCCESS = f'<rs:RegistryResponse {RS} status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>'
PARTIAL = f"""<rs:RegistryResponse {RS} status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess">
  <rs:RegistryErrorList highestSeverity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning">
    <rs:RegistryError errorCode="XDSExtraMetadataNotSaved" codeContext="slot ignored"
      severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning" location="registry"/>
  </rs:RegistryErrorList></rs:RegistryResponse>"""
FAILURE = f"""<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>
  <rs:RegistryResponse {RS} status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure">
  <rs:RegistryErrorList>
    <rs:RegistryError errorCode="XDSPatientIdDoesNotMatch" codeContext="patientId differs"
      severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>
    <rs:RegistryError errorCode="XDSRegistryMetadataError" codeContext="bad classCode"
      severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>
  </rs:RegistryErrorList></rs:RegistryResponse></soap:Body></soap:Envelope>"""


def test_parse_success_partial_failure() -> None:
    assert ebrim.parse_response(SUCCESS.encode()) == ebrim.Outcome("Success")
    partial = ebrim.parse_response(PARTIAL.encode())
    assert partial.status == "PartialSuccess" and partial.ok
    assert partial.errors == (ebrim.RegistryError("XDSExtraMetadataNotSaved", "slot ignored", "Warning", "registry"),)
    failure = ebrim.parse_response(FAILURE.encode())
    assert failure.status == "Failure" and not failure.ok
    assert [(e.error_code, e.code_context, e.severity) for e in failure.errors] == [
        ("XDSPatientIdDoesNotMatch", "patientId differs", "Error"),
        ("XDSRegistryMetadataError", "bad classCode", "Error")]


def test_parse_refuses_unknown_answers() -> None:
    with pytest.raises(ValueError, match="no RegistryResponse"):
        ebrim.parse_response(b"<x/>")
    with pytest.raises(ValueError, match="unknown"):
        ebrim.parse_response(f'<rs:RegistryResponse {RS} status="maybe"/>'.encode())
