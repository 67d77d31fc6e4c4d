"""The reconciliation queue of MSSanté mail (docs/mssante.md, "Receiving"): what the poll could not file on a
resident by itself waits here for a person, who files it on the right resident or rejects it.

- ``enqueue`` (the poll, as the system): one row of ``mssante_inbox`` per message (its Message-ID is unique), the
  raw message sealed with the keyring as resource bodies are, the MSSanté integration code (900-906) and a
  one-line reason without health data, the receiving establishment's Organization when known; and a ``Task``
  that shows the message to that establishment's staff.
- ``list_items`` / ``list_pending``: the queue, for ``dui mssante inbox list``.
- ``assign``: files the message's CDA documents on the resident a person names (``inbound.file_cda`` with her id:
  identity vigilance on birth date and names still applies, and a document naming an INS that is not hers is
  refused); ``reject``: closes it with the person's reason. Both audited (who, which resident), both update the
  Task.

**The Task.** ``Task/<task_id>``, ``status=requested``, ``code`` = ``dui-mssante-reconcile``, ``owner`` = the
receiving establishment's Organization (the one whose ``telecom`` carries the address the message was sent to, or
``DUI_MSSANTE_FROM``), ``input`` = the reason, the integration code and the sender's domain: never the document,
never the subject (they stay in the sealed message). A Task belongs to no resident until it is assigned, and
``dui.fhir.scope`` lets an establishment see a Task of no resident when it is its ``owner``: the staff of the
receiving establishment find it (``GET /fhir/Task?code=...|dui-mssante-reconcile&status=requested``), no other
establishment does. Once assigned it names the resident (``for``) and the documents filed (``output``), and is
seen as the resident's record is; rejected, it keeps the reason. Only this module writes these Tasks (``task_rule``):
the queue changes through ``assign`` and ``reject`` (run by the CLI, or by a staff member through ``/api/inbox``),
never through a FHIR write.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.auth.actor import SYSTEM, Actor
from dui.db import is_postgresql
from dui.documents import inbound
from dui.documents.received import read_cda
from dui.documents.received_model import INS_OIDS
from dui.errors import Conflict, Fault, Forbidden, Invalid, NotFound, Unprocessable
from dui.fhir.bodies import Bodies
from dui.fhir.interactions.base import FhirContext
from dui.fhir.scope import FINESS_SYSTEM
from dui.fhir.search.plan import parse_search
from dui.fhir.sql import SqlFhirRepository, format_instant
from dui.messaging.content import Unreadable, cda_documents, one_line
from dui.messaging.tables import mssante_inbox
from fhir_profiles import CANONICAL
from mssante import IntegrationCode, MessageRefused, parse_message

RECONCILE = "dui-mssante-reconcile"
TASK_CODES = f"{CANONICAL}/CodeSystem/dui-task-code"
INPUT_TYPES = f"{CANONICAL}/CodeSystem/dui-mssante-inbox-input"
# UNCONFIRMED: no public code system for the MSSanté integration codes is known to us; ours until one is.
INTEGRATION_CODES = f"{CANONICAL}/CodeSystem/mssante-integration-code"
INBOX_IDENTIFIER = f"{CANONICAL}/mssante-inbox"
RAW = "mssante_inbox.raw"  # what the raw message's seal is bound to (with the row id)
WRITERS = frozenset({"system", "cli"})  # who may write a reconciliation Task (the use cases of this module)


@dataclass(frozen=True)
class InboxItem:
    id: int
    message_id: str
    received_at: datetime
    sender_domain: str
    code: str | None
    reason: str
    owner: str | None
    task_id: str
    state: str
    decided_at: datetime | None
    decided_by: str | None
    patient_id: str | None
    docref_ids: tuple[str, ...]
    note: str | None

    @classmethod
    def from_row(cls, row: Any) -> InboxItem:
        return cls(id=row["id"], message_id=row["message_id"], received_at=row["received_at"],
                   sender_domain=row["sender_domain"], code=row["code"], reason=row["reason"], owner=row["owner"],
                   task_id=row["task_id"], state=row["state"], decided_at=row["decided_at"],
                   decided_by=row["decided_by"], patient_id=row["patient_id"],
                   docref_ids=tuple(json.loads(row["docref_ids"] or "[]")), note=row["note"])


@dataclass(frozen=True)
class Assigned:
    item: InboxItem
    filed: tuple[inbound.Filed, ...]


# -- the poll's side --------------------------------------------------------------------------------------------


def enqueue(ctx: FhirContext, *, message_id: str, received_at: datetime, sender: str, recipients: Sequence[str],
            code: IntegrationCode | None, reason: str, raw: bytes | None) -> InboxItem:
    """Queue a message for a person (in the caller's transaction): the row, the sealed message, the Task.
    ``Conflict`` if this Message-ID is queued already (the caller's dedupe makes that a bug)."""
    session = session_of(ctx)
    now = ctx.clock()
    owner = establishment(ctx, recipients)
    task_id = "mssante-" + hashlib.sha256(message_id.encode()).hexdigest()[:40]
    values = {"message_id": message_id, "received_at": received_at, "sender_domain": _domain(sender),
              "code": str(code.value) if code is not None else None, "reason": one_line(reason), "raw": None,
              "owner": owner, "task_id": task_id, "state": "pending"}
    insert = pg_insert if is_postgresql(session) else sqlite_insert
    inbox_id = session.execute(insert(mssante_inbox).values(**values).on_conflict_do_nothing(
        index_elements=["message_id"]).returning(mssante_inbox.c.id)).scalar()
    if inbox_id is None:
        raise Conflict(f"the message {message_id} is queued already")
    if raw is not None:  # sealed to its row: a copy moved to another row fails to open
        session.execute(update(mssante_inbox).where(mssante_inbox.c.id == inbox_id).values(
            raw=bodies_of(ctx).seal(RAW, inbox_id, 1, raw)))
    item = _item(session, inbox_id)
    ctx.internal.create("Task", ctx.prepare("Task", _task(item, now), None), rid=task_id)
    trail.record(session, AuditEntry("mssante-receive", "success", ctx.actor, "Task", task_id,
                                     detail=f"queued {item.code or 'acknowledgement'}"), now)
    return item


def establishment(ctx: FhirContext, addresses: Sequence[str]) -> str | None:
    """The id of the Organization carrying a FINESS whose ``telecom`` (e-mail) is one of ``addresses`` (the first
    address that matches one wins), or None."""
    wanted = [a.strip().lower() for a in addresses if a and "@" in a]
    if not wanted:
        return None
    plan = parse_search("Organization", [("identifier", f"{FINESS_SYSTEM}|"), ("_count", "200")], ctx.registry,
                        ctx.settings.limits, strict=True)
    found: dict[str, str] = {}
    for version in ctx.repo.fetch(ctx.repo.search(plan).rids):
        for contact in version.resource().get("telecom") or []:
            value = str(contact.get("value") or "").strip().lower().removeprefix("mailto:")
            if contact.get("system") == "email" and value:
                found.setdefault(value, version.id)
    return next((found[a] for a in wanted if a in found), None)


# -- the queue --------------------------------------------------------------------------------------------------


def list_items(session: Session, state: str | None = "pending", limit: int = 200) -> list[InboxItem]:
    """The queue, oldest first: the messages in ``state`` (all of them when None)."""
    query = select(mssante_inbox).order_by(mssante_inbox.c.received_at, mssante_inbox.c.id).limit(limit)
    if state is not None:
        query = query.where(mssante_inbox.c.state == state)
    return [InboxItem.from_row(r) for r in session.execute(query).mappings()]


def list_pending(session: Session, limit: int = 200) -> list[InboxItem]:
    return list_items(session, "pending", limit)


def assign(ctx: FhirContext, inbox_id: int, patient_id: str) -> Assigned:
    """File the message's CDA documents on ``patient_id`` (as ``ctx.actor``) and close it. ``NotFound``,
    ``Conflict`` (decided already), ``Unprocessable`` (nothing to file, the documents are not hers: a document
    naming another INS, identity vigilance on birth date and names); nothing is filed then."""
    session, now = session_of(ctx), ctx.clock()
    item = _pending(session, inbox_id)
    if item.code is None:
        raise Unprocessable(f"message {inbox_id} is an acknowledgement (MDN), not a document: reject it",
                            code="business-rule")
    documents = _documents(ctx, item)
    filed = []
    for document in documents:
        _same_ins(ctx, document, patient_id)
        filed.append(inbound.file_cda(ctx, document, patient_id=patient_id))
    docref_ids = [f.reference.id for f in filed]
    session.execute(update(mssante_inbox).where(mssante_inbox.c.id == inbox_id).values(
        state="assigned", decided_at=now, decided_by=_who(ctx.actor), patient_id=patient_id,
        docref_ids=json.dumps(docref_ids)))
    done = _item(session, inbox_id)
    _update_task(ctx, done, now)
    trail.record(session, AuditEntry("mssante-assign", "success", ctx.actor, "Task", done.task_id,
                                     detail=f"inbox {inbox_id} filed {len(docref_ids)}", count=len(docref_ids),
                                     patients=(patient_id,)), now)
    return Assigned(done, tuple(filed))


def reject(ctx: FhirContext, inbox_id: int, reason: str) -> InboxItem:
    """Close the message without filing it; ``reason`` (one line, kept with it and on the Task) is required."""
    session, now = session_of(ctx), ctx.clock()
    note = one_line(reason or "")
    if not note:
        raise Invalid("say why the message is rejected (--reason)")
    _pending(session, inbox_id)
    session.execute(update(mssante_inbox).where(mssante_inbox.c.id == inbox_id).values(
        state="rejected", decided_at=now, decided_by=_who(ctx.actor), note=note))
    done = _item(session, inbox_id)
    _update_task(ctx, done, now)
    trail.record(session, AuditEntry("mssante-reject", "success", ctx.actor, "Task", done.task_id,
                                     detail=f"inbox {inbox_id} rejected"), now)
    return done


def raw_message(ctx: FhirContext, item: InboxItem) -> bytes | None:
    """The message as received, opened (None when it was too large to download)."""
    row = session_of(ctx).execute(select(mssante_inbox.c.raw).where(mssante_inbox.c.id == item.id)).scalar()
    return bodies_of(ctx).open(RAW, item.id, 1, row)


def _pending(session: Session, inbox_id: int) -> InboxItem:
    query = select(mssante_inbox).where(mssante_inbox.c.id == inbox_id)
    if is_postgresql(session):
        query = query.with_for_update()  # two people deciding at once: the second waits, then sees the first
    row = session.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no message {inbox_id} in the MSSanté inbox (dui mssante inbox list)")
    item = InboxItem.from_row(row)
    if item.state != "pending":
        raise Conflict(f"message {inbox_id} is {item.state} already ({item.decided_by or 'unknown'})")
    return item


def _documents(ctx: FhirContext, item: InboxItem) -> list[bytes]:
    raw = raw_message(ctx, item)
    if raw is None:
        raise Unprocessable(f"message {item.id} was too large to download: read it in the mailbox, file its "
                            "document with dui documents import, then reject it here", code="business-rule")
    try:
        return [d.data for d in cda_documents(parse_message(raw))]
    except MessageRefused as exc:
        raise Unprocessable(f"message {item.id} cannot be read ({exc.reason}): reject it",
                            code="business-rule") from None
    except Unreadable as exc:
        raise Unprocessable(f"message {item.id} has nothing to file ({exc.reason}): reject it",
                            code="business-rule") from None


def _same_ins(ctx: FhirContext, document: bytes, patient_id: str) -> None:
    """A document that names an INS is filed only on the resident holding that INS, or on one without an INS."""
    named = read_cda(document).patient
    if not named.ins or not named.ins_oid:
        return
    found = ctx.repo.read("Patient", patient_id)
    if found is None or found.deleted or found.body is None:
        return  # file_cda says it in its own words
    systems = {f"urn:oid:{oid}" for oid in INS_OIDS}
    held = {(i.get("system"), i.get("value")) for i in found.resource().get("identifier") or []
            if i.get("system") in systems}
    if held and (f"urn:oid:{named.ins_oid}", named.ins) not in held:
        raise Unprocessable(f"The document names another INS than Patient/{patient_id}'s: identity vigilance stops "
                            "the filing (check the document and the resident)", code="business-rule")


# -- the Task ---------------------------------------------------------------------------------------------------


def _task(item: InboxItem, now: datetime) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [_input("reason", "Motif", valueString=item.reason),
                                    _input("sender-domain", "Domaine de l'expéditeur", valueString=item.sender_domain),
                                    _input("inbox-id", "Numéro dans la file", valueString=str(item.id))]
    if item.code is not None:
        code = IntegrationCode(int(item.code))
        inputs.insert(1, _input("integration-code", "Code d'intégration MSSanté", valueCoding={
            "system": INTEGRATION_CODES, "code": item.code, "display": code.label}))
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": INBOX_IDENTIFIER, "value": str(item.id)}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODES, "code": RECONCILE,
                             "display": "Rapprocher d'un résident un courrier MSSanté reçu"}]},
        "description": "Courrier MSSanté reçu que le DUI n'a pas pu classer seul : le classer sur le bon résident "
                       "ou le rejeter (dui mssante inbox assign|reject).",
        "authoredOn": format_instant(item.received_at),
        "lastModified": format_instant(now),
        "input": inputs,
    }
    if item.owner:
        task["owner"] = {"reference": f"Organization/{item.owner}"}
    return task


def _input(code: str, text: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": INPUT_TYPES, "code": code}], "text": text}, **value}


def _update_task(ctx: FhirContext, item: InboxItem, now: datetime) -> None:
    """The Task follows the queue: completed on the resident (and the documents filed), or rejected with the reason.
    A Task someone deleted is written again: the queue is the truth."""
    task = _task(item, now)
    if item.state == "assigned":
        task["status"] = "completed"
        task["for"] = {"reference": f"Patient/{item.patient_id}"}
        task["output"] = [{"type": {"coding": [{"system": INPUT_TYPES, "code": "filed"}], "text": "Document classé"},
                           "valueReference": {"reference": f"DocumentReference/{d}"}} for d in item.docref_ids]
    elif item.state == "rejected":
        task["status"] = "rejected"
        task["statusReason"] = {"text": item.note}
    current = ctx.internal.current("Task", item.task_id, for_update=True)
    # The queue writes its own Task whoever decided (the CLI, or a staff member through /api/inbox): task_rule keeps
    # every other writer out, so the rule is applied to the queue itself, not to the person who decided.
    body = replace(ctx, actor=SYSTEM).prepare("Task", task, current)
    if current is None:
        ctx.internal.create("Task", body, rid=item.task_id)
    else:
        ctx.internal.update(current, "Task", item.task_id, body)


def task_rule(resource: dict[str, Any], previous: Callable[[], dict[str, Any] | None], actor: Actor,
              today: date) -> dict[str, Any]:
    """``write_rules["Task"]``: a reconciliation Task is written by this module only (the system, the CLI)."""
    if actor.kind in WRITERS:
        return resource
    if is_reconcile_task(resource) or is_reconcile_task(previous()):
        raise Forbidden("This Task is the MSSanté reconciliation queue: it changes with dui mssante inbox "
                        "assign|reject, not through the FHIR API")
    return resource


def is_reconcile_task(task: dict[str, Any] | None) -> bool:
    return any(c.get("system") == TASK_CODES and c.get("code") == RECONCILE
               for c in ((task or {}).get("code") or {}).get("coding") or [])


# -- helpers ----------------------------------------------------------------------------------------------------


def _item(session: Session, inbox_id: int) -> InboxItem:
    return InboxItem.from_row(session.execute(select(mssante_inbox).where(mssante_inbox.c.id == inbox_id))
                              .mappings().one())


def _who(actor: Actor) -> str:
    return f"{actor.kind}:{actor.id}"[:128]


def _domain(address: str) -> str:
    """What is kept of the sender: the domain (a patient's mailbox is named by her INS)."""
    domain = address.rpartition("@")[2].strip().lower() if "@" in (address or "") else ""
    return one_line(domain, 255) or "(unknown)"


def session_of(ctx: FhirContext) -> Session:
    """The session of the context's unit of work."""
    return store_of(ctx).session


def bodies_of(ctx: FhirContext) -> Bodies:
    """What seals and opens with the keyring in this unit of work (the store's: one data key per unit)."""
    return store_of(ctx).bodies


def store_of(ctx: FhirContext) -> SqlFhirRepository:
    store = ctx.internal
    if not isinstance(store, SqlFhirRepository):
        raise Fault("the MSSanté inbox needs the database store")
    return store

