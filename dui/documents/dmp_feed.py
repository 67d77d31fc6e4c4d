"""Feeding the resident's DMP (Mon espace santé) with the documents built or filed here (docs/dmp.md).

- ``request_share`` queues one document for the DMP: an outbox job (``dmp.send``) in the caller's transaction,
  keyed by the document's uniqueId (queuing it again changes nothing), and the DocumentReference tagged ``queued``.
- ``deliver`` is the outbox handler. It applies the rules at send time, not only at queue time: the resident's
  identity must be qualified (the sharing gate), she must have been informed, and she must not have opposed;
  a document the rules stop is ``refused`` with the reason, a dead letter. Otherwise it builds the XDS metadata
  from the DocumentReference and its CDA (``dui.dmp.metadata``), sends it (a replacement of the DLU sent before
  as an RPLC), and records the DMP's answer on the DocumentReference (``sent`` with when, or ``refused`` with
  the registry's errors). A network failure is retried by the outbox; resending after a lost answer is harmless
  (the DMP keeps one entry per uniqueId).
- The resident's information and opposition are Consents of her record (``INFORMATION`` and ``OPPOSITION``
  categories of ``dui-dmp``), recorded by the staff like any other resource.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.dmp.errors import DmpError, Permanent, Transient
from dui.dmp.gateway import DmpGateway
from dui.dmp.metadata import MetadataError, entry_from
from dui.errors import DuiError, Invalid, NotFound, Unavailable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import FhirRepository, ResourceVersion
from dui.fhir.search.plan import parse_search
from dui.fhir.sql import format_instant
from dui.fhir.xmlsafe import UnsafeXml
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, delivered, permanent, transient
from dui.residents import mapping
from dui.residents.sharing import require_shareable_ins
from fhir_profiles import CANONICAL

KIND = "dmp.send"
STATE_SYSTEM = f"{CANONICAL}/CodeSystem/dui-dmp-state"
STATES = {"queued": "En attente d'envoi au DMP", "sent": "Envoyé au DMP", "refused": "Refusé (DMP ou règle)",
          "masked": "Masqué dans le DMP"}
SUBMISSION = f"{CANONICAL}/StructureDefinition/dui-dmp-submission"
CONSENT_SYSTEM = f"{CANONICAL}/CodeSystem/dui-dmp"
INFORMATION, OPPOSITION = "information", "opposition"
OPPOSITION_REASON = f"{CANONICAL}/StructureDefinition/dui-dmp-opposition-reason"

GatewayProvider = Callable[[], DmpGateway]


def request_share(ctx: FhirContext, docref_id: str, now: datetime) -> Job:
    """Queue a document (as the caller sees it) for the DMP; the same document queued twice is one job."""
    if ctx.settings.is_prod and not ctx.settings.dmp.url:
        raise Unavailable("The DMP is not configured (DUI_DMP_URL and its certificates): nothing can be sent to it")
    found = ctx.repo.read("DocumentReference", docref_id)
    if found is None or found.deleted:
        raise NotFound(f"DocumentReference/{docref_id} is not a document you may send")
    doc = found.resource()
    key = unique_id(doc)
    if key is None or _cda_url(doc) is None:
        raise Invalid(f"DocumentReference/{docref_id} has no CDA document to send (a CDA content, text/xml, and "
                      "its masterIdentifier)", expression="DocumentReference.content")
    job = queue.enqueue(_session(ctx), KIND, f"DocumentReference/{docref_id}", key, now)
    if job.state == "due" and job.attempts == 0:
        set_state(ctx.internal, docref_id, "queued", now)
    return job


def unique_id(doc: dict[str, Any]) -> str | None:
    """The XDS uniqueId of a document: its CDA id, ``root^extension``."""
    master = doc.get("masterIdentifier") or {}
    system, value = master.get("system"), master.get("value")
    if not isinstance(system, str) or not system.startswith("urn:oid:") or not isinstance(value, str):
        return None
    return f"{system.removeprefix('urn:oid:')}^{value}"


def handler(context_of: Callable[[Session], FhirContext], gateway: GatewayProvider
            ) -> Callable[[Session, Job], Outcome]:
    """The outbox handler of ``dmp.send`` jobs, bound to the service (its context as the system, its gateway)."""

    def deliver(session: Session, job: Job) -> Outcome:
        return deliver_job(context_of(session), gateway, job)

    return deliver


def deliver_job(ctx: FhirContext, gateway: GatewayProvider, job: Job) -> Outcome:
    """Send the job's document if the rules allow it now; record the outcome on the DocumentReference."""
    store, now = ctx.internal, ctx.clock()
    rtype, _, docref_id = job.target.partition("/")
    found = store.read(rtype, docref_id) if rtype == "DocumentReference" else None
    if found is None or found.deleted:
        return permanent("the document no longer exists")
    doc = found.resource()
    if doc.get("status") != "current":  # replaced before it could be sent: its successor goes instead
        return _refused(store, docref_id, f"the document is {doc.get('status')}: not sent", now)
    patient_id = ((doc.get("subject") or {}).get("reference") or "").removeprefix("Patient/")
    patient = store.read("Patient", patient_id)
    if patient is None or patient.deleted:
        return _refused(store, docref_id, "the resident no longer exists", now)
    try:
        ins = require_shareable_ins(patient.resource())
    except DuiError:
        status = mapping.status_of(patient.resource())
        return _refused(store, docref_id, f"identity {status.code}: the INS is shared only once the identity is "
                        "qualified", now)
    stop = _consent_rule(ctx, patient_id)
    if stop is not None:
        return _refused(store, docref_id, stop, now)
    cda = _cda(store, doc)
    if cda is None:
        return _refused(store, docref_id, "the document's CDA cannot be read", now)
    try:
        entry = entry_from(doc, cda, ins.value, ins.kind.system.removeprefix("urn:oid:"), ctx.settings.documents.oid)
    except (MetadataError, UnsafeXml) as exc:
        return _refused(store, docref_id, f"metadata: {str(exc)[:160]}", now)
    replaces = _replaced_entry(store, doc)
    try:
        outcome = gateway().provide(entry, cda, replaces=replaces)
    except Permanent as exc:
        codes = ", ".join(sorted({str(getattr(e, "error_code", e)) for e in exc.errors})) or str(exc)
        return _refused(store, docref_id, f"the DMP refused it: {codes}"[:200], now)
    except (Transient, DmpError) as exc:
        return transient(str(exc)[:200])
    set_state(store, docref_id, "sent", now, submission={"entryUUID": entry.entry_uuid, "uniqueId": entry.unique_id,
                                                         "status": outcome.status})
    # The resident's data left for the DMP: the audit trail names her (the outbox's own entry names the job only)
    trail.record(_session(ctx), AuditEntry("dmp-send", "success", ctx.actor, "DocumentReference", docref_id,
                                           detail=outcome.status, patients=(patient_id,)), now)
    return delivered(f"{outcome.status} {entry.entry_uuid}")


def _refused(store: FhirRepository, docref_id: str, reason: str, now: datetime) -> Outcome:
    set_state(store, docref_id, "refused", now, reason=reason)
    return permanent(reason)


def _consent_rule(ctx: FhirContext, patient_id: str) -> str | None:
    """Why the rules stop a send now (opposition, or no information recorded), or None."""
    plan = parse_search("Consent", [("patient", f"Patient/{patient_id}"), ("category", f"{CONSENT_SYSTEM}|"),
                                    ("status", "active"), ("_count", "100")], ctx.registry, ctx.settings.limits,
                        strict=True)
    active = [v.resource() for v in ctx.internal.fetch(ctx.internal.search(plan).rids)]
    oppositions = [c for c in active if _has(c, OPPOSITION)]
    if oppositions:
        reason = next((e.get("valueString") for c in oppositions for e in c.get("extension") or []
                       if e.get("url") == OPPOSITION_REASON), None)
        return "the resident opposed feeding her DMP" + (f" ({str(reason)[:80]})" if reason else "")
    if not any(_has(c, INFORMATION) for c in active):
        return "the resident's information about the DMP is not recorded"
    return None


def _has(consent: dict[str, Any], code: str) -> bool:
    return any(c.get("system") == CONSENT_SYSTEM and c.get("code") == code
               for concept in consent.get("category") or [] for c in concept.get("coding") or [])


def _cda_url(doc: dict[str, Any]) -> str | None:
    for content in doc.get("content") or []:
        attachment = content.get("attachment") or {}
        if attachment.get("contentType") in ("text/xml", "application/xml") and isinstance(attachment.get("url"), str):
            return str(attachment["url"])
    return None


def _cda(store: FhirRepository, doc: dict[str, Any]) -> bytes | None:
    url = _cda_url(doc)
    if url is None or not url.startswith("Binary/"):
        return None
    binary = store.read("Binary", url.removeprefix("Binary/"))
    if binary is None or binary.deleted:
        return None
    try:
        return base64.b64decode(binary.resource().get("data") or "", validate=True)
    except ValueError:
        return None


def _replaced_entry(store: FhirRepository, doc: dict[str, Any]) -> str | None:
    """The entryUUID of the document this one replaces, when that one was sent (an RPLC), else None."""
    for relation in doc.get("relatesTo") or []:
        if relation.get("code") != "replaces":
            continue
        ref = (relation.get("target") or {}).get("reference") or ""
        old = store.read("DocumentReference", ref.removeprefix("DocumentReference/"))
        if old is None or old.body is None:
            continue
        for ext in old.resource().get("extension") or []:
            if ext.get("url") == SUBMISSION:
                for part in ext.get("extension") or []:
                    if part.get("url") == "entryUUID":
                        return str(part.get("valueString"))
    return None


def set_state(store: FhirRepository, docref_id: str, state: str, now: datetime, *, reason: str | None = None,
              submission: dict[str, str] | None = None) -> ResourceVersion | None:
    """The document's DMP state (``meta.tag`` of ``dui-dmp-state``, searchable with ``_tag``), with the registry's
    answer or the reason it was refused (``dui-dmp-submission``)."""
    current = store.current("DocumentReference", docref_id, for_update=True)
    stored = store.read("DocumentReference", docref_id)
    if current is None or current.deleted or stored is None or stored.body is None:
        return None
    body = copy.deepcopy(stored.resource())
    meta = body.setdefault("meta", {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    meta["tag"] = [t for t in meta.get("tag") or [] if t.get("system") != STATE_SYSTEM]
    meta["tag"].append({"system": STATE_SYSTEM, "code": state, "display": STATES[state]})
    parts = [{"url": "state", "valueCode": state}, {"url": "when", "valueDateTime": format_instant(now)}]
    if reason:
        parts.append({"url": "reason", "valueString": reason})
    for key, value in (submission or {}).items():
        parts.append({"url": key, "valueString": value})
    body["extension"] = [e for e in body.get("extension") or [] if e.get("url") != SUBMISSION]
    body["extension"].append({"url": SUBMISSION, "extension": parts})
    return store.update(current, "DocumentReference", docref_id, body)


def _session(ctx: FhirContext) -> Session:
    return ctx.internal.session  # type: ignore[attr-defined,no-any-return]
