"""Sending a document over MSSanté (docs/mssante.md): through the outbox, never during the request that asks.

- ``request_send`` queues one document for one address: an outbox job (``mssante.send``) in the caller's
  transaction, keyed by ``<address> <uniqueId>`` (asking again changes nothing), and the send recorded on the
  DocumentReference as ``queued``.
- ``deliver_send`` is the outbox handler. At send time it applies the rules again: the document is current; to the
  resident's own mailbox (``<INS>@patient.mssante.fr``) only with her qualified INS, that INS, never a document
  masked ``INVISIBLE_PATIENT``, and with ``X-MSS-MES: FIN``. It builds the IHE XDM package (the CDA, its XDS
  metadata as the DMP gets them, the URI, hash and size of the file), the message (one patient, the XDM subject,
  ``X-MSS-CODECDA``, the PDF as a readable copy, an MDN asked for), and submits it over SMTP. The Message-ID is
  the job's: a resend after a lost answer carries the same one, and receivers drop duplicates on it.
- ``acknowledge`` records the MDN that comes back (processed, or the integration error code and label) on the
  message and on the DocumentReference.

A professional address receives the document even when the identity is not qualified: the XDM then names the
resident by her local identifier (``^PI``), as the CDA does, never by an INS the sharing gate withholds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dui import __version__ as dui_version
from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.db import is_postgresql
from dui.dmp.ebrim import submit_objects
from dui.dmp.metadata import MetadataError, cx, entry_from, masking_of, submission_set
from dui.documents.dmp_feed import content_bytes, content_url, unique_id
from dui.documents.extract import identity_of
from dui.errors import DuiError, Invalid, NotFound, Unavailable, Unprocessable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import FhirRepository, ResourceVersion, amend
from dui.fhir.sql import format_instant
from dui.fhir.xmlsafe import UnsafeXml
from dui.messaging.tables import mssante_message
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, delivered, permanent, transient
from dui.residents import mapping
from dui.residents.sharing import require_shareable_ins
from fhir_profiles import CANONICAL
from mssante import (
    Attachment,
    Disposition,
    MailSender,
    MssanteError,
    Outgoing,
    Permanent,
    Sender,
    Transient,
    XdmFile,
    build_message,
    build_xdm,
    fill_document_slots,
    xdm_subject,
)

KIND = "mssante.send"
PATIENT_DOMAIN = "patient.mssante.fr"
SENDING = f"{CANONICAL}/StructureDefinition/dui-mssante-sending"  # one per recipient, on the DocumentReference
STATES = ("queued", "sent", "processed", "error", "refused")
CDA_TYPES = ("text/xml", "application/xml")
_ADDRESS = re.compile(r"^[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})+$")

SenderProvider = Callable[[], MailSender]


def normalized_address(address: str) -> str:
    """An MSSanté address as sent (lower case), or ``Invalid``."""
    value = (address or "").strip().lower()
    if not _ADDRESS.match(value) or len(value) > 254:
        raise Invalid(f"{address!r} is not an e-mail address (name@domain)", expression="to")
    return value


def is_patient_mailbox(address: str) -> bool:
    return address.endswith(f"@{PATIENT_DOMAIN}")


def request_send(ctx: FhirContext, docref_id: str, address: str, now: datetime) -> Job:
    """Queue a document (as the caller sees it) for ``address``; the same document to the same address is one job."""
    conf = ctx.settings.mssante
    if not conf.can_send:
        raise Unavailable(conf.missing("send"))
    address = normalized_address(address)
    found = ctx.repo.read("DocumentReference", docref_id)
    if found is None or found.deleted or found.body is None:
        raise NotFound(f"DocumentReference/{docref_id} is not a document you may send")
    doc = found.resource()
    key = unique_id(doc)
    if key is None or content_url(doc, CDA_TYPES) is None:
        raise Invalid(f"DocumentReference/{docref_id} has no CDA document to send (a CDA content, text/xml, and "
                      "its masterIdentifier)", expression="DocumentReference.content")
    if is_patient_mailbox(address):
        stop = _patient_mailbox_rule(ctx.internal, doc, address)
        if stop is not None:
            raise Unprocessable(stop, code="business-rule", expression="to")
    job = queue.enqueue(_session(ctx), KIND, f"DocumentReference/{docref_id}", f"{address} {key}", now)
    if job.state == "due" and job.attempts == 0:
        record(ctx.internal, docref_id, address, "queued", now)
    return job


def deliver_send(ctx: FhirContext, sender: SenderProvider, job: Job) -> Outcome:
    """Send the job's document to the job's address if the rules allow it now; record the outcome."""
    store, now = ctx.internal, ctx.clock()
    address, _, key = job.idempotency_key.partition(" ")
    docref_id = job.target.removeprefix("DocumentReference/")
    found = store.read("DocumentReference", docref_id)
    if found is None or found.deleted or found.body is None:
        return permanent("the document no longer exists")
    doc = found.resource()
    if doc.get("status") != "current":
        return _refused(store, docref_id, address, f"the document is {doc.get('status')}: not sent", now)
    if unique_id(doc) != key:
        return _refused(store, docref_id, address, "the document is no longer the one queued", now)
    patient_id = ((doc.get("subject") or {}).get("reference") or "").removeprefix("Patient/")
    patient = store.read("Patient", patient_id)
    if patient is None or patient.deleted or patient.body is None:
        return _refused(store, docref_id, address, "the resident no longer exists", now)
    if is_patient_mailbox(address):
        stop = _patient_mailbox_rule(store, doc, address)
        if stop is not None:
            return _refused(store, docref_id, address, stop, now)
    cda = content_bytes(store, doc, CDA_TYPES)
    if cda is None:
        return _refused(store, docref_id, address, "the document's CDA cannot be read", now)
    try:
        message = _message(ctx, doc, patient.resource(), cda, address, job, now)
    except (MetadataError, UnsafeXml, MssanteError) as exc:
        return _refused(store, docref_id, address, f"the message cannot be built: {str(exc)[:150]}", now)
    try:
        result = sender().send(message)
    except Transient as exc:
        return transient(str(exc)[:200])
    except Permanent as exc:
        return _refused(store, docref_id, address, f"the MSSanté server refused it: {str(exc)[:150]}", now)
    except DuiError as exc:  # not configured any more
        return transient(exc.message[:200])
    if result.refused:
        codes = ", ".join(str(c) for c in sorted(set(result.refused.values())))
        return _refused(store, docref_id, address, f"the MSSanté server refused the recipient ({codes})", now)
    _remember(_session(ctx), result.message_id, docref_id, address, job.id, now)
    record(store, docref_id, address, "sent", now, message_id=result.message_id)
    trail.record(_session(ctx), AuditEntry("mssante-send", "success", ctx.actor, "DocumentReference", docref_id,
                                           detail=_domain(address), patients=(patient_id,)), now)
    return delivered(f"sent {result.message_id}")


def _patient_mailbox_rule(store: FhirRepository, doc: dict[str, Any], address: str) -> str | None:
    """Why the document may not go to this resident's mailbox now, or None."""
    patient_id = ((doc.get("subject") or {}).get("reference") or "").removeprefix("Patient/")
    patient = store.read("Patient", patient_id)
    if patient is None or patient.deleted or patient.body is None:
        return "the document has no resident"
    try:
        ins = require_shareable_ins(patient.resource())
    except DuiError:
        status = mapping.status_of(patient.resource())
        return (f"identity {status.code}: the resident's own mailbox is used only once her identity is qualified "
                "(INS)")
    if address.split("@", 1)[0] != ins.value:
        return f"{PATIENT_DOMAIN} addresses are the resident's INS: this one is not hers"
    if "INVISIBLE_PATIENT" in masking_of(doc):
        return "the document is masked INVISIBLE_PATIENT: it is not sent to the resident"
    return None


def _message(ctx: FhirContext, doc: dict[str, Any], patient: dict[str, Any], cda: bytes, address: str, job: Job,
             now: datetime) -> Any:
    """The MIME message carrying the document: XDM package, readable PDF, MSSanté headers."""
    conf = ctx.settings.mssante
    source_id = ctx.settings.documents.oid
    who = identity_of(patient)
    if who.ins and who.ins_oid:
        entry = entry_from(doc, cda, who.ins, who.ins_oid, source_id)
    else:  # a professional address, an identity not qualified: her local identifier, as the CDA names her
        entry = entry_from(doc, cda, who.local_id, who.local_oid, source_id)
        local = cx(who.local_id, who.local_oid, "PI")
        entry = dataclasses.replace(entry, patient_id=local)
    # the submission set's uniqueId: an OID under ours, the same for every attempt of the job
    submission = submission_set(entry, source_id, f"{source_id}.9.{job.id}", now)
    cda_file = XdmFile("DOC0001.XML", cda, entry.title or "Document CDA")
    metadata = fill_document_slots(_xml(submit_objects(entry, submission)), {entry.entry_uuid: cda_file})
    xdm = build_xdm([cda_file], metadata, Sender("DUI", dui_version, "DUI", conf.sender or ""))
    pdf = content_bytes(ctx.internal, doc, ("application/pdf",))
    type_code = entry.type_code.code
    title = (doc.get("type") or {}).get("text") or entry.title or "Document"
    family = who.used_family or who.birth_family
    subject = xdm_subject(title, family, who.first_given, who.birth_date)
    domain = (conf.sender or "dui.invalid").rsplit("@", 1)[-1]
    digest = hashlib.sha256(f"{job.id} {job.idempotency_key}".encode()).hexdigest()[:16]
    return build_message(Outgoing(
        sender=conf.sender or "", to=(address,), subject=subject,
        body=("Bonjour,\n\nVeuillez trouver ci-joint un document concernant un résident de notre établissement "
              "(pièce jointe IHE_XDM.ZIP, et sa copie lisible en PDF).\n\nMessage envoyé automatiquement par le "
              "dossier usager informatisé.\n"),
        xdm=xdm, pdf=Attachment("DOC0001.PDF", "application/pdf", pdf) if pdf else None, cda_codes=(type_code,),
        end_of_conversation=is_patient_mailbox(address), notification_to=conf.sender,
        message_id=f"<dui.{job.id}.{digest}@{domain}>", date=now))


def _xml(element: Any) -> bytes:
    from lxml import etree

    return bytes(etree.tostring(element, xml_declaration=True, encoding="UTF-8"))


def _domain(address: str) -> str:
    """What the audit trail says of a recipient: its domain (a patient's address is her INS)."""
    return f"to @{address.rsplit('@', 1)[-1]}"


def _refused(store: FhirRepository, docref_id: str, address: str, reason: str, now: datetime) -> Outcome:
    record(store, docref_id, address, "refused", now, detail=reason)
    return permanent(reason)


# --- acknowledgements -----------------------------------------------------------------------------------------

def acknowledge(session: Session, store: FhirRepository, disposition: Disposition, now: datetime) -> bool:
    """Record an MDN received for a message sent here: ``processed``, or ``error`` with the integration code and
    label. False when it answers no message of ours (the caller files it as unknown)."""
    message_id = disposition.original_message_id
    if not message_id:
        return False
    row = session.execute(select(mssante_message).where(mssante_message.c.message_id == message_id)).mappings().first()
    if row is None:
        return False
    failed = "error" in disposition.modifiers or disposition.error_code is not None
    state = "error" if failed else "processed" if disposition.disposition_type == "processed" else "sent"
    code = disposition.error_code if failed else None
    detail = (disposition.error_label or "")[:300] if failed else disposition.disposition_type[:300]
    session.execute(update(mssante_message).where(mssante_message.c.message_id == message_id).values(
        state=state, code=code, detail=detail, updated_at=now))
    record(store, row["docref_id"], row["address"], state, now, message_id=message_id,
           detail=f"{code} {detail}".strip() if failed else None)
    return True


def _remember(session: Session, message_id: str, docref_id: str, address: str, job_id: int, now: datetime) -> None:
    values = {"message_id": message_id, "docref_id": docref_id, "address": address, "job_id": job_id,
              "state": "sent", "sent_at": now, "updated_at": now}
    insert = pg_insert if is_postgresql(session) else sqlite_insert
    session.execute(insert(mssante_message).values(**values).on_conflict_do_nothing(index_elements=["message_id"]))


# --- the state on the DocumentReference -------------------------------------------------------------------------

def record(store: FhirRepository, docref_id: str, address: str, state: str, now: datetime, *,
           message_id: str | None = None, detail: str | None = None) -> ResourceVersion | None:
    """The send of the document to ``address`` (extension ``dui-mssante-sending``, one per recipient): its
    state, when, the Message-ID, and why it was refused or what the MDN said."""

    def change(body: dict[str, Any]) -> None:
        extensions = body.get("extension") or []
        before = next((e for e in extensions if e.get("url") == SENDING and _part(e, "address") == address), None)
        known_id = message_id or (_part(before, "messageId") if before else None)
        parts = [{"url": "address", "valueString": address}, {"url": "state", "valueCode": state},
                 {"url": "when", "valueDateTime": format_instant(now)}]
        if known_id:
            parts.append({"url": "messageId", "valueString": known_id})
        if detail:
            parts.append({"url": "detail", "valueString": detail[:300]})
        body["extension"] = [e for e in extensions if e is not before] + [{"url": SENDING, "extension": parts}]

    return amend(store, "DocumentReference", docref_id, change)


def _part(extension: dict[str, Any] | None, name: str) -> str | None:
    for part in (extension or {}).get("extension") or []:
        if part.get("url") == name:
            value = next((v for k, v in part.items() if k.startswith("value")), None)
            return str(value) if value is not None else None
    return None


def _session(ctx: FhirContext) -> Session:
    return ctx.internal.session  # type: ignore[attr-defined,no-any-return]
