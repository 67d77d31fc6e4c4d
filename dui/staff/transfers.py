"""A resident's transfer to hospital, in one call, and her return (docs/staff-api.md, "Transfer to hospital and
documents").

**How a transfer is recorded.** Two facts, both ordinary FHIR of her record:

- *the stay is on leave*: her current stay (the ``Encounter`` in progress in the EHPAD) takes the R4 status
  ``onleave`` ("the Encounter has begun, but the patient is temporarily on leave"), its ``statusHistory`` keeps
  the period it was in progress, and her room (``Encounter.location``) becomes ``reserved`` ("held empty for this
  patient"). The stay is not finished: she stays a resident of the establishment, her place is kept, she remains
  visible to its staff (a stay on leave still grants sight, ``dui.fhir.scope.CURRENT_ENCOUNTER``). She is no
  longer *present*: the rounds, "my residents now" and the fall sensor of her room leave her out until she
  comes back.
- *the transfer itself* is a ``Task`` of the resident (code ``dui-hospital-transfer`` of ``dui-task-code``),
  ``in-progress`` from her departure to her return: ``executionPeriod`` (departure, return), ``reasonCode`` (the
  motif), ``encounter`` (the stay), ``focus`` (the FLUDT), ``input`` (the hospital's name and MSSanté address,
  the FLUDT and the DLU sent with her), ``output`` (the FLUDR that came back), ``requester`` (who recorded it).
  Why a Task rather than an Encounter of the hospitalisation ``partOf`` the stay: an Encounter in progress is
  what every "where is she now" reading of the record takes for her stay (the rounds, the residents present,
  the stay a received document is linked to), and by default a nurse may update a stay but not create an
  Encounter; the hospitalisation is the hospital's encounter, the EHPAD records that it sent her there and
  what went with her, which is what a Task says (TDDUI also records transports as Tasks).

**The call.** ``start`` does, in the request's one unit of work: the stay on leave, the FLUDT built
(``$fludt``), the DLU refreshed (``$dlu``: built now, since the record has just changed), both queued for the
hospital's MSSanté address through the outbox (``$mssante-send``) when MSSanté is configured and the caller may
send documents out, and the Task. The stay is put on leave first so that the DLU sent shows the record as it is
at departure and stays the DLU in force (a DLU replaced before the worker sends it is not sent). MSSanté not
configured, a caller whose role may not send documents (updating DocumentReference, by default the médecins),
or no address: the documents are built all the same (the client prints them), and the answer says why they were
not queued. Any refusal of a part refuses the whole (nothing is written).

``finish`` ends it: the Task completed (the return time, the FLUDR as its output), the stay in progress again and
her room active. The FLUDR, when one came back, is the one the received-document code filed (MSSanté, ``dui
documents import``, ``POST /fhir/DocumentReference``): its exit diagnoses, treatments and devices are already in
her record, linked to her stay (``dui.documents.inbound``); the return links the document to the transfer and says
how many resources it gave.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from dui.auth.actor import Actor
from dui.errors import Conflict, NotFound, PreconditionFailed, Unprocessable
from dui.messaging import sending
from dui.messaging.inbox import TASK_CODES
from dui.residents.provenance import actor_reference
from dui.staff import documents
from dui.staff.record import Record, as_json, instant, version_of
from fhir_profiles import CANONICAL

TRANSFER = "dui-hospital-transfer"
INPUTS = f"{CANONICAL}/CodeSystem/dui-hospital-transfer-input"
LEAVE, PRESENT = "onleave", "in-progress"
SKEW = timedelta(minutes=5)  # a client's clock a little ahead of ours


def start(record: Record, actor: Actor, now: datetime, patient_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Record the transfer of a resident present in the establishment; returns its view, with the documents and
    the state of their MSSanté sends. ``Conflict`` if she is at the hospital already."""
    patient, _ = record.read("Patient", patient_id)
    departed = facts.get("departed_at") or now
    if departed > now + SKEW:
        raise Unprocessable("The departure cannot be in the future: record the transfer as she leaves",
                            code="business-rule", expression="departed_at")
    ongoing = _transfers(record, patient_id, [("status", "in-progress"), ("_count", "1")])
    if ongoing:
        raise Conflict(f"Patient/{patient_id} is at the hospital already (transfer {ongoing[0]['id']}): record her "
                       "return first", patients=(patient_id,))
    stay, stay_version = _current_stay(record, patient)
    _update_stay(record, _on_leave(stay, instant(departed)), stay_version)
    hospital = facts["hospital"]
    address = sending.normalized_address(hospital["mssante"]) if hospital.get("mssante") else None
    fludt = record.run("POST", f"Patient/{patient_id}/$fludt", body=_fludt_parameters(facts))
    dlu = record.run("POST", f"Patient/{patient_id}/$dlu", body={"resourceType": "Parameters"})
    assert fludt.version is not None and dlu.version is not None  # both operations answer with the document
    sent = {doc.id: _send(record, doc.id, address) for doc in (fludt.version, dlu.version)}
    task = {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": TRANSFER,
                             "display": "Transfert vers un établissement de santé"}]},
        "description": f"Transfert vers {hospital.get('name') or address}",
        "for": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{stay['id']}"},
        "focus": {"reference": f"DocumentReference/{fludt.version.id}"},
        "executionPeriod": {"start": instant(departed)},
        "authoredOn": instant(now),
        "lastModified": instant(now),
        "requester": actor_reference(actor),
        "reasonCode": {"text": facts["reason"]},
        "input": [*([_input("hospital-name", "Établissement de santé", valueString=hospital["name"])]
                    if hospital.get("name") else []),
                  *([_input("hospital-mssante", "Adresse MSSanté", valueString=address)] if address else []),
                  _input("fludt", "FLUDT", valueReference={"reference": f"DocumentReference/{fludt.version.id}"}),
                  _input("dlu", "DLU", valueReference={"reference": f"DocumentReference/{dlu.version.id}"})],
    }
    if facts.get("note"):
        task["note"] = [{"text": facts["note"], "time": instant(now)}]
    created, version = record.create(task)
    docs = {fludt.version.id: fludt.version.resource(), dlu.version.id: dlu.version.resource()}
    return view({**created, "meta": {**created.get("meta", {}), "versionId": str(version)}}, docs, sent)


def finish(record: Record, now: datetime, patient_id: str, transfer_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Record the resident's return: the transfer completed, the stay in progress again, the FLUDR linked.
    ``Conflict`` if the transfer is over already."""
    record.read("Patient", patient_id)
    task, version = _transfer(record, patient_id, transfer_id)
    if task.get("status") != "in-progress":
        raise Conflict(f"Transfer {transfer_id} is over already ({task.get('status')}): she came back on "
                       f"{(task.get('executionPeriod') or {}).get('end')}", patients=(patient_id,))
    returned = facts.get("returned_at") or now
    departed = (task.get("executionPeriod") or {}).get("start")
    if returned > now + SKEW:
        raise Unprocessable("The return cannot be in the future: record it as she arrives", code="business-rule",
                            expression="returned_at")
    if departed and instant(returned) < departed:
        raise Unprocessable(f"She cannot come back before she left ({departed})", code="business-rule",
                            expression="returned_at")
    fludr = _fludr(record, patient_id, facts["fludr"]) if facts.get("fludr") else None
    stay_id = ((task.get("encounter") or {}).get("reference") or "").removeprefix("Encounter/")
    if stay_id:
        stay, stay_version = record.read("Encounter", stay_id)
        if stay.get("status") == LEAVE:  # a stay someone ended or changed meanwhile is left as it is
            _update_stay(record, _back(stay, instant(returned)), stay_version)
    task["status"] = "completed"
    task["executionPeriod"] = {**(task.get("executionPeriod") or {}), "end": instant(returned)}
    task["lastModified"] = instant(now)
    if fludr is not None:
        task["output"] = [{"type": {"coding": [{"system": INPUTS, "code": "fludr"}], "text": "FLUDR"},
                           "valueReference": {"reference": f"DocumentReference/{fludr['id']}"}}]
    task.pop("meta", None)
    try:
        updated, new_version = record.update(task, f'W/"{version}"')
    except PreconditionFailed:
        raise Conflict(f"Transfer {transfer_id} changed meanwhile: read it again", patients=(patient_id,)) from None
    docs = _documents(record, [updated])
    return view({**updated, "meta": {**updated.get("meta", {}), "versionId": str(new_version)}}, docs, {})


def transfers_of(record: Record, patient_id: str, cursor: str | None, limit: int) -> tuple[
        list[dict[str, Any]], str | None]:
    """The resident's transfers, the latest first, with the state of their documents' MSSanté sends."""
    record.read("Patient", patient_id)
    found, following = record.page("Task", [("patient", f"Patient/{patient_id}"), ("code", f"{TASK_CODES}|{TRANSFER}"),
                                            ("_sort", "-authored-on"), ("_count", str(limit))], cursor)
    docs = _documents(record, found)
    return [view(t, docs, {}) for t in found], following


def view(task: dict[str, Any], docs: dict[str, dict[str, Any]], sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A transfer as the staff client shows it. ``docs``: the documents as read (absent: the caller may not read
    them); ``sent``: what this request did with each (queued, or why not)."""
    inputs = _inputs(task)
    address = inputs.get("hospital-mssante")
    listed: list[dict[str, Any]] = []
    for kind in ("fludt", "dlu"):
        doc_id = str((inputs.get(kind) or {}).get("reference") or "").removeprefix("DocumentReference/")
        if doc_id:
            listed.append({"id": doc_id, "kind": kind.upper(), "pdf": f"/api/documents/{doc_id}/pdf",
                           "mssante": sent.get(doc_id) or _delivery(docs.get(doc_id), address)})
    states = {d["mssante"]["state"] for d in listed}
    output = next((o for o in task.get("output") or [] if _code(o) == "fludr"), None)
    fludr = None
    if output is not None:
        fludr_id = str((output.get("valueReference") or {}).get("reference") or "").removeprefix("DocumentReference/")
        fludr = {"id": fludr_id, "items": docs.get(f"items:{fludr_id}", {}).get("count")}
    period = task.get("executionPeriod") or {}
    return {"id": task["id"], "version": version_of(task),
            "resident_id": str((task.get("for") or {}).get("reference") or "").removeprefix("Patient/"),
            "status": task.get("status"),
            "hospital": {"name": inputs.get("hospital-name"), "mssante": address},
            "reason": (task.get("reasonCode") or {}).get("text"),
            "note": next((n.get("text") for n in task.get("note") or []), None),
            "departed_at": period.get("start"), "returned_at": period.get("end"),
            "stay_id": str((task.get("encounter") or {}).get("reference") or "").removeprefix("Encounter/") or None,
            "documents": listed, "mssante": states.pop() if len(states) == 1 else "mixed", "fludr": fludr}


# -- the parts --------------------------------------------------------------------------------------------------


def _current_stay(record: Record, patient: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Her stay in progress in her establishment (the one whose ``serviceProvider`` manages her; a partner's stay,
    such as home hospitalisation, is not the place she keeps), else her latest stay in progress."""
    stays = record.search("Encounter", [("subject", f"Patient/{patient['id']}"), ("status", PRESENT),
                                        ("_sort", "-date"), ("_count", "20")])
    if not stays:
        raise Unprocessable(f"Patient/{patient['id']} has no stay in progress here (no current Encounter): a "
                            "transfer to hospital is recorded for a resident present in the establishment",
                            code="business-rule", patients=(patient["id"],))
    home = (patient.get("managingOrganization") or {}).get("reference")
    stay = next((s for s in stays if home and (s.get("serviceProvider") or {}).get("reference") == home), stays[0])
    return stay, version_of(stay)


def _update_stay(record: Record, stay: dict[str, Any], version: int) -> None:
    stay.pop("meta", None)
    try:
        record.update(stay, f'W/"{version}"')
    except PreconditionFailed:
        raise Conflict("Her stay changed meanwhile (another transfer or return being recorded?): try again",
                       patients=(str((stay.get("subject") or {}).get("reference") or "").removeprefix("Patient/"),)
                       ) from None


def _on_leave(stay: dict[str, Any], when: str) -> dict[str, Any]:
    """The stay on leave from ``when``: its status history kept, its room held for her."""
    return _moved(stay, when, LEAVE, {"active": "reserved"})


def _back(stay: dict[str, Any], when: str) -> dict[str, Any]:
    return _moved(stay, when, PRESENT, {"reserved": "active"})


def _moved(stay: dict[str, Any], when: str, status: str, rooms: dict[str, str]) -> dict[str, Any]:
    body = copy.deepcopy(stay)
    history = body.setdefault("statusHistory", [])
    since = (history[-1].get("period") or {}).get("end") if history else (body.get("period") or {}).get("start")
    history.append({"status": body.get("status"), "period": {**({"start": since} if since else {}), "end": when}})
    body["status"] = status
    for place in body.get("location") or []:
        place["status"] = rooms.get(place.get("status") or "", place.get("status"))
    return {k: v for k, v in body.items() if v is not None}


def _fludt_parameters(facts: dict[str, Any]) -> dict[str, Any]:
    """``$fludt``'s Parameters: the motif, the destination, and what the nurse adds."""
    hospital = facts["hospital"]
    params: list[dict[str, Any]] = [{"name": "reason", "valueString": facts["reason"]}]
    destination = hospital.get("name") or hospital.get("mssante")
    params.append({"name": "destination", "valueString": destination})
    if facts.get("last_meal"):
        params.append({"name": "lastMeal", "valueString": facts["last_meal"]})
    params += [{"name": "device", "valueString": d} for d in facts.get("devices") or []]
    params += [{"name": "belonging", "valueString": b} for b in facts.get("belongings") or []]
    if facts.get("note"):
        params.append({"name": "comment", "valueString": facts["note"]})
    return {"resourceType": "Parameters", "parameter": params}


def _send(record: Record, doc_id: str, address: str | None) -> dict[str, Any]:
    """Queue the document for the hospital (``$mssante-send``), or say why it is not."""
    conf = record.ctx.settings.mssante
    if address is None:
        return _state("no-address", "no MSSanté address was given for the hospital: print the documents")
    if not conf.can_send:
        return _state("not-configured", conf.missing("send"))
    if not record.may("u", "DocumentReference"):
        return _state("not-permitted", "the caller's role may not send documents out (update DocumentReference): "
                                       "print them, or ask a médecin to send them")
    answer = documents.as_parameters(record.run(
        "POST", f"DocumentReference/{doc_id}/$mssante-send",
        body={"resourceType": "Parameters", "parameter": [{"name": "to", "valueString": address}]}).body)
    return {"state": "queued", "job": answer.get("job"), "job_state": answer.get("state"), "detail": None}


def _state(state: str, detail: str | None) -> dict[str, Any]:
    return {"state": state, "job": None, "job_state": None, "detail": detail}


def _delivery(doc: dict[str, Any] | None, address: str | None) -> dict[str, Any]:
    """Where the send of a document to the hospital stands, as recorded on it."""
    if address is None:
        return _state("no-address", None)
    if doc is None:
        return _state("unknown", "the caller may not read the document")
    for send in documents.sendings_of(doc):
        if send["address"] == address:
            return _state(send["state"], send.get("detail"))
    return _state("not-sent", "not queued when the transfer was recorded (MSSanté not configured, or the caller "
                              "might not send documents)")


def _documents(record: Record, tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documents the transfers name, read in one search (none when the caller may not read documents); and
    for each FLUDR, how many resources of the record it gave (``items:<id>``)."""
    if not record.may("s", "DocumentReference"):
        return {}
    ids: list[str] = []
    fludrs: list[tuple[str, str]] = []
    for task in tasks:
        for given in [*(task.get("input") or []), *(task.get("output") or [])]:
            ref = str((given.get("valueReference") or {}).get("reference") or "")
            if ref.startswith("DocumentReference/"):
                ids.append(ref.removeprefix("DocumentReference/"))
                if _code(given) == "fludr":
                    fludrs.append((str((task.get("for") or {}).get("reference") or "").removeprefix("Patient/"),
                                   ids[-1]))
    found: dict[str, dict[str, Any]] = {}
    if ids:
        found = {d["id"]: d for d in record.search("DocumentReference", [("_id", ",".join(sorted(set(ids)))),
                                                                         ("_count", str(len(set(ids))))])}
    for patient_id, fludr_id in fludrs:
        found[f"items:{fludr_id}"] = {"count": _items(record, patient_id, fludr_id)}
    return found


def _fludr(record: Record, patient_id: str, docref_id: str) -> dict[str, Any]:
    """The FLUDR named on return: one of hers (``NotFound`` for one the caller may not see), and a FLUDR."""
    doc, _ = record.read("DocumentReference", docref_id)
    if (doc.get("subject") or {}).get("reference") != f"Patient/{patient_id}":
        raise Unprocessable(f"DocumentReference/{docref_id} is not a document of Patient/{patient_id}",
                            code="business-rule", expression="fludr", patients=(patient_id,))
    if documents.kind_of(doc) != "FLUDR":
        raise Unprocessable(f"DocumentReference/{docref_id} is a {documents.kind_of(doc)}, not a FLUDR (fiche de "
                            "liaison d'urgence - retour)", code="business-rule", expression="fludr",
                            patients=(patient_id,))
    return doc


def _items(record: Record, patient_id: str, docref_id: str) -> int | None:
    """How many resources of her record the received document gave (``dui.documents.received_fhir``): exit
    diagnoses (Condition whose evidence is the document), devices and state (Observation derived from it), exit
    treatments (MedicationStatement derived from it: R4 has no search parameter for that, so read among hers). None
    when the caller may not read one of those types."""
    if not all(record.may("s", rtype) for rtype in ("Condition", "Observation", "MedicationStatement")):
        return None
    subject, ref = ("subject", f"Patient/{patient_id}"), f"DocumentReference/{docref_id}"
    total = 0
    for rtype, param in (("Condition", "evidence-detail"), ("Observation", "derived-from")):
        answer = as_json(record.run("GET", rtype, [subject, (param, ref), ("_summary", "count")]).body)
        total += int(answer.get("total") or 0)
    statements = record.search("MedicationStatement", [subject, ("_elements", "derivedFrom"),
                                                       ("_count", str(record.ctx.settings.limits.max_count))])
    return total + sum(1 for m in statements if {"reference": ref} in (m.get("derivedFrom") or []))


def _transfer(record: Record, patient_id: str, transfer_id: str) -> tuple[dict[str, Any], int]:
    try:
        task, version = record.read("Task", transfer_id)
    except NotFound:
        raise NotFound(f"No transfer {transfer_id} of Patient/{patient_id}") from None
    if _code(task) != TRANSFER or (task.get("for") or {}).get("reference") != f"Patient/{patient_id}":
        raise NotFound(f"No transfer {transfer_id} of Patient/{patient_id}")
    return task, version


def _transfers(record: Record, patient_id: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return record.search("Task", [("patient", f"Patient/{patient_id}"), ("code", f"{TASK_CODES}|{TRANSFER}"),
                                  *params])


def _inputs(task: dict[str, Any]) -> dict[str, Any]:
    return {code: next((v for k, v in given.items() if k.startswith("value")), None)
            for given in task.get("input") or [] if (code := _code(given))}


def _code(element: dict[str, Any]) -> str | None:
    """The code of a Task (its ``code``) or of one of its inputs or outputs (their ``type``)."""
    concept = element.get("code") if "code" in element else element.get("type")
    codings = (concept or {}).get("coding") or []
    return str(codings[0].get("code")) if codings and codings[0].get("code") else None


def _input(code: str, text: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": INPUTS, "code": code}], "text": text}, **value}
