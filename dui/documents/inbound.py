"""Documents that come in: a CDA received (a FLUDR back from the emergency department, a VSM, a letter) and a
PDF the staff attach. Both arrive as a DocumentReference whose content is inline (``POST /fhir/DocumentReference``,
``dui documents import FILE``), and are filed the way the documents built here are: the content as Binaries of
the resident's record, the DocumentReference pointing at them.

- A CDA is read (``dui.documents.received``), filed on the resident it names — by its INS, checked against the
  record's birth date and birth name (identity vigilance), or on the resident the caller names — and, for a FLUDR,
  its exit diagnoses, exit treatments and devices become resources of the record, each derived from the document,
  with one Provenance naming them all, linked to the resident's stay. Filing the same CDA again (same
  ClinicalDocument/id) answers the DocumentReference filed the first time.
- A PDF is wrapped in a CDA N1 (XDS-SD), so that the DMP can take it; the DocumentReference keeps what the client
  said of it (type, category, date, description) and gets the rest (custodian, facility, format).

Every write goes through the caller's repository: its access rules judge the resident and every reference the
client wrote.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from dui.documents import cda
from dui.documents.extract import LOINC
from dui.documents.operations import (
    FACILITY_SYSTEM,
    FORMAT_SYSTEM,
    PRACTICE_SYSTEM,
    binary,
    read_resident,
)
from dui.documents.received import ReceivedDocument, read_cda, to_resources
from dui.documents.record import Code
from dui.errors import Invalid, Unprocessable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import ResourceVersion
from dui.fhir.search.normalize import normalize
from dui.fhir.search.plan import parse_search
from dui.fhir.sql import format_instant

XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml", "application/hl7-cda+xml"})
PDF_TYPE = "application/pdf"
FORMATS = {"FLUDR": "urn:asip:ci-sis:fludr:2017", "FLUDT": "urn:asip:ci-sis:fludt:2017",
           "DLU": "urn:asip:ci-sis:dlu:2015", "N1": "urn:ihe:iti:xds-sd:pdf:2008"}
N1_FORMAT = "urn:ihe:iti:xds-sd:pdf:2008"


@dataclass(frozen=True)
class Filed:
    reference: ResourceVersion  # the DocumentReference
    created: bool  # False: this CDA was filed before, nothing was written
    items: int = 0  # resources of the record read from the document


def file_document_reference(ctx: FhirContext, content: dict[str, Any]) -> Filed | None:
    """A DocumentReference POSTed with its content inline: filed here when it is a CDA or a PDF (else None: the
    DocumentReference is stored as written)."""
    inline = _inline(content)
    if inline is None:
        return None
    content_type, data = inline
    subject = _subject(content)
    if content_type in XML_TYPES:
        return file_cda(ctx, data, patient_id=subject, given=content)
    return file_pdf(ctx, data, subject, content)


def filer(ctx: FhirContext, content: dict[str, Any]) -> tuple[ResourceVersion, bool] | None:
    """``FhirContext.filers``: a DocumentReference created with a CDA or a PDF inline."""
    filed = file_document_reference(ctx, content)
    return (filed.reference, filed.created) if filed is not None else None


def file_cda(ctx: FhirContext, xml: bytes, *, patient_id: str | None = None,
             given: dict[str, Any] | None = None) -> Filed:
    """File a received CDA on its resident (``patient_id``: the one the caller names; else found by its INS)."""
    doc = read_cda(xml)
    patient = _resident(ctx, doc, patient_id)
    doc_id = _doc_id(doc)
    existing = ctx.repo.read("DocumentReference", doc_id)
    if existing is not None and not existing.deleted:
        return Filed(existing, False)
    stored = binary(ctx.repo, patient.id, "text/xml", xml)
    stay = _stay(ctx, patient.id)
    body = _received_reference(doc, patient.id, stored, xml, stay, given or {})
    body = ctx.prepare("DocumentReference", body, None)
    reference = ctx.repo.create("DocumentReference", body, rid=doc_id)
    items = _file_items(ctx, doc, patient.id, reference, stay)
    return Filed(reference, True, items)


def file_pdf(ctx: FhirContext, data: bytes, patient_id: str | None, given: dict[str, Any]) -> Filed:
    """Wrap a PDF in a CDA N1 and file both on the resident."""
    if patient_id is None:
        raise Invalid("A document needs its resident: subject = Patient/<id>", expression="DocumentReference.subject")
    if not data.startswith(b"%PDF"):
        raise Invalid("The attachment says application/pdf but is not a PDF", expression="DocumentReference.content")
    _, record = read_resident(ctx, patient_id)
    type_code = _type_code(given)
    title = given.get("description") or (given.get("type") or {}).get("text") or type_code.display
    doc_id = str(uuid.uuid4())
    ids = cda.DocumentIds(root=ctx.settings.documents.oid, extension=doc_id, set_extension=doc_id, version=1,
                          effective=record.as_of)
    xml = cda.n1(record, ids, data, title, type_code)
    xml_binary = binary(ctx.repo, patient_id, "text/xml", xml)
    pdf_binary = binary(ctx.repo, patient_id, PDF_TYPE, data)
    body = {k: v for k, v in given.items() if k not in ("id", "meta", "content", "masterIdentifier")}
    body.update({
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": f"urn:oid:{ids.root}", "value": doc_id},
        "status": given.get("status") or "current",
        "docStatus": given.get("docStatus") or "final",
        "type": given.get("type") or {"coding": [{"system": LOINC, "code": type_code.code,
                                                  "display": type_code.display}]},
        "date": given.get("date") or format_instant(record.as_of),
        "content": [_content(xml_binary, xml, title, N1_FORMAT), _content(pdf_binary, data, title, None)],
    })
    if record.establishment.source:
        body.setdefault("custodian", {"reference": record.establishment.source})
    context = dict(body.get("context") or {})
    context.setdefault("facilityType", {"coding": [{"system": FACILITY_SYSTEM, "code": "SA17"}]})
    context.setdefault("practiceSetting", {"coding": [{"system": PRACTICE_SYSTEM, "code": "ETABLISSEMENT"}]})
    body["context"] = context
    body = ctx.prepare("DocumentReference", body, None)
    return Filed(ctx.repo.create("DocumentReference", body, rid=doc_id), True)


# -- the resident -------------------------------------------------------------------------------------


def _resident(ctx: FhirContext, doc: ReceivedDocument, patient_id: str | None) -> ResourceVersion:
    """The resident the document is filed on: the one named (and then the document's INS, if any, must be hers),
    else the one holding the document's INS. Its birth date and birth name must agree with the document's."""
    named = doc.patient
    if patient_id is not None:
        found = ctx.repo.read("Patient", patient_id)
        if found is None or found.deleted:
            raise Unprocessable(f"Patient/{patient_id} is not a resident you may file a document on",
                                code="not-found", expression="subject")
    elif named.ins and named.ins_oid:
        plan = parse_search("Patient", [("identifier", f"urn:oid:{named.ins_oid}|{named.ins}")], ctx.registry,
                            ctx.settings.limits, strict=True)
        rids = ctx.repo.search(plan).rids
        if len(rids) != 1:
            raise Unprocessable("No resident of yours holds the INS this document names: file it on the resident "
                                "(subject, or dui documents import --patient ID) after checking her identity",
                                code="not-found", expression="ClinicalDocument.recordTarget")
        found = ctx.repo.fetch(rids)[0]
    else:
        raise Unprocessable("This document names its patient without an INS: file it on the resident (subject, or "
                            "dui documents import --patient ID) after checking her identity",
                            code="business-rule", expression="ClinicalDocument.recordTarget")
    _same_person(found.resource(), doc)
    return found


def _same_person(patient: dict[str, Any], doc: ReceivedDocument) -> None:
    named = doc.patient
    if named.birth_date and patient.get("birthDate") and named.birth_date[:10] != patient["birthDate"][:10]:
        raise Unprocessable("The document's patient is not born on the resident's birth date: identity vigilance "
                            "stops the filing (check the document and the resident)", code="business-rule",
                            expression="ClinicalDocument.recordTarget.patientRole.patient.birthTime")
    families = {normalize(n.get("family") or "") for n in patient.get("name") or []}
    written = [normalize(x) for x in (named.birth_family, named.used_family) if x]
    if written and families and not families & set(written):
        raise Unprocessable("The document's patient does not bear the resident's names: identity vigilance stops "
                            "the filing (check the document and the resident)", code="business-rule",
                            expression="ClinicalDocument.recordTarget.patientRole.patient.name")


def _stay(ctx: FhirContext, patient_id: str) -> str | None:
    """Her current stay: in progress, or on leave (a FLUDR arrives while she is still in hospital)."""
    plan = parse_search("Encounter", [("subject", f"Patient/{patient_id}"), ("status", "in-progress,onleave"),
                                      ("_sort", "-date")], ctx.registry, ctx.settings.limits, strict=True)
    rids = ctx.repo.search(plan).rids
    return f"Encounter/{ctx.repo.fetch(rids[:1])[0].id}" if rids else None


# -- the DocumentReference of a received CDA ---------------------------------------------------------------


def _doc_id(doc: ReceivedDocument) -> str:
    """One DocumentReference per ClinicalDocument/id: its id derives from it (the store keeps ids unique)."""
    key = f"{doc.id.root}^{doc.id.extension or ''}"
    return "cda-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _received_reference(doc: ReceivedDocument, patient_id: str, stored: ResourceVersion, xml: bytes,
                        stay: str | None, given: dict[str, Any]) -> dict[str, Any]:
    code = doc.code
    body: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": ({"system": f"urn:oid:{doc.id.root}", "value": doc.id.extension} if doc.id.extension
                             else {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc.id.root}"}),
        "status": "current",
        "docStatus": "final",
        # Coded.system is already the FHIR system (http://loinc.org, or urn:oid:<oid>); no codeSystem: LOINC
        "type": ({"coding": [{"system": code.system or LOINC, "code": code.code,
                              "display": code.display or code.code}]}
                 if code is not None and code.code else given.get("type") or {"text": doc.title or doc.kind}),
        "subject": {"reference": f"Patient/{patient_id}"},
        "description": doc.title or f"Document {doc.kind} reçu",
        "content": [_content(stored, xml, doc.title or doc.kind, FORMATS.get(doc.kind))],
    }
    if doc.effective:
        body["date"] = doc.effective if "T" in doc.effective else None
        if body["date"] is None:
            del body["date"]
    authors = [a for a in (doc.author.name if doc.author else None,
                           doc.author.organization if doc.author else None) if a]
    if authors:
        body["author"] = [{"display": a} for a in authors]
    if doc.custodian is not None and doc.custodian.name:
        body["custodian"] = {"display": doc.custodian.name}
    if stay:
        body["context"] = {"encounter": [{"reference": stay}]}
    if given.get("category"):
        body["category"] = given["category"]
    return body


def _content(version: ResourceVersion, data: bytes, title: str, format_code: str | None) -> dict[str, Any]:
    attachment = {"contentType": version.resource().get("contentType"), "language": "fr-FR",
                  "url": f"Binary/{version.id}", "size": len(data),
                  "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"), "title": title}
    entry: dict[str, Any] = {"attachment": attachment}
    if format_code:
        entry["format"] = {"system": FORMAT_SYSTEM, "code": format_code}
    return entry


def _file_items(ctx: FhirContext, doc: ReceivedDocument, patient_id: str, reference: ResourceVersion,
                stay: str | None) -> int:
    """The document's items as resources of the record (``urn:uuid`` references between them resolved)."""
    pairs = to_resources(doc, f"Patient/{patient_id}", f"DocumentReference/{reference.id}", stay,
                         format_instant(ctx.clock()))
    assigned = {url: f"{res['resourceType']}/{uuid.uuid4()}" for url, res in pairs}
    for url, res in pairs:
        rtype, rid = assigned[url].split("/")
        body = ctx.prepare(rtype, _resolved(res, assigned), None)
        # The Provenance of the import is the server's trace (policy: Provenance is written by the server only), and
        # it belongs to no resident (its targets are the items, not the Patient): written through the caller's
        # repository, a staff member's scoping would refuse it as a record of nobody she may see.
        (ctx.internal if rtype == "Provenance" else ctx.repo).create(rtype, body, rid=rid)
    return sum(1 for _, res in pairs if res["resourceType"] != "Provenance")


def _resolved(value: Any, assigned: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (assigned.get(v, v) if k == "reference" and isinstance(v, str) else _resolved(v, assigned))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, assigned) for v in value]
    return value


# -- what the client sent -------------------------------------------------------------------------------------


def _inline(content: dict[str, Any]) -> tuple[str, bytes] | None:
    """(content type, bytes) of the one inline attachment, when it is a CDA or a PDF."""
    inline = [c.get("attachment") or {} for c in content.get("content") or [] if (c.get("attachment") or {})
              .get("data")]
    if not inline:
        return None
    if len(inline) > 1:
        raise Invalid("Send one document per DocumentReference (one attachment with data)",
                      expression="DocumentReference.content")
    attachment = inline[0]
    kind = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    if kind not in XML_TYPES and kind != PDF_TYPE:
        return None
    try:
        data = base64.b64decode(attachment["data"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise Invalid("The attachment's data is not base64", expression="DocumentReference.content.attachment.data"
                      ) from None
    return kind, data


def _subject(content: dict[str, Any]) -> str | None:
    ref = (content.get("subject") or {}).get("reference")
    if ref is None:
        return None
    if not isinstance(ref, str) or not ref.startswith("Patient/") or ref.count("/") != 1:
        raise Invalid("subject must be Patient/<id> of a resident", expression="DocumentReference.subject")
    return ref.split("/", 1)[1]


def _type_code(given: dict[str, Any]) -> Code:
    for coding in (given.get("type") or {}).get("coding") or []:
        if coding.get("system") == LOINC and coding.get("code"):
            return Code(coding["code"], coding.get("display") or coding["code"], LOINC, "2.16.840.1.113883.6.1")
    raise Invalid("type: give the LOINC code of the document (e.g. 57833-6 a prescription, 11490-0 a discharge "
                  "letter): the DMP classifies documents by it", expression="DocumentReference.type")
