"""XDS.b metadata of a document sent to the DMP: DocumentEntry and SubmissionSet (IHE ITI TF-3 §4.2.3).

``entry_from`` reads the DocumentReference the DUI made for a document (``dui.documents.operations``) and
the CDA header (CI-SIS "Modèle des métadonnées XDS", via the HL7V2-CDA mapping; DOMAIN §4.2). Values are
HL7 v2 data types as XDS wants them: CX for patient ids, XCN for persons, XON for organizations, and
times in UTC ``YYYYMMDD[HHMMSS]``. The CDA is read with the hardened parser (``dui.fhir.xmlsafe``).

UNCONFIRMED against the CNAM integration guide (docs/dmp.md): the coding schemes of classCode
(TRE_A03, ``1.2.250.1.213.1.1.4.1``), of the CI-SIS formatCodes (TRE_A06, ``1.2.250.1.213.1.1.4.2.282``),
the DLU classCode 11 and the SubmissionSet contentTypeCode (by default the typeCode).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from dui.fhir.xmlsafe import parse_untrusted

NS_CDA = "urn:hl7-org:v3"
_NS = {"c": NS_CDA}
LOINC = "2.16.840.1.113883.6.1"
CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"
MASKING_OID = "1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument
MASKING_CODES = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX",
                           "MASQUE_PSOCIAL", "MASQUE_PT"})
MASKING_DISPLAY = {"MASQUE_PS": "Masqué aux professionnels de santé",
                   "INVISIBLE_PATIENT": "Non visible par le patient",
                   "INVISIBLE_REPRESENTANTS_LEGAUX": "Non visible par les représentants légaux du patient",
                   "MASQUE_PSOCIAL": "Masqué aux professionnels du secteur social",
                   "MASQUE_PT": "Masqué au patient"}
# The FHIR systems of TRE_A07 in a DocumentReference.securityLabel: the NOS URL (as the ANS PDSm example spells
# it) and the OID. Only these carry masking codes: a look-alike code in another system is not a masking.
MASKING_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatusVisibiliteDocument/FHIR/TRE-A07-StatusVisibiliteDocument"
MASKING_SYSTEMS = frozenset({MASKING_SYSTEM, f"urn:oid:{MASKING_OID}"})
CLASS_OID = "1.2.250.1.213.1.1.4.1"  # TRE_A03-ClasseDocument: UNCONFIRMED
FORMAT_CISIS_OID = "1.2.250.1.213.1.1.4.2.282"  # TRE_A06-FormatCodeComplementaire: UNCONFIRMED
FORMAT_IHE_OID = "1.3.6.1.4.1.19376.1.2.3"
FINESS_OID = "1.2.250.1.71.4.2.2"
PS_OID = "1.2.250.1.71.4.2.1"
# typeCode → classCode when the DocumentReference has no category (ASS_X04; the DLU row is UNCONFIRMED)
CLASS_OF_TYPE = {"74207-2": ("11", "Synthèse")}
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"


class MetadataError(ValueError):
    """The DocumentReference or the CDA lacks something the DMP requires."""


@dataclass(frozen=True)
class Code:
    """A coded XDS value: ``code`` (nodeRepresentation), ``scheme`` (codingScheme OID), ``display`` (Name)."""

    code: str
    scheme: str
    display: str = ""


@dataclass(frozen=True)
class Author:
    """XDS author: ``person`` (XCN), ``institution`` (XON), ``role`` and ``specialty`` (HL7 v2 CE strings)."""

    institution: str
    person: str | None = None
    role: str | None = None
    specialty: str | None = None


@dataclass(frozen=True)
class DocumentEntry:
    """One XDSDocumentEntry (stable): every slot, classification and identifier the DMP reads."""

    entry_uuid: str
    unique_id: str
    patient_id: str
    source_patient_id: str
    class_code: Code
    type_code: Code
    format_code: Code
    healthcare_facility_type_code: Code
    practice_setting_code: Code
    confidentiality_codes: tuple[Code, ...]
    author: Author
    hash: str
    size: int
    creation_time: str
    service_start_time: str | None
    service_stop_time: str | None
    language_code: str
    mime_type: str
    title: str
    legal_authenticator: str | None
    source_patient_info: tuple[str, ...] = ()
    availability_status: str = APPROVED

    @property
    def masking(self) -> frozenset[str]:
        """The TRE_A07 masking codes among the confidentiality codes."""
        return frozenset(c.code for c in self.confidentiality_codes if c.scheme == MASKING_OID)


@dataclass(frozen=True)
class SubmissionSet:
    """The XDSSubmissionSet that carries the entries of one ITI-41 request."""

    unique_id: str
    source_id: str
    submission_time: str
    content_type_code: Code
    author: Author
    patient_id: str
    entry_uuid: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    title: str = ""


def cx(value: str, oid: str, kind: str | None = "NH") -> str:
    """An HL7 v2 CX: ``value^^^&oid&ISO^kind`` (``kind`` None: no type)."""
    return f"{value}^^^&{oid}&ISO" + (f"^{kind}" if kind else "")


def xds_time(value: str | dt.datetime) -> str:
    """An HL7 TS (``YYYYMMDD[HHMM[SS]][±ZZZZ]``) or an aware datetime as XDS UTC ``YYYYMMDD[HHMMSS]``.

    A value with a time but no offset is refused: XDS times are UTC, and a local time without offset is ambiguous.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise MetadataError("a naive datetime cannot be converted to UTC")
        return value.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")
    match = re.fullmatch(r"(\d{4,8})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", value)
    if not match:
        raise MetadataError(f"not an HL7 time: {value!r}")
    date, hour, minute, second, offset = match.groups()
    if hour is None:
        return date
    if offset is None or len(date) != 8:
        raise MetadataError(f"a time of day without a UTC offset: {value!r}")
    sign = 1 if offset[0] == "+" else -1
    tz = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    local = dt.datetime.strptime(date + hour + (minute or "00") + (second or "00"), "%Y%m%d%H%M%S").replace(tzinfo=tz)
    return xds_time(local)


def xcn(person_id: str, oid: str, family: str = "", given: str = "", kind: str = "IDNPS") -> str:
    """An XCN person: ``id^FAMILY^Given^^^^^^&oid&ISO^D^^^kind`` (the DMP's idNat form)."""
    return f"{person_id}^{family}^{given}^^^^^^&{oid}&ISO^D^^^{kind}"


def xon(name: str, id_nat: str, oid: str = FINESS_OID) -> str:
    """An XON organization with its idNat: ``name^^^^^&oid&ISO^IDNST^^^idNat``."""
    return f"{name}^^^^^&{oid}&ISO^IDNST^^^{id_nat}"


def _one(root: Any, path: str) -> Any:
    found = root.find(path, _NS)
    if found is None:
        raise MetadataError(f"the CDA has no {path.replace('c:', '')}")
    return found


def _code_of(element: Any, default_scheme: str = "") -> Code:
    code = element.get("code")
    if not code:
        raise MetadataError(f"the CDA element {etree_name(element)} has no code")
    return Code(code, element.get("codeSystem") or default_scheme, element.get("displayName") or "")


def etree_name(element: Any) -> str:
    return str(element.tag).rsplit("}", 1)[-1]


def _coding(concept: dict[str, Any] | None) -> dict[str, Any] | None:
    codings = (concept or {}).get("coding") or []
    return codings[0] if codings else None


def _author(root: Any) -> Author:
    assigned = _one(root, "c:author/c:assignedAuthor")
    org = _one(assigned, "c:representedOrganization")
    org_id = _one(org, "c:id")
    institution = xon((org.findtext("c:name", "", _NS) or "").strip(), org_id.get("extension") or "",
                      org_id.get("root") or FINESS_OID)
    person_id = assigned.find("c:id", _NS)
    person = None
    if person_id is not None and assigned.find("c:assignedPerson", _NS) is not None:
        name = assigned.find("c:assignedPerson/c:name", _NS)
        person = xcn(person_id.get("extension") or "", person_id.get("root") or PS_OID,
                     (name.findtext("c:family", "", _NS) if name is not None else "") or "",
                     (name.findtext("c:given", "", _NS) if name is not None else "") or "")
    elif person_id is not None:  # an authoring device: its id only
        person = f"{person_id.get('extension') or ''}^^^^^^^^&{person_id.get('root')}&ISO"
    role = assigned.find("c:code", _NS)
    specialty = None if role is None else f"{role.get('code')}^{role.get('displayName') or ''}^{role.get('codeSystem')}"
    function = root.find("c:author/c:functionCode", _NS)
    author_role = None if function is None else \
        f"{function.get('code')}^{function.get('displayName') or ''}^{function.get('codeSystem')}"
    return Author(institution=institution, person=person, role=author_role, specialty=specialty)


def _legal(root: Any) -> str | None:
    entity = root.find("c:legalAuthenticator/c:assignedEntity", _NS)
    if entity is None:
        return None
    ident = entity.find("c:id", _NS)
    if ident is None:
        return None
    name = entity.find("c:assignedPerson/c:name", _NS)
    if name is None:  # the establishment answers for the document: an XCN with its FINESS only
        return f"{ident.get('extension')}^^^^^^^^&{ident.get('root')}&ISO^L^^^IDNST"
    return xcn(ident.get("extension") or "", ident.get("root") or PS_OID, name.findtext("c:family", "", _NS) or "",
               name.findtext("c:given", "", _NS) or "")


def _confidentiality(root: Any, docref: dict[str, Any]) -> tuple[Code, ...]:
    first = _one(root, "c:confidentialityCode")
    codes = [Code(first.get("code") or "N", first.get("codeSystem") or CONFIDENTIALITY_OID,
                  first.get("displayName") or "")]
    codes += [Code(code, MASKING_OID, MASKING_DISPLAY[code]) for code in sorted(masking_of(docref))]
    return tuple(codes)


def masking_of(docref: dict[str, Any]) -> frozenset[str]:
    """The TRE_A07 masking codes of a DocumentReference (its ``securityLabel``): how it is to be shown in the DMP."""
    return frozenset(
        str(coding["code"]) for label in docref.get("securityLabel") or [] if isinstance(label, dict)
        for coding in label.get("coding") or [] if isinstance(coding, dict)
        and coding.get("system") in MASKING_SYSTEMS and coding.get("code") in MASKING_CODES)


def _format(docref: dict[str, Any], mime_type: str) -> Code:
    for content in docref.get("content") or []:
        attachment = content.get("attachment") or {}
        code = (content.get("format") or {}).get("code")
        if code and attachment.get("contentType", mime_type) == mime_type:
            return Code(code, FORMAT_IHE_OID if code.startswith("urn:ihe:") else FORMAT_CISIS_OID,
                        (content.get("format") or {}).get("display") or "")
    raise MetadataError("the DocumentReference has no content.format for the CDA")


def _class(docref: dict[str, Any], type_code: Code) -> Code:
    for concept in docref.get("category") or []:
        coding = _coding(concept)
        if coding and coding.get("code"):
            return Code(coding["code"], CLASS_OID, coding.get("display") or "")
    if type_code.code in CLASS_OF_TYPE:
        code, display = CLASS_OF_TYPE[type_code.code]
        return Code(code, CLASS_OID, display)
    raise MetadataError(f"no classCode for the typeCode {type_code.code}")


def entry_from(docref: dict[str, Any], cda: bytes, ins: str, ins_oid: str, source_id: str,
               mime_type: str = "text/xml") -> DocumentEntry:
    """The DocumentEntry of ``cda`` described by ``docref``, for the patient whose INS is ``ins`` (``ins_oid``).

    ``source_id`` (the producing system's OID) is kept for the SubmissionSet; the uniqueId is the CDA id.
    Raises ``MetadataError`` (or ``UnsafeXml``) when something required is missing or the CDA is not safe XML.
    """
    del source_id  # the SubmissionSet's; accepted here so that one call has all the facts
    root = parse_untrusted(cda)
    if root.tag != f"{{{NS_CDA}}}ClinicalDocument":
        raise MetadataError("not a CDA ClinicalDocument")
    doc_id = _one(root, "c:id")
    unique_id = doc_id.get("root", "") + (f"^{doc_id.get('extension')}" if doc_id.get("extension") else "")
    master = docref.get("masterIdentifier") or {}
    if master and (master.get("system", "").removeprefix("urn:oid:"), master.get("value")) != (
            doc_id.get("root"), doc_id.get("extension")):
        raise MetadataError("the DocumentReference masterIdentifier is not the CDA id")
    type_code = _code_of(_one(root, "c:code"), LOINC)
    facility = _code_of(_one(root, "c:componentOf/c:encompassingEncounter/c:location/c:healthCareFacility/c:code"))
    setting = _code_of(_one(root, "c:author/c:assignedAuthor/c:representedOrganization/c:standardIndustryClassCode"))
    event = root.find("c:documentationOf/c:serviceEvent/c:effectiveTime", _NS)
    low = event.find("c:low", _NS) if event is not None else None
    high = event.find("c:high", _NS) if event is not None else None
    local_ids = [i for i in root.findall("c:recordTarget/c:patientRole/c:id", _NS) if i.get("root") != ins_oid]
    source_patient = cx(local_ids[0].get("extension"), local_ids[0].get("root"), "PI") if local_ids else cx(
        ins, ins_oid)
    identifiers = [i.get("value", "") for i in docref.get("identifier") or []
                   if str(i.get("value", "")).startswith("urn:uuid:")]
    return DocumentEntry(
        entry_uuid=identifiers[0] if identifiers else f"urn:uuid:{uuid.uuid4()}",
        unique_id=unique_id,
        patient_id=cx(ins, ins_oid),
        source_patient_id=source_patient,
        class_code=_class(docref, type_code),
        type_code=type_code,
        format_code=_format(docref, mime_type),
        healthcare_facility_type_code=facility,
        practice_setting_code=setting,
        confidentiality_codes=_confidentiality(root, docref),
        author=_author(root),
        hash=hashlib.sha1(cda).hexdigest(),
        size=len(cda),
        creation_time=xds_time(_one(root, "c:effectiveTime").get("value", "")),
        service_start_time=xds_time(low.get("value")) if low is not None and low.get("value") else None,
        service_stop_time=xds_time(high.get("value")) if high is not None and high.get("value") else None,
        language_code=_one(root, "c:languageCode").get("code") or "fr-FR",
        mime_type=mime_type,
        title=(root.findtext("c:title", "", _NS) or "").strip(),
        legal_authenticator=_legal(root),
    )


def submission_set(entry: DocumentEntry, source_id: str, unique_id: str, now: dt.datetime,
                   content_type: Code | None = None) -> SubmissionSet:
    """The SubmissionSet that submits ``entry``: its author institution, patient and, by default, its typeCode as
    contentTypeCode (UNCONFIRMED: JDV_J59)."""
    return SubmissionSet(unique_id=unique_id, source_id=source_id, submission_time=xds_time(now),
                         content_type_code=content_type or entry.type_code,
                         author=Author(institution=entry.author.institution), patient_id=entry.patient_id)
