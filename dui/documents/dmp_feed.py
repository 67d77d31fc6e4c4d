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
  Before each send the DMP is asked (TD0.2) whether she has a DMP and whether this structure may feed it.
- The resident's information and opposition are Consents of her record (``INFORMATION`` and ``OPPOSITION``
  categories of ``dui-dmp``), recorded by the staff like any other resource.
- Masking, archiving and deleting (TD3.3) are facts of the record: the DocumentReference's ``securityLabel``
  (TRE_A07 masking codes), the extension ``dui-dmp-availability`` (archived, deleted) and its status
  (``entered-in-error``, or deleted: deleted in the DMP too). ``on_change``, a listener of the store, queues a
  ``dmp.update`` job in the same transaction whenever one of them changes, whatever the path of the write (FHIR,
  CLI, the staff client). ``deliver_update`` asks the DMP how it holds the document now (ITI-18) and sends what
  differs (ITI-57): a lost answer or a second job costs nothing.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.dmp.errors import DmpError, Permanent, Transient
from dui.dmp.gateway import DEPRECATED, DmpGateway, Registered
from dui.dmp.metadata import (
    APPROVED,
    ARCHIVED,
    DELETED,
    MASKING_DISPLAY,
    MASKING_SYSTEM,
    MASKING_SYSTEMS,
    MetadataError,
    entry_from,
    masking_of,
)
from dui.errors import Conflict, DuiError, Invalid, NotFound, Unavailable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import FhirRepository, ResourceVersion, amend
from dui.fhir.search.plan import parse_search
from dui.fhir.sql import SqlFhirRepository, format_instant
from dui.fhir.xmlsafe import UnsafeXml
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, delivered, permanent, transient
from dui.residents import mapping
from dui.residents.sharing import require_shareable_ins
from fhir_profiles import CANONICAL

KIND = "dmp.send"
UPDATE_KIND = "dmp.update"
STATE_SYSTEM = f"{CANONICAL}/CodeSystem/dui-dmp-state"
STATES = {"queued": "En attente d'envoi au DMP", "sent": "Envoyé au DMP", "refused": "Refusé (DMP ou règle)",
          "masked": "Envoyé au DMP, masqué", "archived": "Archivé dans le DMP", "deleted": "Supprimé du DMP"}
AVAILABILITY = f"{CANONICAL}/StructureDefinition/dui-dmp-availability"
AVAILABILITIES = {"approved": APPROVED, "archived": ARCHIVED, "deleted": DELETED}
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
    dmp = gateway()
    try:
        access = dmp.check(ins.value, ins.kind.system.removeprefix("urn:oid:"))  # TD0.2, before each send
        if not access.exists:
            return _refused(store, docref_id, "the resident has no DMP (TD0.2)", now)
        if not access.authorized:
            return _refused(store, docref_id, f"this establishment may not feed her DMP (TD0.2: "
                            f"{access.detail or 'access refused'})"[:200], now)
        replaces = _replaced_entry(dmp, store, doc, entry.patient_id)
        outcome = dmp.provide(entry, cda, replaces=replaces)
    except Permanent as exc:
        return _refused(store, docref_id, f"the DMP refused it: {_codes(exc)}"[:200], now,
                        registry_errors=_texts(exc.errors))
    except (Transient, DmpError) as exc:
        return transient(str(exc)[:200])
    set_state(store, docref_id, "masked" if entry.masking else "sent", now, submission={
        "entryUUID": entry.entry_uuid, "uniqueId": entry.unique_id, "status": outcome.status, "version": "1",
        "masking": " ".join(sorted(entry.masking)), "registryErrors": _texts(outcome.errors)})
    # The resident's data left for the DMP: the audit trail names her (the outbox's own entry names the job only)
    trail.record(_session(ctx), AuditEntry("dmp-send", "success", ctx.actor, "DocumentReference", docref_id,
                                           detail=outcome.status, patients=(patient_id,)), now)
    return delivered(f"{outcome.status} {entry.entry_uuid}")


def _refused(store: FhirRepository, docref_id: str, reason: str, now: datetime,
             registry_errors: str = "") -> Outcome:
    """The document refused: the reason and the registry's errors (codes and texts) on the DocumentReference; the
    outbox keeps the reason only (its texts may quote the INS, and the outbox holds no health data)."""
    set_state(store, docref_id, "refused", now, reason=reason, submission={"registryErrors": registry_errors})
    return permanent(reason)


def _texts(errors: tuple[object, ...]) -> str:
    """Each RegistryError as ``severity code: text``, for the DocumentReference."""
    return "; ".join(f"{getattr(e, 'severity', '') or 'Error'} {getattr(e, 'error_code', e)}: "
                     f"{getattr(e, 'code_context', '')}".strip() for e in errors)[:1000]


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
    return content_url(doc, ("text/xml", "application/xml"))


def content_url(doc: dict[str, Any], content_types: tuple[str, ...]) -> str | None:
    """The url of the document's first content of one of ``content_types``."""
    for content in doc.get("content") or []:
        attachment = content.get("attachment") or {}
        if attachment.get("contentType") in content_types and isinstance(attachment.get("url"), str):
            return str(attachment["url"])
    return None


def _cda(store: FhirRepository, doc: dict[str, Any]) -> bytes | None:
    return content_bytes(store, doc, ("text/xml", "application/xml"))


def content_bytes(store: FhirRepository, doc: dict[str, Any], content_types: tuple[str, ...]) -> bytes | None:
    """The bytes of the document's content of one of ``content_types``, read from its Binary (None: none)."""
    url = content_url(doc, content_types)
    if url is None or not url.startswith("Binary/"):
        return None
    binary = store.read("Binary", url.removeprefix("Binary/"))
    if binary is None or binary.deleted:
        return None
    try:
        return base64.b64decode(binary.resource().get("data") or "", validate=True)
    except ValueError:
        return None


def _codes(exc: Permanent) -> str:
    return ", ".join(sorted({str(getattr(e, "error_code", e)) for e in exc.errors})) or str(exc)


def _replaced_entry(dmp: DmpGateway, store: FhirRepository, doc: dict[str, Any], patient_id: str) -> str | None:
    """The entryUUID, as the DMP holds it now, of the approved document this one replaces (an RPLC), else None.

    The DMP is asked (by the replaced document's uniqueId, for this patient only): what a client wrote in the
    record is not trusted to name an entry of the DMP."""
    for relation in doc.get("relatesTo") or []:
        if relation.get("code") != "replaces":
            continue
        ref = (relation.get("target") or {}).get("reference") or ""
        old = store.read("DocumentReference", ref.removeprefix("DocumentReference/"))
        old_uid = unique_id(old.resource()) if old is not None and old.body is not None else None
        if old_uid is None:
            continue
        registered = dmp.lookup(old_uid, patient_id)
        if registered is not None and registered.status == APPROVED:
            return registered.entry_uuid
    return None


def set_state(store: FhirRepository, docref_id: str, state: str, now: datetime, *, reason: str | None = None,
              submission: dict[str, str] | None = None) -> ResourceVersion | None:
    """The document's DMP state (``meta.tag`` of ``dui-dmp-state``, searchable with ``_tag``), with the registry's
    answer or the reason it was refused (``dui-dmp-submission``)."""
    parts = [{"url": "state", "valueCode": state}, {"url": "when", "valueDateTime": format_instant(now)}]
    if reason:
        parts.append({"url": "reason", "valueString": reason})
    for key, value in (submission or {}).items():
        if value:  # FHIR has no empty strings
            parts.append({"url": key, "valueString": value})

    def change(body: dict[str, Any]) -> None:
        meta = body["meta"]
        meta["tag"] = [t for t in meta.get("tag") or [] if t.get("system") != STATE_SYSTEM]
        meta["tag"].append({"system": STATE_SYSTEM, "code": state, "display": STATES[state]})
        body["extension"] = [e for e in body.get("extension") or [] if e.get("url") != SUBMISSION]
        body["extension"].append({"url": SUBMISSION, "extension": parts})

    return amend(store, "DocumentReference", docref_id, change)


# --- TD3.3: masking, archive, delete ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Wanted:
    """How the record wants a document shown in the DMP."""

    masking: frozenset[str]
    availability: str  # APPROVED, ARCHIVED or DELETED


def wanted(doc: dict[str, Any] | None) -> Wanted:
    """What the record says of the document in the DMP (None: the document was deleted here)."""
    if doc is None or doc.get("status") == "entered-in-error":
        return Wanted(frozenset(), DELETED)
    asked = next((e.get("valueCode") for e in doc.get("extension") or [] if isinstance(e, dict)
                  and e.get("url") == AVAILABILITY), None)
    return Wanted(masking_of(doc), AVAILABILITIES.get(str(asked), APPROVED))


def on_change(repo: SqlFhirRepository, version: ResourceVersion) -> None:
    """Queue a DMP update when a write changes how a document is to be shown there (listener of the store)."""
    if version.type != "DocumentReference" or version.version <= 1:
        return
    before = repo.vread("DocumentReference", version.id, version.version - 1)
    if before is None or before.body is None:
        return
    old = before.resource()
    new = version.resource() if version.body is not None else None
    if wanted(old) == wanted(new):
        return
    key = unique_id(new or old)
    if key is not None:  # a document the DMP can hold: the job finds out whether it does
        queue.enqueue(repo.session, UPDATE_KIND, f"DocumentReference/{version.id}", f"{key}@{version.version}",
                      repo.clock())


def deliver_update(ctx: FhirContext, gateway: GatewayProvider, job: Job) -> Outcome:
    """Bring the DMP's metadata of the job's document to what the record wants now (ITI-18, then ITI-57)."""
    store, now = ctx.internal, ctx.clock()
    docref_id = job.target.removeprefix("DocumentReference/")
    current, doc = _last_known(store, docref_id)
    if doc is None:
        return permanent("the document cannot be read")
    want = wanted(current)
    uid = unique_id(doc)
    patient_id = ((doc.get("subject") or {}).get("reference") or "").removeprefix("Patient/")
    patient = store.read("Patient", patient_id)
    if uid is None or patient is None or patient.deleted:
        return permanent("the document or its resident can no longer be read")
    try:
        ins = require_shareable_ins(patient.resource())
    except DuiError:
        return permanent("the resident's identity is no longer qualified: her DMP cannot be addressed")
    cda = _cda(store, doc)
    if cda is None:
        return permanent("the document's CDA cannot be read")
    try:
        entry = entry_from(doc, cda, ins.value, ins.kind.system.removeprefix("urn:oid:"), ctx.settings.documents.oid)
    except (MetadataError, UnsafeXml) as exc:
        return permanent(f"metadata: {str(exc)[:160]}")
    dmp = gateway()
    try:
        registered = dmp.lookup(uid, entry.patient_id)
        if registered is None:
            if queue.live(_session(ctx), KIND, uid) is not None:
                return transient("not in the DMP yet: its sending is pending")
            return delivered("not in the DMP: nothing to update (a masking goes with its first sending)")
        if registered.status == DEPRECATED:
            return delivered("replaced in the DMP: nothing to update")
        if registered.status == DELETED:
            if want.availability == DELETED:
                return delivered("deleted from the DMP")
            return permanent("deleted from the DMP: it cannot be changed any more")
        if want.masking != registered.masking and want.availability != DELETED:
            version = dataclasses.replace(entry, entry_uuid=f"urn:uuid:{uuid.uuid4()}")
            dmp.update_metadata(version, registered, masking=want.masking)
            registered = Registered(version.entry_uuid, registered.logical_id, registered.version + 1,
                                    registered.status, want.masking)
        if want.availability != registered.status:
            dmp.update_metadata(entry, registered, status=want.availability)
            registered = dataclasses.replace(registered, status=want.availability)
    except Permanent as exc:
        return permanent(f"the DMP refused the update: {_codes(exc)}"[:200])
    except (Transient, DmpError) as exc:
        return transient(str(exc)[:200])
    state = {DELETED: "deleted", ARCHIVED: "archived"}.get(registered.status,
                                                           "masked" if registered.masking else "sent")
    if current is not None:
        set_state(store, docref_id, state, now, submission={
            "entryUUID": registered.entry_uuid, "uniqueId": uid, "version": str(registered.version),
            "masking": " ".join(sorted(registered.masking))})
    trail.record(_session(ctx), AuditEntry("dmp-update", "success", ctx.actor, "DocumentReference", docref_id,
                                           detail=state, patients=(patient_id,)), now)
    return delivered(f"{state}, version {registered.version}")


def _last_known(store: FhirRepository, docref_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The document now (None when deleted here) and its last content (before a deletion)."""
    found = store.read("DocumentReference", docref_id)
    if found is None:
        return None, None
    if not found.deleted and found.body is not None:
        body = found.resource()
        return body, body
    before = store.vread("DocumentReference", docref_id, found.version - 1) if found.version > 1 else None
    return None, (before.resource() if before is not None and before.body is not None else None)


def request_visibility(ctx: FhirContext, docref_id: str, *, mask: frozenset[str] = frozenset(),
                       unmask: frozenset[str] = frozenset(), availability: str | None = None) -> ResourceVersion:
    """Change how a document is shown in the DMP: a new version of its DocumentReference (written as the caller,
    through the access rules), which queues the DMP update (``on_change``)."""
    unknown = (mask | unmask) - set(MASKING_DISPLAY)
    if unknown:
        raise Invalid(f"unknown masking code(s) {', '.join(sorted(unknown))}; TRE_A07 codes: "
                      f"{', '.join(sorted(MASKING_DISPLAY))}", expression="securityLabel")
    if availability is not None and availability not in AVAILABILITIES:
        raise Invalid(f"availability must be one of {', '.join(AVAILABILITIES)}")
    found = ctx.repo.read("DocumentReference", docref_id)
    if found is None or found.deleted or found.body is None:
        raise NotFound(f"DocumentReference/{docref_id} is not a document you may change")
    body = copy.deepcopy(found.resource())
    if unique_id(body) is None:
        raise Invalid(f"DocumentReference/{docref_id} has no XDS uniqueId (masterIdentifier): the DMP cannot hold "
                      "it", expression="DocumentReference.masterIdentifier")
    if wanted(body).availability == DELETED:
        raise Conflict(f"DocumentReference/{docref_id} is deleted from the DMP: it cannot change there any more")
    keep = masking_of(body) - unmask
    labels = [label for label in body.get("securityLabel") or []
              if not any(c.get("system") in MASKING_SYSTEMS for c in label.get("coding") or [])]
    labels += [{"coding": [{"system": MASKING_SYSTEM, "code": code, "display": MASKING_DISPLAY[code]}]}
               for code in sorted(keep | mask)]
    body["securityLabel"] = labels
    if availability is not None:
        body["extension"] = [e for e in body.get("extension") or [] if e.get("url") != AVAILABILITY]
        if availability != "approved":
            body["extension"].append({"url": AVAILABILITY, "valueCode": availability})
    meta = body.get("meta") or {}
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    current = ctx.repo.current("DocumentReference", docref_id, for_update=True)
    return ctx.repo.update(current, "DocumentReference", docref_id, body)


def _session(ctx: FhirContext) -> Session:
    return ctx.internal.session  # type: ignore[attr-defined,no-any-return]
