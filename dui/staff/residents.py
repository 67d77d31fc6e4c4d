"""The residents as the care team sees them: "my residents now", and one resident at a glance.

Who "my residents" are is the establishment scoping of the actor (``dui.fhir.scope``): the searches below run
through ``Record`` and see only the residents the actor's establishment cares for. A unit (``Location`` of
physical type ``wa``) narrows the list to the residents whose current stay is in one of its rooms
(``Encounter.location`` -> a room ``Location`` whose ``partOf`` is the unit).

What needs attention, per resident: the active Flags (a fall alert not yet acknowledged, a fall risk, BMR
carriage...), vital signs missing for ``VITALS_STALE_DAYS`` days, and the DLU (missing, or stale: the record
changed since it was built and the worker has not rebuilt it yet). Medications due per round come with the
administration plan, which the staff API does not have yet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dui.documents.freshness import DLU
from dui.documents.tables import resident_document
from dui.residents import mapping
from dui.staff import codes
from dui.staff.record import Record, instant, version_of

DLU_TYPE = "http://loinc.org|74207-2"


def residents_now(record: Record, session: Session, now: datetime, unit: str | None, cursor: str | None,
                  limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the residents present (a current stay), with what needs attention."""
    params = [("status", "in-progress"), ("_include", "Encounter:subject"), ("_include", "Encounter:location"),
              ("_sort", "_id"), ("_count", str(limit))]
    if unit:
        params.append(("location:Location.partof", f"Location/{unit}"))
    query = [*params, *([("_cursor", cursor)] if cursor else [])]
    found = record.results("Encounter", query)
    matches, included, following = found.matches, found.included, found.following
    stays: dict[str, dict[str, Any]] = {}
    for encounter in matches:
        pid = (encounter.get("subject") or {}).get("reference", "").removeprefix("Patient/")
        if f"Patient/{pid}" in included:
            stays.setdefault(pid, encounter)
    if not stays:
        return [], following
    ids = sorted(stays)
    flags = _active_flags(record, ids)
    measured = _recently_measured(record, ids, now)
    dlu = _dlu_states(record, session, ids)
    rooms = _rooms(record, stays.values(), included)
    out = []
    for pid in ids:
        patient = included[f"Patient/{pid}"]
        room, unit_view = rooms.get(pid, (None, None))
        out.append({**identity_view(patient), "room": room, "unit": unit_view,
                    "attention": {"flags": flags.get(pid, []), "vitals_missing": pid not in measured,
                                  "last_vital_signs": measured.get(pid), "dlu": dlu.get(pid, "missing")}})
    return out, following


def resident(record: Record, session: Session, now: datetime, pid: str) -> tuple[dict[str, Any], int]:
    """One resident at a glance, with what the actor may read of her record; and her Patient's version (the
    ETag). An actor who may not read diagnoses gets no ``conditions`` key at all (an aide sees no diagnosis)."""
    patient, version = record.read("Patient", pid)
    stays = record.search("Encounter", [("subject", f"Patient/{pid}"), ("status", "in-progress"),
                                        ("_sort", "-date"), ("_count", "1")])
    view: dict[str, Any] = {**identity_view(patient), "stay": None}
    if stays:
        stay = stays[0]
        view["stay"] = {"id": stay["id"], "start": (stay.get("period") or {}).get("start"),
                        "room": _display((stay.get("location") or [{}])[0].get("location"))}
    view["flags"] = _active_flags(record, [pid]).get(pid, [])
    view["vital_signs"] = _latest_vitals(record, pid)
    view["dlu"] = _dlu_states(record, session, [pid]).get(pid, "missing")
    if record.may("s", "AllergyIntolerance"):
        view["allergies"] = [_text(a.get("code")) for a in record.search(
            "AllergyIntolerance", [("patient", f"Patient/{pid}"), ("clinical-status", "active"), ("_count", "50")])]
    if record.may("s", "Condition"):
        view["conditions"] = [_text(c.get("code")) for c in record.search(
            "Condition", [("subject", f"Patient/{pid}"), ("clinical-status", "active"), ("_count", "50")])]
    if record.may("s", "MedicationRequest"):
        view["treatments"] = [{"medication": _text(m.get("medicationCodeableConcept")),
                               "dosage": "; ".join(d.get("text", "") for d in m.get("dosageInstruction") or [])}
                              for m in record.search("MedicationRequest", [("subject", f"Patient/{pid}"),
                                                                           ("status", "active"), ("_count", "50")])]
    return view, version


def identity_view(patient: dict[str, Any]) -> dict[str, Any]:
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "usual"), None) or mapping.official_name(patient) or names[0]
    return {"id": patient["id"], "version": version_of(patient),
            "family": name.get("family"), "given": " ".join(name.get("given") or []) or None,
            "birth_date": patient.get("birthDate"), "gender": patient.get("gender"),
            "identity_status": mapping.status_of(patient).code}


def _active_flags(record: Record, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not record.may("s", "Flag"):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for flag in record.search("Flag", [("subject", ",".join(f"Patient/{i}" for i in ids)), ("status", "active"),
                                       ("_count", str(record.ctx.settings.limits.max_count))]):
        pid = (flag.get("subject") or {}).get("reference", "").removeprefix("Patient/")
        codings = (flag.get("code") or {}).get("coding") or [{}]
        out.setdefault(pid, []).append({"id": flag["id"], "code": codings[0].get("code"),
                                        "text": _text(flag.get("code")),
                                        "since": (flag.get("period") or {}).get("start")})
    return out


def _recently_measured(record: Record, ids: list[str], now: datetime) -> dict[str, str]:
    """Resident -> when her last vital sign of the past ``VITALS_STALE_DAYS`` days was taken."""
    if not record.may("s", "Observation"):
        return {}
    since = instant(now - timedelta(days=codes.VITALS_STALE_DAYS))
    seen: dict[str, str] = {}
    for pid in ids:  # one indexed query each: the latest one only
        found = record.search("Observation", [("subject", f"Patient/{pid}"), ("category", "vital-signs"),
                                              ("date", f"ge{since}"), ("_sort", "-date"), ("_count", "1"),
                                              ("_elements", "effectiveDateTime")])
        if found:
            seen[pid] = str(found[0].get("effectiveDateTime"))
    return seen


def _latest_vitals(record: Record, pid: str) -> dict[str, Any]:
    if not record.may("s", "Observation"):
        return {}
    latest: dict[str, Any] = {}
    wanted = {m.code: m.name for m in codes.MEASURES.values()} | {codes.BLOOD_PRESSURE[0]: "blood_pressure"}
    for observation in record.search("Observation", [("subject", f"Patient/{pid}"), ("code", ",".join(
            f"{codes.LOINC}|{code}" for code in wanted)), ("_sort", "-date"), ("_count", "100")]):
        code = next((c.get("code") for c in (observation.get("code") or {}).get("coding") or []
                     if c.get("code") in wanted), None)
        name = wanted.get(code or "")
        if name is None or name in latest:
            continue
        if name == "blood_pressure":
            value: Any = {(c.get("code") or {}).get("coding", [{}])[0].get("code"): (c.get("valueQuantity") or {})
                          .get("value") for c in observation.get("component") or []}
            value = {"systolic": value.get(codes.SYSTOLIC.code), "diastolic": value.get(codes.DIASTOLIC.code)}
        else:
            value = (observation.get("valueQuantity") or {}).get("value")
        latest[name] = {"value": value, "at": observation.get("effectiveDateTime")}
    return latest


def _dlu_states(record: Record, session: Session, ids: list[str]) -> dict[str, str]:
    """Resident -> ``current``, ``stale`` (the record changed since it was built) or ``missing``."""
    if not record.may("s", "DocumentReference"):
        return {}
    have = {(d.get("subject") or {}).get("reference", "").removeprefix("Patient/") for d in record.search(
        "DocumentReference", [("subject", ",".join(f"Patient/{i}" for i in ids)), ("type", DLU_TYPE),
                              ("status", "current"), ("_elements", "subject"),
                              ("_count", str(record.ctx.settings.limits.max_count))])}
    row = resident_document.c
    stale = set(session.execute(select(row.patient_id).where(row.patient_id.in_(ids), row.kind == DLU,
                                                             row.stale_since.is_not(None))).scalars())
    return {pid: ("stale" if pid in stale else "current") if pid in have else "missing" for pid in ids}


def _rooms(record: Record, stays: Any, included: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for stay in stays:
        pid = (stay.get("subject") or {}).get("reference", "").removeprefix("Patient/")
        ref = ((stay.get("location") or [{}])[0].get("location") or {}).get("reference")
        room = included.get(ref or "")
        if room is None:
            continue
        unit_ref = (room.get("partOf") or {}).get("reference")
        out[pid] = ({"id": room["id"], "name": room.get("name")},
                    {"id": unit_ref.removeprefix("Location/"), "name": (room.get("partOf") or {}).get("display")}
                    if unit_ref else None)
    return out


def _display(reference: dict[str, Any] | None) -> dict[str, Any] | None:
    if not reference:
        return None
    return {"id": str(reference.get("reference", "")).removeprefix("Location/") or None,
            "name": reference.get("display")}


def _text(concept: dict[str, Any] | None) -> str | None:
    if not concept:
        return None
    if concept.get("text"):
        return str(concept["text"])
    coding = (concept.get("coding") or [{}])[0]
    found = coding.get("display") or coding.get("code")
    return str(found) if found is not None else None
