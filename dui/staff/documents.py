"""The resident's documents as the staff see them, and the MSSanté mail waiting for a person (docs/staff-api.md,
"Transfer to hospital and documents").

- ``documents_of``: her DocumentReferences, newest first: the kind (DLU, FLUDT, FLUDR, N1, other, from the
  document's format), type, date, author, status, whether the record changed since it was built, its DMP state (the
  ``dui-dmp-state`` tag) and its MSSanté sendings (``dui-mssante-sending``), and where its PDF is.
- ``pdf_of``: the PDF rendering of a document, read as ``GET /fhir/Binary/{id}`` reads it (the same authorization,
  scoping and audit: the Binary's ``securityContext`` is the resident).
- ``refresh_dlu``: ``POST /fhir/Patient/{id}/$dlu``.
- ``inbox``, ``assign``, ``reject``: the reconciliation queue of ``dui.messaging.inbox``. The queue is listed as
  FHIR shows it, through its Tasks (``Task?code=...|dui-mssante-reconcile&status=requested``): the establishment
  scoping of Tasks (``dui.fhir.scope.OWNED_TYPES``) gives each establishment its own mail and no other's. Assigning
  and rejecting are ``inbox.assign`` and ``inbox.reject`` themselves, run with the staff member's context (the
  documents are filed through her repository: identity vigilance and scoping apply), after the item was found
  among the Tasks she sees.

Every read and write goes through ``Record``: nothing here touches a table.
"""

from __future__ import annotations

from typing import Any

from dui.documents import dmp_feed, freshness, inbound
from dui.documents.extract import BUILT_TAG_SYSTEM
from dui.errors import NotFound
from dui.messaging import inbox, sending
from dui.staff.record import Record, as_json, instant, version_of
from mssante import IntegrationCode

PDF = "application/pdf"
KINDS = {code: kind for kind, code in inbound.FORMATS.items()}  # format code -> DLU, FLUDT, FLUDR, N1
INBOX_STATES = {"requested": "pending", "completed": "assigned", "rejected": "rejected"}


# -- the resident's documents -------------------------------------------------------------------------------------


def documents_of(record: Record, patient_id: str, cursor: str | None, limit: int) -> tuple[
        list[dict[str, Any]], str | None]:
    """One page of the resident's documents, newest first."""
    record.read("Patient", patient_id)
    found, following = record.page("DocumentReference", [("subject", f"Patient/{patient_id}"), ("_sort", "-date"),
                                                          ("_count", str(limit))], cursor)
    return [view(d) for d in found], following


def view(doc: dict[str, Any]) -> dict[str, Any]:
    """A DocumentReference as the staff client shows it."""
    tags = (doc.get("meta") or {}).get("tag") or []
    codings = (doc.get("type") or {}).get("coding") or [{}]
    authors = [a.get("display") for a in doc.get("author") or [] if a.get("display")]
    return {"id": doc["id"], "version": version_of(doc), "kind": kind_of(doc), "type": codings[0].get("code"),
            "title": doc.get("description") or (doc.get("type") or {}).get("text") or codings[0].get("display"),
            "date": doc.get("date"), "author": ", ".join(authors) or None, "status": doc.get("status"),
            "outdated": any(t.get("system") == freshness.FRESHNESS_SYSTEM and t.get("code") == "outdated"
                            for t in tags),
            "dmp": next((t.get("code") for t in tags if t.get("system") == dmp_feed.STATE_SYSTEM), None),
            "pdf": pdf_link(doc), "sendings": sendings_of(doc)}


def kind_of(doc: dict[str, Any]) -> str:
    """DLU, FLUDT, FLUDR or N1 by the document's format code (the volet's formatCode), else ``other``."""
    for content in doc.get("content") or []:
        kind = KINDS.get((content.get("format") or {}).get("code") or "")
        if kind is not None:
            return kind
    built = next((t.get("code") for t in (doc.get("meta") or {}).get("tag") or []
                  if t.get("system") == BUILT_TAG_SYSTEM), None)
    return str(built).upper() if built else "other"


def pdf_link(doc: dict[str, Any]) -> str | None:
    return f"/api/documents/{doc['id']}/pdf" if _pdf_binary(doc) else None


def sendings_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The MSSanté sends recorded on the document, one per address."""
    out = []
    for ext in doc.get("extension") or []:
        if ext.get("url") != sending.SENDING:
            continue
        parts = {p.get("url"): next((v for k, v in p.items() if k.startswith("value")), None)
                 for p in ext.get("extension") or []}
        if parts.get("address") and parts.get("state"):
            out.append({"address": parts["address"], "state": parts["state"], "when": parts.get("when"),
                        "detail": parts.get("detail")})
    return out


def pdf_of(record: Record, docref_id: str) -> tuple[bytes, str]:
    """The PDF of a document and its kind, read as ``GET /fhir/Binary/{id}`` with ``Accept: application/pdf``.
    ``NotFound`` for a document one may not see, and for one without a PDF (a received CDA)."""
    doc, _ = record.read("DocumentReference", docref_id)
    binary_id = _pdf_binary(doc)
    if binary_id is None:
        raise NotFound(f"DocumentReference/{docref_id} has no PDF rendering (a document received as CDA only)")
    result = record.run("GET", f"Binary/{binary_id}", headers={"accept": PDF})
    if result.content_type != PDF or not isinstance(result.body, bytes):
        raise NotFound(f"DocumentReference/{docref_id} has no PDF rendering")
    return result.body, kind_of(doc)


def _pdf_binary(doc: dict[str, Any]) -> str | None:
    for content in doc.get("content") or []:
        attachment = content.get("attachment") or {}
        url = str(attachment.get("url") or "")
        rid = url.removeprefix("Binary/")
        if attachment.get("contentType") == PDF and url.startswith("Binary/") and rid and "/" not in rid:
            return rid
    return None


def refresh_dlu(record: Record, patient_id: str, force: bool) -> tuple[dict[str, Any], bool]:
    """The resident's DLU, built now when the record changed since the one in force (``force``: always); and
    whether it was built now (``$dlu`` answers 201) or is the one in force (200)."""
    params = [{"name": "force", "valueBoolean": True}] if force else []
    result = record.run("POST", f"Patient/{patient_id}/$dlu", body={"resourceType": "Parameters",
                                                                     **({"parameter": params} if params else {})})
    assert result.version is not None  # $dlu answers with the DocumentReference
    return view(result.version.resource()), result.status == 201


# -- the MSSanté mail waiting for a person --------------------------------------------------------------------------


def inbox_page(record: Record, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The mail of the caller's establishment waiting to be filed, oldest first: its Tasks as the caller sees
    them (the queue holds received health documents: who may not read documents has nothing to do with it)."""
    record.ctx.require("s", "DocumentReference")
    found, following = record.page("Task", [("code", f"{inbox.TASK_CODES}|{inbox.RECONCILE}"),
                                            ("status", "requested"), ("_sort", "authored-on"),
                                            ("_count", str(limit))], cursor)
    return [inbox_view(t) for t in found], following


def assign(record: Record, item_id: str, patient_id: str) -> dict[str, Any]:
    """File the message's documents on the resident (``inbox.assign``): who may file documents (create
    DocumentReference) and update the queue's Tasks. The resident is read first: one the caller may not see is
    404, as everywhere in ``/api``."""
    record.ctx.require("u", "Task")
    record.ctx.require("c", "DocumentReference")
    number = _visible(record, item_id)
    record.read("Patient", patient_id)
    done = inbox.assign(record.ctx, number, patient_id)
    return _decided(done.item)


def reject(record: Record, item_id: str, reason: str) -> dict[str, Any]:
    """Close the message without filing it (``inbox.reject``): who may read documents and update the queue's
    Tasks."""
    record.ctx.require("u", "Task")
    record.ctx.require("s", "DocumentReference")
    number = _visible(record, item_id)
    return _decided(inbox.reject(record.ctx, number, reason))


def _visible(record: Record, item_id: str) -> int:
    """The queue number of an item whose Task the caller sees; ``NotFound`` for one of another establishment
    (their Tasks are not in the caller's sight) as for one that does not exist."""
    if not item_id.isdigit() or len(item_id) > 12:
        raise NotFound(f"No message {item_id} in the MSSanté inbox")
    found = record.search("Task", [("identifier", f"{inbox.INBOX_IDENTIFIER}|{int(item_id)}"),
                                   ("code", f"{inbox.TASK_CODES}|{inbox.RECONCILE}"), ("_count", "1")])
    if not found:
        raise NotFound(f"No message {item_id} in the MSSanté inbox")
    return int(item_id)


def inbox_view(task: dict[str, Any]) -> dict[str, Any]:
    """An item of the queue, read from its Task: never the document, the subject or an INS (the Task holds none)."""
    inputs: dict[str, Any] = {}
    for given in task.get("input") or []:
        code = next((c.get("code") for c in (given.get("type") or {}).get("coding") or []), None)
        if code:
            inputs[code] = next((v for k, v in given.items() if k.startswith("value")), None)
    coding = inputs.get("integration-code") or {}
    number = next((i.get("value") for i in task.get("identifier") or []
                   if i.get("system") == inbox.INBOX_IDENTIFIER), None) or inputs.get("inbox-id")
    return {"id": str(number), "task_id": task["id"], "received_at": task.get("authoredOn"),
            "sender_domain": inputs.get("sender-domain"), "code": coding.get("code"),
            "code_label": coding.get("display"), "reason": inputs.get("reason"),
            "state": INBOX_STATES.get(task.get("status") or "", task.get("status") or "pending"),
            "resident_id": ((task.get("for") or {}).get("reference") or "").removeprefix("Patient/") or None,
            "documents": [str((o.get("valueReference") or {}).get("reference") or "").removeprefix(
                "DocumentReference/") for o in task.get("output") or []],
            "note": (task.get("statusReason") or {}).get("text")}


def _decided(item: inbox.InboxItem) -> dict[str, Any]:
    return {"id": str(item.id), "task_id": item.task_id, "received_at": instant(item.received_at),
            "sender_domain": item.sender_domain, "code": item.code,
            "code_label": IntegrationCode(int(item.code)).label if item.code else None, "reason": item.reason,
            "state": item.state,
            "resident_id": item.patient_id, "documents": list(item.docref_ids), "note": item.note}


def as_parameters(body: Any) -> dict[str, Any]:
    """A FHIR ``Parameters`` answer as name -> value."""
    return {p.get("name"): next((v for k, v in p.items() if k.startswith("value")), None)
            for p in as_json(body).get("parameter") or []}
