"""ebRIM 3.0 messages of XDS.b: the ITI-41 ProvideAndRegisterDocumentSetRequest, the ITI-57 update, and the
RegistryResponse (IHE ITI TF-2b §3.41, ITI TF-3 §4.2.3 "metadata attributes", §4.2.5 "UUIDs").

Classification scheme and identification scheme UUIDs are those of ITI TF-3 Table 4.2.5-1. They were
checked against several independent public XDS implementations (docs/dmp.md lists them). The ITI-57 update (new
version of an entry, ``UpdateAvailabilityStatus``) follows the XDS Metadata Update supplement (ITI TF-3 §4.2.2.2);
how the DMP uses it for masking is UNCONFIRMED.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lxml import etree

from dui.dmp.metadata import APPROVED, Author, Code, DocumentEntry, SubmissionSet
from dui.fhir.xmlsafe import parse_untrusted

NS_XDSB = "urn:ihe:iti:xds-b:2007"
NS_LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
NS_RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS_RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NSMAP = {"xdsb": NS_XDSB, "lcm": NS_LCM, "rim": NS_RIM, "rs": NS_RS}

STABLE_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
# ITI TF-3 Table 4.2.5-1. Not "…-625b-437d-a4c7-1ded4e1ef98a", which no implementation uses.
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"

HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
OT_CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
OT_EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
OT_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
OT_ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
_STATUS_NAMES = {SUCCESS: "Success", PARTIAL_SUCCESS: "PartialSuccess", FAILURE: "Failure"}


@dataclass(frozen=True)
class RegistryError:
    """One ``rs:RegistryError``: errorCode (e.g. XDSRegistryError), codeContext, severity (Error / Warning)."""

    error_code: str
    code_context: str
    severity: str
    location: str = ""


@dataclass(frozen=True)
class Outcome:
    """A ``RegistryResponse``: ``status`` is Success, PartialSuccess or Failure."""

    status: str
    errors: tuple[RegistryError, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in ("Success", "PartialSuccess")


def _rim(parent: etree._Element, tag: str, **attrs: str | None) -> etree._Element:
    return etree.SubElement(parent, f"{{{NS_RIM}}}{tag}", {k: v for k, v in attrs.items() if v is not None})


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = _rim(parent, "Slot", name=name)
    value_list = _rim(slot, "ValueList")
    for value in values:
        _rim(value_list, "Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    if text:
        _rim(_rim(parent, "Name"), "LocalizedString", value=text)


def _id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _classification(parent: etree._Element, scheme: str, target: str, code: Code) -> None:
    node = _rim(parent, "Classification", classificationScheme=scheme, classifiedObject=target,
                nodeRepresentation=code.code, id=_id(), objectType=OT_CLASSIFICATION)
    _slot(node, "codingScheme", code.scheme)
    _name(node, code.display or code.code)


def _author(parent: etree._Element, scheme: str, target: str, author: Author) -> None:
    node = _rim(parent, "Classification", classificationScheme=scheme, classifiedObject=target,
                nodeRepresentation="", id=_id(), objectType=OT_CLASSIFICATION)
    if author.person:
        _slot(node, "authorPerson", author.person)
    _slot(node, "authorInstitution", author.institution)
    if author.role:
        _slot(node, "authorRole", author.role)
    if author.specialty:
        _slot(node, "authorSpecialty", author.specialty)


def _external_id(parent: etree._Element, scheme: str, target: str, value: str, name: str) -> None:
    node = _rim(parent, "ExternalIdentifier", identificationScheme=scheme, registryObject=target, value=value,
                id=_id(), objectType=OT_EXTERNAL_ID)
    _name(node, name)


def extrinsic_object(parent: etree._Element, entry: DocumentEntry, entry_id: str | None = None,
                     logical_id: str | None = None, version: str | None = None) -> etree._Element:
    """The ``rim:ExtrinsicObject`` of ``entry`` (``entry_id`` defaults to its entryUUID)."""
    target = entry_id or entry.entry_uuid
    obj = _rim(parent, "ExtrinsicObject", id=target, mimeType=entry.mime_type, objectType=STABLE_ENTRY,
               status=entry.availability_status if logical_id else None, lid=logical_id)
    slots: list[tuple[str, str | None]] = [
        ("creationTime", entry.creation_time), ("hash", entry.hash), ("languageCode", entry.language_code),
        ("legalAuthenticator", entry.legal_authenticator), ("serviceStartTime", entry.service_start_time),
        ("serviceStopTime", entry.service_stop_time), ("size", str(entry.size)),
        ("sourcePatientId", entry.source_patient_id)]
    for name, value in slots:
        if value:
            _slot(obj, name, value)
    if entry.source_patient_info:
        _slot(obj, "sourcePatientInfo", *entry.source_patient_info)
    _name(obj, entry.title)
    if version:
        _rim(obj, "VersionInfo", versionName=version)
    _author(obj, DE_AUTHOR, target, entry.author)
    _classification(obj, DE_CLASS, target, entry.class_code)
    for code in entry.confidentiality_codes:
        _classification(obj, DE_CONFIDENTIALITY, target, code)
    _classification(obj, DE_FORMAT, target, entry.format_code)
    _classification(obj, DE_FACILITY, target, entry.healthcare_facility_type_code)
    _classification(obj, DE_PRACTICE, target, entry.practice_setting_code)
    _classification(obj, DE_TYPE, target, entry.type_code)
    _external_id(obj, DE_PATIENT_ID, target, entry.patient_id, "XDSDocumentEntry.patientId")
    _external_id(obj, DE_UNIQUE_ID, target, entry.unique_id, "XDSDocumentEntry.uniqueId")
    return obj


def registry_package(parent: etree._Element, submission: SubmissionSet) -> None:
    """The SubmissionSet ``rim:RegistryPackage`` and the classification that makes it one."""
    target = submission.entry_uuid
    package = _rim(parent, "RegistryPackage", id=target, objectType=OT_PACKAGE)
    _slot(package, "submissionTime", submission.submission_time)
    _name(package, submission.title)
    _author(package, SS_AUTHOR, target, submission.author)
    _classification(package, SS_CONTENT_TYPE, target, submission.content_type_code)
    _external_id(package, SS_UNIQUE_ID, target, submission.unique_id, "XDSSubmissionSet.uniqueId")
    _external_id(package, SS_SOURCE_ID, target, submission.source_id, "XDSSubmissionSet.sourceId")
    _external_id(package, SS_PATIENT_ID, target, submission.patient_id, "XDSSubmissionSet.patientId")
    _rim(parent, "Classification", classifiedObject=target, classificationNode=SS_NODE, id=_id(),
         objectType=OT_CLASSIFICATION)


def _association(parent: etree._Element, kind: str, source: str, target: str,
                 slots: tuple[tuple[str, str], ...]) -> str:
    ident = _id()
    node = _rim(parent, "Association", associationType=kind, sourceObject=source, targetObject=target, id=ident,
                objectType=OT_ASSOCIATION)
    for name, value in slots:
        _slot(node, name, value)
    return ident


def submit_objects(entry: DocumentEntry, submission: SubmissionSet, replaces: str | None = None) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of one document: its entry, the submission set, their HasMember association
    and, with ``replaces``, the RPLC association (the metadata of ITI-41, and the METADATA.XML of an XDM package)."""
    request = etree.Element(f"{{{NS_LCM}}}SubmitObjectsRequest", nsmap={"lcm": NS_LCM, "rim": NS_RIM})
    objects = _rim(request, "RegistryObjectList")
    extrinsic_object(objects, entry)
    registry_package(objects, submission)
    _association(objects, HAS_MEMBER, submission.entry_uuid, entry.entry_uuid, (("SubmissionSetStatus", "Original"),))
    if replaces:
        _association(objects, RPLC, entry.entry_uuid, replaces, ())
    return request


def provide_request(entry: DocumentEntry, submission: SubmissionSet, content_id: str,
                    replaces: str | None = None) -> etree._Element:
    """The ITI-41 ``xdsb:ProvideAndRegisterDocumentSetRequest`` for one document whose bytes travel as the MTOM part
    ``content_id``; ``replaces``: the entryUUID of the entry it replaces (RPLC association)."""
    request = etree.Element(f"{{{NS_XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={
        "xdsb": NS_XDSB, "lcm": NS_LCM, "rim": NS_RIM})
    request.append(submit_objects(entry, submission, replaces))
    document = etree.SubElement(request, f"{{{NS_XDSB}}}Document", id=entry.entry_uuid)
    etree.SubElement(document, f"{{{NS_XOP}}}Include", href=f"cid:{content_id}", nsmap={"xop": NS_XOP})
    return request


def update_request(submission: SubmissionSet, *, entry: DocumentEntry | None = None, logical_id: str = "",
                   previous_version: str = "", status_change: tuple[str, str] | None = None) -> etree._Element:
    """The ITI-57 ``lcm:SubmitObjectsRequest``: a new version of ``entry`` (its own ``entry_uuid`` is the new
    version's id; same ``logical_id``, replacing version ``previous_version``: masking / unmasking changes its
    confidentiality codes), and/or an availability status change ``(original, new)`` of the entry ``logical_id``
    (archive, delete: ``urn:asip:ci-sis:2010:StatusType:*``)."""
    request = etree.Element(f"{{{NS_LCM}}}SubmitObjectsRequest", nsmap={"lcm": NS_LCM, "rim": NS_RIM})
    objects = _rim(request, "RegistryObjectList")
    registry_package(objects, submission)
    if entry is not None:
        new_id = entry.entry_uuid
        extrinsic_object(objects, entry, entry_id=new_id, logical_id=logical_id)
        _association(objects, HAS_MEMBER, submission.entry_uuid, new_id,
                     (("SubmissionSetStatus", "Original"), ("PreviousVersion", previous_version)))
    if status_change is not None:
        original, new = status_change
        change = _association(objects, UPDATE_STATUS, submission.entry_uuid, logical_id,
                              (("OriginalStatus", original or APPROVED), ("NewStatus", new)))
        # the submission set also holds the association itself (ITI TF-3 §4.2.2.2.4 as we read it)
        _association(objects, HAS_MEMBER, submission.entry_uuid, change, (("SubmissionSetStatus", "Original"),))
    return request


def parse_response(xml: bytes) -> Outcome:
    """The ``rs:RegistryResponse`` in ``xml`` (the response itself or a SOAP envelope around it).

    Raises ``UnsafeXml`` for unsafe XML and ``ValueError`` when there is no RegistryResponse or its status is unknown.
    """
    root = parse_untrusted(xml)
    response = root if root.tag == f"{{{NS_RS}}}RegistryResponse" else root.find(f".//{{{NS_RS}}}RegistryResponse")
    if response is None:
        raise ValueError("no RegistryResponse in the answer")
    status = _STATUS_NAMES.get(response.get("status", ""))
    if status is None:
        raise ValueError(f"unknown RegistryResponse status {response.get('status')!r}")
    errors = tuple(
        RegistryError(error_code=e.get("errorCode", ""), code_context=e.get("codeContext", ""),
                      severity=e.get("severity", "").rsplit(":", 1)[-1], location=e.get("location", ""))
        for e in response.iterfind(f"{{{NS_RS}}}RegistryErrorList/{{{NS_RS}}}RegistryError"))
    return Outcome(status, errors)
