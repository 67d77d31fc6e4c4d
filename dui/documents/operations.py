"""Building the resident's documents and filing them in the record (use cases: no Flask; they take the context).

A document is a DocumentReference (the metadata the DMP and MSSanté adapters send: docs/documents.md) whose
content is its CDA and its PDF, each a Binary of the resident's record (``securityContext`` = the Patient: read
under the same rules and audit as the rest of the record). A new DLU replaces the one in force: ``relatesTo``
``replaces`` on the new one, status ``superseded`` on the old one.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from dui.dmp.metadata import MASKING_SYSTEMS
from dui.documents import cda, dmp_feed, freshness, pdf
from dui.documents.extract import BUILT_TAG_SYSTEM, LOINC, Record, read_record, read_versions
from dui.documents.record import ResidentRecord, Transfer
from dui.errors import Gone, Invalid
from dui.fhir.interactions.base import FhirContext, not_found
from dui.fhir.repository import FhirRepository, ResourceVersion, amend
from dui.fhir.sql import format_instant
from fhir_profiles import CANONICAL

RECORD_VERSION = f"{CANONICAL}/StructureDefinition/dui-document-record-version"
SET_VERSION = f"{CANONICAL}/StructureDefinition/dui-document-set-version"
FORMAT_SYSTEM = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CLASS_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
FACILITY_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
PRACTICE_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.9"  # UNCONFIRMED: TRE_A00-ProducteurDocNonPS (DOMAIN §4.2)
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


@dataclass(frozen=True)
class Kind:
    """What distinguishes one kind of document built here."""

    name: str  # DLU, FLUDT
    title: str
    loinc: str
    loinc_display: str
    format_code: str
    class_code: tuple[str, str]  # TRE_A03 (DMP classCode); UNCONFIRMED for the DLU (DOMAIN §4.4)


DLU = Kind("DLU", "Dossier de liaison d'urgence", "74207-2", "Document de liaison d'urgence",
           "urn:asip:ci-sis:dlu:2015", ("11", "Synthèse"))
FLUDT = Kind("FLUDT", "Fiche de liaison d'urgence - transfert", "74207-2", "Document de liaison d'urgence",
             "urn:asip:ci-sis:fludt:2017", ("11", "Synthèse"))


@dataclass(frozen=True)
class Built:
    reference: ResourceVersion  # the DocumentReference
    created: bool  # False: the one in force was current, nothing was built


def resident(ctx: FhirContext, patient_id: str) -> ResourceVersion:
    """The resident as the actor sees her (unseen and unknown are one 404)."""
    seen = ctx.repo.read("Patient", patient_id)
    if seen is None:
        raise not_found("Patient", patient_id)
    if seen.deleted:
        raise Gone(f"Patient/{patient_id} was deleted")
    return seen


def read_resident(ctx: FhirContext, patient_id: str,
                  seen: ResourceVersion | None = None) -> tuple[ResourceVersion, ResidentRecord]:
    """The resident (``seen``: already read by the caller) and the record a document shows, read in full from
    the store."""
    seen = seen or resident(ctx, patient_id)
    versions = read_versions(ctx.internal, seen)
    return seen, read_record(Record(versions), patient_id, ctx.clock())


def refresh_dlu(ctx: FhirContext, patient_id: str, *, force: bool = False) -> Built:
    """The resident's DLU, built now unless the one in force shows the record as it is (``force``: always).
    The resident's row is claimed before the record is read (``freshness.claim``)."""
    seen = resident(ctx, patient_id)
    mark = freshness.claim(_session(ctx), patient_id)
    _, record = read_resident(ctx, patient_id, seen)
    if (not force and mark.docref_id is not None and mark.stale_since is None
            and mark.record_version == record.record_version):
        current = ctx.internal.read("DocumentReference", mark.docref_id)
        if current is not None and not current.deleted:
            return Built(current, False)
    previous = ctx.internal.read("DocumentReference", mark.docref_id) if mark.docref_id else None
    version = _set_version(previous) + 1
    reference = file_document(ctx, DLU, record, cda_builder=lambda ids: cda.dlu(record, ids),
                              pdf_bytes=pdf.render(record, "DLU", built_at=record.as_of), version=version,
                              replaces=previous)
    freshness.built(_session(ctx), patient_id, reference.id, record.record_version, record.as_of)
    share_if_asked(ctx, record, reference)
    return Built(reference, True)


def build_fludt(ctx: FhirContext, patient_id: str, transfer: Transfer) -> ResourceVersion:
    """A FLUDT for a transfer to hospital now: the record as it is, and the transfer's facts."""
    _, record = read_resident(ctx, patient_id)
    reference = file_document(ctx, FLUDT, record, cda_builder=lambda ids: cda.fludt(record, transfer, ids),
                              pdf_bytes=pdf.render(record, "FLUDT", transfer, built_at=record.as_of), version=1,
                              replaces=None)
    share_if_asked(ctx, record, reference)
    return reference


def share_if_asked(ctx: FhirContext, record: ResidentRecord, reference: ResourceVersion) -> None:
    """Queue a document just built for the DMP when the establishment asks for it (``DUI_DMP_AUTO_SEND``); the
    rules (qualified identity, information, opposition) are applied when it is sent."""
    wanted = ctx.settings.dmp.auto_send
    if "*" in wanted or (record.establishment.finess and record.establishment.finess in wanted):
        dmp_feed.request_share(ctx, reference.id, record.as_of)


def file_document(ctx: FhirContext, kind: Kind, record: ResidentRecord, *, cda_builder: Any, pdf_bytes: bytes,
                  version: int, replaces: ResourceVersion | None) -> ResourceVersion:
    """Write the CDA and the PDF as Binaries and the DocumentReference pointing at them; supersede ``replaces``."""
    store = ctx.internal
    doc_id = str(uuid.uuid4())
    ids = cda.DocumentIds(root=ctx.settings.documents.oid, extension=doc_id,
                          set_extension=f"{record.patient_id}-{kind.name}", version=version,
                          effective=record.as_of, author_system="DUI")
    xml: bytes = cda_builder(ids)
    xml_binary = binary(store, record.patient_id, "text/xml", xml)
    pdf_binary = binary(store, record.patient_id, "application/pdf", pdf_bytes)
    body = document_reference(kind, record, ids, doc_id, [(xml_binary, xml, kind.format_code),
                                                          (pdf_binary, pdf_bytes, None)], replaces)
    created = store.update(None, "DocumentReference", doc_id, body, method="PUT")
    if replaces is not None and not replaces.deleted:
        supersede(store, replaces)
    return created


def binary(store: FhirRepository, patient_id: str, content_type: str, data: bytes) -> ResourceVersion:
    """A Binary of the resident's record."""
    return store.create("Binary", {"resourceType": "Binary", "contentType": content_type,
                                   "securityContext": {"reference": f"Patient/{patient_id}"},
                                   "data": base64.b64encode(data).decode("ascii")})


def document_reference(kind: Kind, record: ResidentRecord, ids: cda.DocumentIds, doc_id: str,
                       contents: list[tuple[ResourceVersion, bytes, str | None]],
                       replaces: ResourceVersion | None) -> dict[str, Any]:
    """The DocumentReference of a document built here: the metadata the DMP (XDS) and MSSanté need."""
    built = format_instant(record.as_of)
    body: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"tag": [{"system": BUILT_TAG_SYSTEM, "code": kind.name.lower(),
                          "display": f"{kind.title} construit par le DUI"}]},
        "extension": [{"url": RECORD_VERSION, "valueString": record.record_version},
                      {"url": SET_VERSION, "valueInteger": ids.version}],
        # The CDA's ClinicalDocument/id (root, extension): the XDS uniqueId "root^extension"
        "masterIdentifier": {"system": f"urn:oid:{ids.root}", "value": ids.extension},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{doc_id}"}],  # XDS entryUUID
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": kind.loinc, "display": kind.loinc_display}],
                 "text": kind.title},
        "category": [{"coding": [{"system": CLASS_SYSTEM, "code": kind.class_code[0],
                                  "display": kind.class_code[1]}]}],
        "subject": {"reference": f"Patient/{record.patient_id}"},
        "date": built,
        "author": [{"reference": record.establishment.source, "display": record.establishment.name}
                   if record.establishment.source else {"display": record.establishment.name}],
        "description": f"{kind.title}, établi le {record.as_of:%d/%m/%Y à %H:%M} (UTC) à partir du dossier "
                       f"(version {record.record_version[:12]})",
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": "N", "display": "normal"}]}],
        "content": [],
        "context": {
            "period": {"start": record.stay_start} if record.stay_start else {"end": built},
            "facilityType": {"coding": [{"system": FACILITY_SYSTEM, "code": "SA17",
                                         "display": "Etablissement d'hébergement pour personnes âgées"}]},
            "practiceSetting": {"coding": [{"system": PRACTICE_SYSTEM, "code": "ETABLISSEMENT",
                                            "display": "Etablissement de santé"}]},
        },
    }
    if record.establishment.source:
        body["custodian"] = {"reference": record.establishment.source}
    if replaces is not None:
        body["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{replaces.id}"}}]
        if replaces.body is not None:  # a masking (INVISIBLE_PATIENT, MASQUE_PS...) stays on the new version
            body["securityLabel"] += [
                label for label in replaces.resource().get("securityLabel") or []
                if any(c.get("system") in MASKING_SYSTEMS for c in label.get("coding") or [])]
    for version, data, format_code in contents:
        content_type = version.resource().get("contentType")
        attachment = {"contentType": content_type, "language": "fr-FR", "url": f"Binary/{version.id}",
                      "size": len(data), "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
                      "title": kind.title + (" (PDF)" if content_type == "application/pdf" else ""),
                      "creation": built}
        entry: dict[str, Any] = {"attachment": attachment}
        if format_code:
            entry["format"] = {"system": FORMAT_SYSTEM, "code": format_code}
        body["content"].append(entry)
    return body


def supersede(store: FhirRepository, old: ResourceVersion) -> None:
    """The replaced document: status ``superseded`` (it stays readable, with its CDA and PDF)."""
    if old.resource().get("status") != "superseded":
        amend(store, "DocumentReference", old.id, lambda body: body.update(status="superseded"))


def transfer_from(params: dict[str, Any]) -> Transfer:
    """The facts of a transfer, from the operation's parameters (``reason`` required)."""
    reason = (params.get("reason") or "").strip()
    if not reason:
        raise Invalid("$fludt needs the reason for the transfer (parameter 'reason')", expression="reason")
    return Transfer(reason=reason, destination=params.get("destination") or None,
                    last_meal=params.get("lastMeal") or None,
                    devices=tuple(params.get("device") or ()), belongings=tuple(params.get("belonging") or ()),
                    comment=params.get("comment") or None)


def _set_version(previous: ResourceVersion | None) -> int:
    if previous is None or previous.body is None:
        return 0
    for ext in previous.resource().get("extension") or []:
        if ext.get("url") == SET_VERSION and isinstance(ext.get("valueInteger"), int):
            return int(ext["valueInteger"])
    return 0


def _session(ctx: FhirContext) -> Any:
    return ctx.internal.session  # type: ignore[attr-defined]
