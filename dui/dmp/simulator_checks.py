"""What the DMP simulator checks in an ITI-41 request, written from the IHE and ANS texts, not from the DUI's client.

Two parts, both pure (no I/O, no server):

- ``check_vihf``: the VIHF SAML 2.0 assertion of the WS-Security header. Its XML-DSig signature is verified with
  ``signxml`` against a trusted CA (PEM file), and only what the signature covers is read afterwards. Then its
  VIHF 4.0 attributes (DOMAIN.md §4.3): VIHF_Version 4.0, Authentification_Mode, Identifiant_Structure,
  Secteur_Activite, subject-id, role, resource-id equal to the submitted patientId, Ressource_URN ``urn:dmp``,
  purpose of use ``normal``, LPS_Nom / LPS_Version; and the assertion's validity window.
- ``check_submission``: the ebRIM metadata of a ProvideAndRegisterDocumentSetRequest (IHE ITI TF-3 §4.2) and the
  attached documents, giving the ``Entry`` objects a registry would store.

Every refusal is an ``XdsError`` carrying an XDS error code (ITI TF-3 Table 4.2.4.1-2) and a codeContext.

The classification scheme and identification scheme UUIDs below were checked against IHE ITI TF-3 §4.2.5
"Metadata Vocabulary" (IHE/publications, ``ITI/TF/Volume3/ch-4.2.html``). The VIHF attribute names follow the
HL7V2-CDA mapping cited in DOMAIN.md §4.3; the CNAM "guide d'intégration DMPi" was not available: they are
UNCONFIRMED against the real DMP.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree
from signxml import XMLVerifier  # type: ignore[attr-defined]
from signxml.exceptions import InvalidInput, InvalidSignature

NS_RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS_LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
NS_RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NS_XDSB = "urn:ihe:iti:xds-b:2007"
NS_XOP = "http://www.w3.org/2004/08/xop/include"
NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"

# IHE ITI TF-3 §4.2.5.1 Submission Set Object UUIDs
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE_CODE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
# IHE ITI TF-3 §4.2.5.2 Document Entry Object UUIDs
DE_STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY_CODE = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY_TYPE_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_PRACTICE_SETTING_CODE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"

HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"

# The formatCodes the simulator accepts (DOMAIN.md §4.1, §4.4) and the LOINC code system of typeCode.
FORMAT_CODES = frozenset({
    "urn:asip:ci-sis:dlu:2015", "urn:asip:ci-sis:fludt:2017", "urn:asip:ci-sis:fludr:2017",
    "urn:ihe:iti:xds-sd:pdf:2008", "urn:ihe:iti:xds-sd:text:2008",
})
LOINC = "2.16.840.1.113883.6.1"
MASKING_OID = "1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument (DOMAIN.md §4.2)
MASKING_CODES = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "MASQUE_PSOCIAL",
                           "MASQUE_PT"})
ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10"})  # INS-NIR, INS-NIR-TEST (DOMAIN.md §1.2)
_INS_CX = re.compile(r"^([0-9]{6}[0-9AB][0-9]{8})\^\^\^&([0-9.]+)&ISO\^NH$")
_DTM = re.compile(r"^[0-9]{4}(?:[0-9]{2}){0,5}$")  # HL7 v2 DTM, as XDS uses it: YYYY[MM[DD[hh[mm[ss]]]]]
_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
_OID = re.compile(r"^[0-2](?:\.(?:0|[1-9][0-9]*))+$")
_LOINC_CODE = re.compile(r"^[0-9]{1,7}-[0-9]$")

# VIHF 4.0 attribute names (HL7V2-CDA mapping.md; UNCONFIRMED against the DMPi guide).
VIHF_VERSION = "VIHF_Version"
AUTH_MODE = "Authentification_Mode"
STRUCTURE_ID = "Identifiant_Structure"
SECTOR = "Secteur_Activite"
RESOURCE_URN = "Ressource_URN"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
SUBJECT_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
LPS_NAME = "LPS_Nom"
LPS_VERSION = "LPS_Version"
PURPOSE_OF_USE_SYSTEM = "1.2.250.1.213.1.1.4.248"
AUTH_MODES = frozenset({"INDIRECTE"})  # an establishment (DOMAIN.md §4.3)


class XdsError(Exception):
    """A refused submission: ``code`` is the XDS error code, ``context`` the codeContext."""

    def __init__(self, code: str, context: str, location: str = "") -> None:
        super().__init__(f"{code}: {context}")
        self.code = code
        self.context = context
        self.location = location


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


# --- VIHF -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vihf:
    """The checked attributes of a VIHF assertion."""

    attributes: Mapping[str, tuple[str, ...]]
    resource_id: str
    structure: str


def _security_error(context: str) -> XdsError:
    return XdsError("XDSRegistryError", f"VIHF refused: {context}")


def check_vihf(assertion: etree._Element | None, trusted_ca: Path, *,
               now: dt.datetime | None = None) -> Vihf:
    """Verify the signature of ``assertion`` against ``trusted_ca`` and check its VIHF 4.0 attributes."""
    if assertion is None:
        raise _security_error("no SAML 2.0 Assertion in the WS-Security header")
    if assertion.find(q(NS_DS, "Signature")) is None:
        raise _security_error("the assertion is not signed")
    try:
        result = XMLVerifier().verify(assertion, ca_pem_file=str(trusted_ca))
    except (InvalidSignature, InvalidInput) as exc:  # InvalidCertificate and InvalidDigest are InvalidSignature
        raise _security_error(f"bad signature ({exc})") from None
    except (ValueError, TypeError) as exc:
        raise _security_error(f"unreadable signature ({exc})") from None
    if isinstance(result, list):
        raise _security_error("the signature must have one Reference, to the Assertion")
    signed = result.signed_xml  # read only what the signature covers
    if signed is None or signed.tag != q(NS_SAML, "Assertion"):
        raise _security_error("the signature does not cover the Assertion")
    if signed.get("Version") != "2.0":
        raise _security_error("the assertion is not SAML 2.0")
    if not (signed.findtext(q(NS_SAML, "Issuer")) or "").strip():
        raise _security_error("the Issuer is missing")
    _check_window(signed, now or dt.datetime.now(dt.UTC))
    attributes = _attributes(signed)

    def one(name: str) -> str:
        values = attributes.get(name, ())
        if len(values) != 1 or not values[0]:
            raise _security_error(f"the attribute {name} must have one value")
        return values[0]

    if one(VIHF_VERSION) != "4.0":
        raise _security_error(f"{VIHF_VERSION} must be 4.0")
    if one(AUTH_MODE) not in AUTH_MODES:
        raise _security_error(f"{AUTH_MODE} must be one of {', '.join(sorted(AUTH_MODES))}")
    structure = one(STRUCTURE_ID)
    if not re.match(r"^SA[0-9]{2}(\^|$)", one(SECTOR)):
        raise _security_error(f"{SECTOR} must be a code of TRE_R02-SecteurActivite (SAnn)")
    one(SUBJECT_ID)
    if not attributes.get(SUBJECT_ROLE):
        raise _security_error(f"the attribute {SUBJECT_ROLE} is missing")
    if one(RESOURCE_URN) != "urn:dmp":
        raise _security_error(f"{RESOURCE_URN} must be urn:dmp")
    resource_id = one(RESOURCE_ID)
    if not _INS_CX.match(resource_id):
        raise _security_error(f"{RESOURCE_ID} must be an INS as ^^^&OID&ISO^NH")
    purpose = one(PURPOSE_OF_USE)
    if purpose.split("^")[0] != "normal":
        raise _security_error(f"{PURPOSE_OF_USE} must be normal ({PURPOSE_OF_USE_SYSTEM})")
    one(LPS_NAME)
    one(LPS_VERSION)
    return Vihf(attributes, resource_id, structure)


def _check_window(assertion: etree._Element, now: dt.datetime) -> None:
    conditions = assertion.find(q(NS_SAML, "Conditions"))
    if conditions is None:
        raise _security_error("Conditions (NotBefore / NotOnOrAfter) are missing")
    try:
        not_before = dt.datetime.fromisoformat(conditions.get("NotBefore", "").replace("Z", "+00:00"))
        not_after = dt.datetime.fromisoformat(conditions.get("NotOnOrAfter", "").replace("Z", "+00:00"))
    except ValueError:
        raise _security_error("Conditions NotBefore / NotOnOrAfter are not dateTimes") from None
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise _security_error("Conditions NotBefore / NotOnOrAfter need a time zone")
    skew = dt.timedelta(minutes=5)
    if not (not_before - skew <= now < not_after + skew):
        raise _security_error("the assertion is not valid now (Conditions)")


def _attributes(assertion: etree._Element) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for attribute in assertion.iter(q(NS_SAML, "Attribute")):
        values = found.setdefault(attribute.get("Name", ""), [])
        for value in attribute.findall(q(NS_SAML, "AttributeValue")):
            coded = next((c for c in value if isinstance(c.tag, str)), None)
            if coded is not None and coded.get("code"):  # a CE (role, purpose of use): code^codeSystem
                values.append(f"{coded.get('code')}^{coded.get('codeSystem', '')}")
            else:
                values.append((value.text or "").strip())
    return {name: tuple(values) for name, values in found.items()}


# --- ebRIM ----------------------------------------------------------------------------------------------

@dataclass
class Entry:
    """A DocumentEntry as the simulator stores it."""

    entry_uuid: str
    unique_id: str
    patient_id: str
    hash: str
    size: int
    mime_type: str
    format_code: str
    type_code: str
    content: bytes
    submission_set: str
    status: str = APPROVED
    replaces: str | None = None
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    confidentiality: tuple[tuple[str, str], ...] = ()  # (code, codingScheme)
    logical_id: str = ""  # the lid: the entryUUID of its first version
    version: int = 1
    versions: list[str] = field(default_factory=list)  # the entryUUIDs of its earlier versions

    def __post_init__(self) -> None:
        self.logical_id = self.logical_id or self.entry_uuid

    @property
    def masking(self) -> frozenset[str]:
        return frozenset(code for code, scheme in self.confidentiality if scheme == MASKING_OID)


@dataclass(frozen=True)
class Submission:
    """A checked submission: its entries (new ones only) and the SubmissionSet's uniqueId."""

    entries: tuple[Entry, ...]
    submission_set_unique_id: str
    patient_id: str
    duplicates: tuple[str, ...] = ()


class Registry:
    """What ``check_submission`` needs to know of the simulator's store."""

    def by_unique_id(self, unique_id: str) -> Entry | None:
        raise NotImplementedError

    def by_entry_uuid(self, entry_uuid: str) -> Entry | None:
        raise NotImplementedError

    def by_logical_id(self, logical_id: str) -> Entry | None:
        raise NotImplementedError


def _meta(context: str) -> XdsError:
    return XdsError("XDSRegistryMetadataError", context)


def _slots(obj: etree._Element) -> dict[str, tuple[str, ...]]:
    return {slot.get("name", ""): tuple((v.text or "").strip() for v in slot.iter(q(NS_RIM, "Value")))
            for slot in obj.findall(q(NS_RIM, "Slot"))}


def _slot(obj: etree._Element, name: str, what: str, *, required: bool = True) -> str | None:
    values = _slots(obj).get(name)
    if not values:
        if required:
            raise _meta(f"{what}: the slot {name} is missing")
        return None
    if len(values) != 1 or not values[0]:
        raise _meta(f"{what}: the slot {name} must have one value")
    return values[0]


def _external_id(obj: etree._Element, scheme: str, name: str, what: str) -> str:
    found = [e for e in obj.findall(q(NS_RIM, "ExternalIdentifier")) if e.get("identificationScheme") == scheme]
    if len(found) != 1:
        raise _meta(f"{what}: one ExternalIdentifier {name} ({scheme}) is required")
    value = (found[0].get("value") or "").strip()
    if not value:
        raise _meta(f"{what}: the ExternalIdentifier {name} has no value")
    if found[0].get("registryObject") not in (None, obj.get("id")):
        raise _meta(f"{what}: the ExternalIdentifier {name} names another registryObject")
    return value


def _classifications(obj: etree._Element, all_classifications: Iterable[etree._Element],
                     scheme: str) -> list[etree._Element]:
    own = [c for c in obj.findall(q(NS_RIM, "Classification")) if c.get("classificationScheme") == scheme]
    own += [c for c in all_classifications if c.get("classificationScheme") == scheme
            and c.get("classifiedObject") == obj.get("id") and c.getparent() is not obj]
    return own


def _coded(obj: etree._Element, others: list[etree._Element], scheme: str, name: str, what: str, *,
           many: bool = False) -> list[tuple[str, str]]:
    found = _classifications(obj, others, scheme)
    if not found or (len(found) > 1 and not many):
        raise _meta(f"{what}: {'at least one' if many else 'one'} {name} Classification ({scheme}) is required")
    codes = []
    for classification in found:
        code = (classification.get("nodeRepresentation") or "").strip()
        if not code:
            raise _meta(f"{what}: the {name} Classification has no nodeRepresentation")
        system = _slot(classification, "codingScheme", f"{what} {name}") or ""
        if classification.find(q(NS_RIM, "Name")) is None:
            raise _meta(f"{what}: the {name} Classification has no Name (display name)")
        codes.append((code, system))
    return codes


def _check_ins(value: str, what: str) -> str:
    match = _INS_CX.match(value)
    if not match:
        raise _meta(f"{what}: the patientId must be an INS as <matricule>^^^&<OID>&ISO^NH, not {value!r}")
    if match.group(2) not in INS_OIDS:
        raise XdsError("XDSUnknownPatientId", f"{what}: {match.group(2)} is not an INS assigning authority ({value})")
    return value


def _check_dtm(value: str | None, name: str, what: str) -> None:
    if value is not None and not _DTM.match(value):
        raise _meta(f"{what}: {name} must be a DTM (YYYY[MM[DD[hh[mm[ss]]]]]), not {value!r}")


def check_submission(request: etree._Element, documents: Mapping[str, bytes], registry: Registry, *,
                     vihf: Vihf | None = None) -> Submission:
    """Check a ProvideAndRegisterDocumentSetRequest whose Documents are ``documents`` (id → bytes)."""
    if request.tag != q(NS_XDSB, "ProvideAndRegisterDocumentSetRequest"):
        raise _meta("the Body must be a ProvideAndRegisterDocumentSetRequest (urn:ihe:iti:xds-b:2007)")
    objects = request.find(f"{q(NS_LCM, 'SubmitObjectsRequest')}/{q(NS_RIM, 'RegistryObjectList')}")
    if objects is None:
        raise _meta("SubmitObjectsRequest/RegistryObjectList is missing")
    extrinsics = objects.findall(q(NS_RIM, "ExtrinsicObject"))
    packages = objects.findall(q(NS_RIM, "RegistryPackage"))
    associations = objects.findall(q(NS_RIM, "Association"))
    classifications = list(objects.iter(q(NS_RIM, "Classification")))
    submission_set = _submission_set(packages, classifications)
    ss_patient, ss_unique = _check_submission_set(submission_set, classifications, vihf)
    if not extrinsics:
        raise _meta("the submission holds no DocumentEntry (ExtrinsicObject)")
    ids = {e.get("id") for e in extrinsics}
    for document_id in documents:
        if document_id not in ids:
            raise XdsError("XDSMissingDocumentMetadata", f"the Document {document_id} has no ExtrinsicObject")
    entries, duplicates = [], []
    for extrinsic in extrinsics:
        entry = _entry(extrinsic, classifications, documents, submission_set.get("id", ""))
        if entry.patient_id != ss_patient:
            raise XdsError("XDSPatientIdDoesNotMatch",
                           f"DocumentEntry {entry.unique_id}: its patientId is not the SubmissionSet's")
        _check_members(associations, submission_set.get("id", ""), extrinsic.get("id", ""))
        held = registry.by_unique_id(entry.unique_id)
        if held is not None:  # before the RPLC check: a retried replacement finds its target already deprecated
            if held.hash.lower() != entry.hash.lower():
                raise XdsError("XDSDuplicateUniqueIdInRegistry",
                               f"uniqueId {entry.unique_id} is already registered with another hash")
            duplicates.append(entry.unique_id)
            continue
        entry.replaces = _replaced(associations, extrinsic.get("id", ""), entry, registry)
        entries.append(entry)
    return Submission(tuple(entries), ss_unique, ss_patient, tuple(duplicates))


def _check_submission_set(submission_set: etree._Element, classifications: list[etree._Element],
                          vihf: Vihf | None) -> tuple[str, str]:
    """The SubmissionSet's patientId and uniqueId, once its slots and classifications are checked."""
    ss_patient = _check_ins(_external_id(submission_set, SS_PATIENT_ID, "patientId", "SubmissionSet"),
                            "SubmissionSet")
    ss_unique = _external_id(submission_set, SS_UNIQUE_ID, "uniqueId", "SubmissionSet")
    source_id = _external_id(submission_set, SS_SOURCE_ID, "sourceId", "SubmissionSet")
    if not _OID.match(ss_unique) or not _OID.match(source_id):
        raise _meta("SubmissionSet: uniqueId and sourceId must be OIDs")
    _check_dtm(_slot(submission_set, "submissionTime", "SubmissionSet"), "submissionTime", "SubmissionSet")
    _coded(submission_set, classifications, SS_CONTENT_TYPE_CODE, "contentTypeCode", "SubmissionSet")
    if vihf is not None and vihf.resource_id != ss_patient:
        raise XdsError("XDSRegistryError", "VIHF refused: its resource-id is not the patientId of the submission")
    return ss_patient, ss_unique


def _submission_set(packages: list[etree._Element], classifications: list[etree._Element]) -> etree._Element:
    marked = {c.get("classifiedObject") for c in classifications
              if c.get("classificationNode") == SUBMISSION_SET_NODE}
    found = [p for p in packages if p.get("id") in marked]
    if len(found) != 1:
        raise _meta(f"one RegistryPackage classified as SubmissionSet ({SUBMISSION_SET_NODE}) is required")
    return found[0]


def _entry(extrinsic: etree._Element, classifications: list[etree._Element], documents: Mapping[str, bytes],
           submission_set_id: str) -> Entry:
    local_id = extrinsic.get("id") or ""
    what = f"DocumentEntry {local_id}"
    if extrinsic.get("objectType") != DE_STABLE:
        raise _meta(f"{what}: objectType must be {DE_STABLE} (stable DocumentEntry)")
    mime_type = extrinsic.get("mimeType") or ""
    if not mime_type:
        raise _meta(f"{what}: mimeType is missing")
    _check_dtm(_slot(extrinsic, "creationTime", what), "creationTime", what)
    _slot(extrinsic, "languageCode", what)
    source_patient = _slot(extrinsic, "sourcePatientId", what) or ""
    if not re.match(r"^[^^]+\^\^\^&[0-9.]+&ISO(\^[A-Z]+)?$", source_patient):
        raise _meta(f"{what}: sourcePatientId must be a CX id^^^&OID&ISO")
    for name in ("serviceStartTime", "serviceStopTime"):
        _check_dtm(_slot(extrinsic, name, what, required=False), name, what)
    _coded(extrinsic, classifications, DE_CLASS_CODE, "classCode", what)
    type_code, type_system = _coded(extrinsic, classifications, DE_TYPE_CODE, "typeCode", what)[0]
    if type_system != LOINC or not _LOINC_CODE.match(type_code):
        raise _meta(f"{what}: typeCode must be a LOINC code ({LOINC}), not {type_code}^{type_system}")
    format_code = _coded(extrinsic, classifications, DE_FORMAT_CODE, "formatCode", what)[0][0]
    if format_code not in FORMAT_CODES:
        raise _meta(f"{what}: formatCode {format_code} is not accepted")
    _coded(extrinsic, classifications, DE_FACILITY_TYPE_CODE, "healthcareFacilityTypeCode", what)
    _coded(extrinsic, classifications, DE_PRACTICE_SETTING_CODE, "practiceSettingCode", what)
    confidentiality = _coded(extrinsic, classifications, DE_CONFIDENTIALITY_CODE, "confidentialityCode", what,
                             many=True)
    for code, scheme in confidentiality:
        if scheme == MASKING_OID and code not in MASKING_CODES:
            raise _meta(f"{what}: {code} is not a code of TRE_A07-StatutVisibiliteDocument")
    authors = _classifications(extrinsic, classifications, DE_AUTHOR)
    if not authors:
        raise _meta(f"{what}: an author Classification ({DE_AUTHOR}) is required")
    for author in authors:
        slots = _slots(author)
        if not (slots.get("authorPerson") or slots.get("authorInstitution")):
            raise _meta(f"{what}: an author needs authorPerson or authorInstitution")
    patient_id = _check_ins(_external_id(extrinsic, DE_PATIENT_ID, "patientId", what), what)
    unique_id = _external_id(extrinsic, DE_UNIQUE_ID, "uniqueId", what)
    content = documents.get(local_id)
    if content is None:
        raise XdsError("XDSMissingDocument", f"{what}: no Document with this id is attached")
    declared_hash = _slot(extrinsic, "hash", what) or ""
    declared_size = _slot(extrinsic, "size", what) or ""
    if not _SHA1.match(declared_hash):
        raise _meta(f"{what}: hash must be the SHA-1 of the document in hexadecimal")
    if declared_hash.lower() != hashlib.sha1(content).hexdigest():  # XDS names SHA-1
        raise XdsError("XDSNonIdenticalHash", f"{what}: hash is not the SHA-1 of the attached document")
    if not declared_size.isdigit() or int(declared_size) != len(content):
        raise XdsError("XDSNonIdenticalSize", f"{what}: size is not the size of the attached document")
    entry_uuid = local_id if local_id.startswith("urn:uuid:") else f"urn:uuid:{uuid.uuid4()}"
    return Entry(entry_uuid, unique_id, patient_id, declared_hash.lower(), len(content), mime_type, format_code,
                 type_code, content, submission_set_id, slots=_slots(extrinsic),
                 confidentiality=tuple(confidentiality))


def _check_members(associations: list[etree._Element], submission_set_id: str, entry_id: str) -> None:
    for association in associations:
        if (association.get("associationType") == HAS_MEMBER and association.get("sourceObject") == submission_set_id
                and association.get("targetObject") == entry_id):
            if _slot(association, "SubmissionSetStatus", "the HasMember Association") != "Original":
                raise _meta("the HasMember Association of a new DocumentEntry needs SubmissionSetStatus Original")
            return
    raise _meta(f"no HasMember Association from the SubmissionSet to DocumentEntry {entry_id}")


def _replaced(associations: list[etree._Element], entry_id: str, entry: Entry, registry: Registry) -> str | None:
    replacing = [a for a in associations if a.get("associationType") == RPLC and a.get("sourceObject") == entry_id]
    if not replacing:
        return None
    if len(replacing) > 1:
        raise _meta(f"DocumentEntry {entry_id} replaces more than one DocumentEntry")
    target = replacing[0].get("targetObject") or ""
    held = registry.by_entry_uuid(target)
    if held is None or held.status != APPROVED:
        raise _meta(f"the RPLC Association targets {target}, which is not an Approved DocumentEntry held here")
    if held.patient_id != entry.patient_id:
        raise XdsError("XDSPatientIdDoesNotMatch", f"the RPLC target {target} belongs to another patient")
    return target


def inline_document(element: etree._Element) -> bytes:
    """The bytes of a Document given inline (base64 text) rather than by xop:Include."""
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except ValueError:
        raise XdsError("XDSRepositoryMetadataError", f"Document {element.get('id')}: not base64") from None


# --- ITI-57 Update Document Set (DMP TD3.3) ------------------------------------------------------------------
# IHE XDS Metadata Update (ITI TF-2b §3.57, ITI TF-3 §4.2.2.2): a new version of a DocumentEntry (same lid, the
# PreviousVersion slot on its HasMember association), or an UpdateAvailabilityStatus association on its lid. The
# DMP uses it to mask / unmask (confidentiality codes of TRE_A07) and to archive / delete (the ci-sis statuses):
# how exactly is UNCONFIRMED against the DMPi guide. A metadata update never changes the document itself: its
# uniqueId, hash and size stay those of the registered entry.

@dataclass(frozen=True)
class NewVersion:
    logical_id: str
    previous_version: int
    entry_uuid: str
    confidentiality: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StatusChange:
    logical_id: str
    original: str
    new: str


@dataclass(frozen=True)
class Update:
    """A checked ITI-57 request: the new versions and the status changes it asks for."""

    patient_id: str
    submission_set_unique_id: str
    versions: tuple[NewVersion, ...]
    status_changes: tuple[StatusChange, ...]


NEW_STATUSES = frozenset({APPROVED, ARCHIVED, DELETED})
_FINAL = {DEPRECATED: "deprecated (replaced)", DELETED: "deleted"}


def check_update(request: etree._Element, registry: Registry, *, vihf: Vihf | None = None) -> Update:
    """Check an ITI-57 ``lcm:SubmitObjectsRequest`` against the entries ``registry`` holds."""
    if request.tag != q(NS_LCM, "SubmitObjectsRequest"):
        raise XdsError("XDSMetadataUpdateOperationError", "the Body of ITI-57 must be an lcm:SubmitObjectsRequest")
    objects = request.find(q(NS_RIM, "RegistryObjectList"))
    if objects is None:
        raise _meta("SubmitObjectsRequest/RegistryObjectList is missing")
    associations = objects.findall(q(NS_RIM, "Association"))
    classifications = list(objects.iter(q(NS_RIM, "Classification")))
    submission_set = _submission_set(objects.findall(q(NS_RIM, "RegistryPackage")), classifications)
    ss_id = submission_set.get("id", "")
    ss_patient, ss_unique = _check_submission_set(submission_set, classifications, vihf)
    versions = [_new_version(extrinsic, classifications, associations, ss_id, ss_patient, registry)
                for extrinsic in objects.findall(q(NS_RIM, "ExtrinsicObject"))]
    changes = [_status_change(association, associations, ss_id, ss_patient, registry)
               for association in associations if association.get("associationType") == UPDATE_STATUS]
    if not versions and not changes:
        raise XdsError("XDSMetadataUpdateOperationError", "the request holds no new version and no status change")
    return Update(ss_patient, ss_unique, tuple(versions), tuple(changes))


def _held(registry: Registry, logical_id: str, what: str, patient_id: str) -> Entry:
    held = registry.by_logical_id(logical_id) if logical_id else None
    if held is None:
        raise XdsError("XDSMetadataUpdateError", f"{what}: no DocumentEntry has the lid {logical_id or '(none)'}")
    if held.patient_id != patient_id:
        raise XdsError("XDSPatientIdDoesNotMatch", f"{what}: the entry {logical_id} belongs to another patient")
    if held.status in _FINAL:
        raise XdsError("XDSMetadataUpdateError", f"{what}: the entry {logical_id} is {_FINAL[held.status]}")
    return held


def _new_version(extrinsic: etree._Element, classifications: list[etree._Element],
                 associations: list[etree._Element], ss_id: str, ss_patient: str, registry: Registry) -> NewVersion:
    new_id = extrinsic.get("id") or ""
    what = f"DocumentEntry {new_id}"
    held = _held(registry, extrinsic.get("lid") or "", what, ss_patient)
    if not new_id.startswith("urn:uuid:") or new_id == held.entry_uuid or new_id in held.versions:
        raise _meta(f"{what}: a new version needs a new entryUUID (urn:uuid:)")
    entry = _entry(extrinsic, classifications, {new_id: held.content}, ss_id)  # hash and size: the held document's
    if entry.unique_id != held.unique_id:
        raise XdsError("XDSMetadataUpdateError", f"{what}: a metadata update cannot change the uniqueId")
    if entry.patient_id != ss_patient:
        raise XdsError("XDSPatientIdDoesNotMatch", f"{what}: its patientId is not the SubmissionSet's")
    member = _member(associations, ss_id, new_id, what)
    previous = _slot(member, "PreviousVersion", f"{what} HasMember") or ""
    if previous != str(held.version):
        raise XdsError("XDSMetadataVersionError",
                       f"{what}: PreviousVersion {previous} is not the registered version {held.version}")
    return NewVersion(held.logical_id, held.version, new_id, entry.confidentiality)


def _status_change(association: etree._Element, associations: list[etree._Element], ss_id: str, ss_patient: str,
                   registry: Registry) -> StatusChange:
    what = f"UpdateAvailabilityStatus {association.get('id')}"
    if association.get("sourceObject") != ss_id:
        raise _meta(f"{what}: its sourceObject must be the SubmissionSet")
    held = _held(registry, association.get("targetObject") or "", what, ss_patient)
    original = _slot(association, "OriginalStatus", what) or ""
    new = _slot(association, "NewStatus", what) or ""
    if new not in NEW_STATUSES:
        raise XdsError("XDSMetadataUpdateOperationError", f"{what}: NewStatus {new} is not one of "
                       f"{', '.join(sorted(NEW_STATUSES))}")
    if original != held.status:
        raise XdsError("XDSMetadataUpdateError", f"{what}: OriginalStatus {original} is not the entry's status")
    _member(associations, ss_id, association.get("id") or "", what)
    return StatusChange(held.logical_id, original, new)


def _member(associations: list[etree._Element], ss_id: str, target: str, what: str) -> etree._Element:
    for association in associations:
        if (association.get("associationType") == HAS_MEMBER and association.get("sourceObject") == ss_id
                and association.get("targetObject") == target):
            if _slot(association, "SubmissionSetStatus", f"{what} HasMember") != "Original":
                raise _meta(f"{what}: its HasMember Association needs SubmissionSetStatus Original")
            return association
    raise _meta(f"{what}: no HasMember Association from the SubmissionSet")


# --- ITI-18 Registry Stored Query (DMP TD3.1; TD0.2 as the DUI asks it) ------------------------------------------
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
NS_QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RETURN_TYPES = frozenset({"ObjectRef", "LeafClass"})


@dataclass(frozen=True)
class Query:
    """A checked stored query: FindDocuments on ``patient_id`` (with ``statuses``), or GetDocuments by
    ``unique_ids`` / ``entry_uuids``."""

    query_id: str
    return_type: str
    patient_id: str = ""
    statuses: frozenset[str] = frozenset()
    unique_ids: tuple[str, ...] = ()
    entry_uuids: tuple[str, ...] = ()


def _quoted(values: tuple[str, ...], name: str) -> tuple[str, ...]:
    """The values of a stored query parameter: ``'a'`` or ``('a','b')`` (ITI TF-2a §3.18.4.1.2.3.5)."""
    found = []
    for value in values:
        for part in value.strip().removeprefix("(").removesuffix(")").split(","):
            part = part.strip()
            if len(part) < 2 or part[0] != "'" or part[-1] != "'":
                raise XdsError("XDSStoredQueryParamNumber", f"{name}: values are quoted strings, not {part!r}")
            found.append(part[1:-1])
    return tuple(found)


def read_query(request: etree._Element) -> Query:
    """Check an ``query:AdhocQueryRequest`` for FindDocuments or GetDocuments."""
    if request.tag != q(NS_QUERY, "AdhocQueryRequest"):
        raise XdsError("XDSRegistryError", "the Body of ITI-18 must be a query:AdhocQueryRequest")
    option = request.find(q(NS_QUERY, "ResponseOption"))
    return_type = option.get("returnType", "") if option is not None else ""
    if return_type not in RETURN_TYPES:
        raise XdsError("XDSRegistryError", "ResponseOption returnType must be ObjectRef or LeafClass")
    query = request.find(q(NS_RIM, "AdhocQuery"))
    if query is None:
        raise XdsError("XDSRegistryError", "the AdhocQuery is missing")
    slots = _slots(query)
    query_id = query.get("id", "")
    if query_id == FIND_DOCUMENTS:
        patient = _quoted(slots.get("$XDSDocumentEntryPatientId", ()), "$XDSDocumentEntryPatientId")
        if len(patient) != 1:
            raise XdsError("XDSStoredQueryParamNumber", "FindDocuments needs one $XDSDocumentEntryPatientId")
        statuses = _quoted(slots.get("$XDSDocumentEntryStatus", ()), "$XDSDocumentEntryStatus")
        if not statuses:
            raise XdsError("XDSStoredQueryParamNumber", "FindDocuments needs $XDSDocumentEntryStatus")
        return Query(query_id, return_type, patient_id=_check_ins(patient[0], "FindDocuments"),
                     statuses=frozenset(statuses))
    if query_id == GET_DOCUMENTS:
        unique_ids = _quoted(slots.get("$XDSDocumentEntryUniqueId", ()), "$XDSDocumentEntryUniqueId")
        entry_uuids = _quoted(slots.get("$XDSDocumentEntryEntryUUID", ()), "$XDSDocumentEntryEntryUUID")
        if bool(unique_ids) == bool(entry_uuids):
            raise XdsError("XDSStoredQueryParamNumber",
                           "GetDocuments needs $XDSDocumentEntryUniqueId or $XDSDocumentEntryEntryUUID (one of them)")
        return Query(query_id, return_type, unique_ids=unique_ids, entry_uuids=entry_uuids)
    raise XdsError("XDSUnknownStoredQuery", f"this simulator answers FindDocuments and GetDocuments, not {query_id}")
