"""The administration plan of a round, and each dose recorded: given, refused, or not given with its reason.

The plan is derived, never stored: for the residents present (a current stay, in one unit if asked), each dose
their active prescriptions (``dui.staff.medications``) put in the round, with the administration recorded for it if
any. A dose recorded is a FHIR ``MedicationAdministration`` (http://hl7.org/fhir/R4/medicationadministration.html):
``request`` the prescription, ``subject`` the resident, ``performer`` the nurse (function ``performer``),
``effectiveDateTime`` when it was recorded, ``dosage.dose`` the round's dose; a dose refused or not given has status
``not-done`` and its reason in ``statusReason``. Its ``identifier`` (system ``PLANNED_DOSE``, value
``<prescription>/<date>/<round>``) names the dose, so the plan finds it by search, and it is created with a
conditional create (``If-None-Exist`` on that identifier): the store serialises two recordings of one dose (an
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and the second finds the first, answered as a conflict
that shows it.

Médicaments à risque (``dui.staff.high_risk``) get a double-check: the first nurse records the dose given as
prepared, status ``in-progress``, awaiting the check; a second nurse (another actor than the first) confirms it,
which completes it and adds her as a performer with function ``verifier``. A dose of such a drug refused or not
given needs no check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from dui.auth.actor import Actor
from dui.errors import Conflict, PreconditionFailed, Unprocessable
from dui.residents.provenance import actor_reference
from dui.staff import medications
from dui.staff.medications import (
    NOT_GIVEN,
    NOT_GIVEN_REASONS,
    PERFORM_FUNCTION,
    PLANNED_DOSE,
    REFUSED,
    ROUND_OPENS,
    Message,
    Prescription,
    dose_key,
    planned_dose,
    round_start,
)
from dui.staff.record import Record, instant, version_of
from dui.staff.residents import identity_view

GIVEN, NOT_DONE, AWAITING_CHECK = "completed", "not-done", "in-progress"  # MedicationAdministration.status
ENDED = "stopped,completed,on-hold"  # prescriptions no longer given, whose doses already recorded still show


class DoseConflict(Conflict):
    """409: the dose is recorded already, or checked already; ``administration`` is it as it stands."""

    def __init__(self, message: str, administration: dict[str, Any], patients: tuple[str, ...]) -> None:
        super().__init__(message, code="duplicate", patients=patients)
        self.administration = administration


# -- the plan ------------------------------------------------------------------------------------------------------

def round_plan(record: Record, day: date, name: str, unit: str | None) -> dict[str, Any]:
    """The doses of a round for the residents present, each with its state, grouped by resident (by room)."""
    tz = record.ctx.tz
    present = _present(record, unit)
    ids = sorted(present)
    current = medications.prescriptions_of(record, ids)
    active = [p for p in current if p.due_on(day, name, tz)]
    unscheduled = [p for p in current if not p.doses and p.covers(day)]
    # Stopped since the day began (or later): its doses recorded that day still show, its pending ones no more. A
    # dose recorded once its round opened stays even when the prescription was stopped before the round's time.
    ended = [p for p in medications.prescriptions_of(record, ids, ENDED, datetime.combine(day, time(), tz))
             if name in p.doses and p.covers(day)]
    keys = [dose_key(p.id, day, name) for p in (*active, *ended)]
    done = medications.recorded(record, keys)
    doses: dict[str, list[dict[str, Any]]] = {}
    for prescription in active + [p for p in ended if dose_key(p.id, day, name) in done]:
        administration = done.get(dose_key(prescription.id, day, name))
        doses.setdefault(prescription.patient_id, []).append(_planned(prescription, name, administration))
    free: dict[str, list[dict[str, Any]]] = {}
    for prescription in unscheduled:
        free.setdefault(prescription.patient_id, []).append(
            {"prescription_id": prescription.id, "medication": prescription.label, "text": prescription.text})
    items = []
    for pid in sorted(set(doses) | set(free), key=lambda i: ((present[i][1] or {}).get("name") or "", i)):
        patient, room = present[pid]
        who = identity_view(patient)
        items.append({"id": pid, "family": who["family"], "given": who["given"], "room": room,
                      "doses": sorted(doses.get(pid, []), key=lambda d: (d["medication"] or "", d["prescription_id"])),
                      "unscheduled": free.get(pid, [])})
    return {"date": day.isoformat(), "round": name, "time": round_start(day, name, tz).isoformat(), "items": items}


def _planned(prescription: Prescription, name: str, administration: dict[str, Any] | None) -> dict[str, Any]:
    dose = prescription.doses[name]
    risk = prescription.risk
    recorded = view(administration) if administration is not None else None
    check = None  # no double-check: not a médicament à risque, or the dose was not given
    if risk is not None and recorded is not None and recorded["checked_by"]:
        check = "done"
    elif risk is not None and (recorded is None or recorded["state"] == "awaiting-check"):
        check = "pending"
    return {"prescription_id": prescription.id, "prescription_status": prescription.status,
            "medication": prescription.label, "atc": prescription.atc, "text": prescription.text,
            "quantity": dose.quantity, "unit": dose.unit, "as_needed": prescription.as_needed,
            "high_risk": risk is not None, "high_risk_class": risk.label if risk else None,
            "state": recorded["state"] if recorded else "pending",
            "administration_id": recorded["id"] if recorded else None,
            "reason": recorded["reason"] if recorded else None,
            "recorded_by": recorded["recorded_by"] if recorded else None,
            "recorded_at": recorded["recorded_at"] if recorded else None,
            "double_check": check, "checked_by": recorded["checked_by"] if recorded else None}


def _present(record: Record, unit: str | None) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """Resident id -> (Patient, room) of the residents with a current stay (in the unit's rooms, with ``unit``)."""
    params = [("status", "in-progress"), ("_include", "Encounter:subject"), ("_include", "Encounter:location"),
              ("_sort", "_id"), ("_count", str(record.ctx.settings.limits.max_count))]
    if unit:
        params.append(("location:Location.partof", f"Location/{unit}"))
    present: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
    cursor: str | None = None
    while True:
        found = record.results("Encounter", [*params, *([("_cursor", cursor)] if cursor else [])])
        for stay in found.matches:
            patient = found.included.get(str((stay.get("subject") or {}).get("reference")))
            if patient is None or patient["id"] in present:
                continue
            where = ((stay.get("location") or [{}])[0].get("location") or {}).get("reference")
            room = found.included.get(str(where))
            present[patient["id"]] = (patient, {"id": room["id"], "name": room.get("name")} if room else None)
        cursor = found.following
        if not cursor:
            return present


# -- recording -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Given:
    """What the nurse records for one dose (checked by the staff API's schema)."""

    prescription_id: str
    day: date
    round: str
    outcome: str  # given, refused, not-given
    reason: str | None = None  # a code of NOT_GIVEN_REASONS (refused: REFUSED)
    reason_text: str | None = None
    note: str | None = None


def record_dose(record: Record, actor: Actor, now: datetime, given: Given) -> tuple[dict[str, Any], int]:
    """Record one dose of a prescription; returns the MedicationAdministration and its version.

    Raises ``NotFound`` (a prescription not visible), ``Forbidden`` (a role that does not record administrations),
    ``Unprocessable`` (the prescription is not active, or does not give this dose, or the round has not opened yet)
    and ``DoseConflict`` (the dose is recorded already)."""
    resource, version = record.read("MedicationRequest", given.prescription_id)
    record.ctx.require("c", "MedicationAdministration")
    prescription = medications.parse(resource, version)
    _check_dose(record, now, prescription, given)
    key = dose_key(prescription.id, given.day, given.round)
    administration = _administration(actor, now, prescription, given, key)
    result = record.run("POST", "MedicationAdministration", body=administration,
                        headers={"if-none-exist": f"identifier={PLANNED_DOSE}|{key}"})
    assert result.version is not None
    stored = result.version.resource()
    if result.status != 201:  # If-None-Exist found the dose recorded already
        first = view(stored)
        raise DoseConflict(Message(f"This dose is already recorded ({first['state']}, by {first['recorded_by']})",
                                   f"Cette prise est déjà enregistrée ({first['state']}, par "
                                   f"{first['recorded_by']})"), first, (prescription.patient_id,))
    return stored, result.version.version


def _check_dose(record: Record, now: datetime, prescription: Prescription, given: Given) -> None:
    tz = record.ctx.tz
    patients = (prescription.patient_id,)
    if prescription.status != "active":
        raise Unprocessable(Message(f"This prescription is not active (status {prescription.status}): its doses are "
                                    "no longer given",
                                    f"Cette prescription n'est pas en cours (statut {prescription.status}) : ses "
                                    "prises ne sont plus données"),
                            expression="prescription_id", code="business-rule", patients=patients)
    if given.round not in prescription.doses:
        raise Unprocessable(Message(f"This prescription has no dose at the {given.round} round",
                                    f"Cette prescription ne prévoit pas de prise au tour du {given.round}"),
                            expression="round", code="business-rule", patients=patients)
    if not prescription.due_on(given.day, given.round, tz):
        raise Unprocessable(Message("This date is outside the dates of the prescription",
                                    "Cette date est en dehors des dates de la prescription"),
                            expression="date", code="business-rule", patients=patients)
    opens = round_start(given.day, given.round, tz) - ROUND_OPENS
    if now < opens:
        raise Unprocessable(Message(f"This round has not opened yet: its doses are recorded from {opens.isoformat()}",
                                    f"Ce tour n'est pas encore ouvert : ses prises s'enregistrent à partir de "
                                    f"{opens.isoformat()}"),
                            expression="round", code="business-rule", patients=patients)


def _administration(actor: Actor, now: datetime, prescription: Prescription, given: Given,
                    key: str) -> dict[str, Any]:
    status = NOT_DONE
    if given.outcome == "given":  # a médicament à risque awaits its double-check
        status = AWAITING_CHECK if prescription.risk is not None else GIVEN
    administration: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "identifier": [{"system": PLANNED_DOSE, "value": key}],
        "status": status,
        "medicationCodeableConcept": prescription.resource.get("medicationCodeableConcept") or {
            "text": prescription.label or "?"},
        "subject": {"reference": f"Patient/{prescription.patient_id}"},
        "effectiveDateTime": instant(now),
        "performer": [_performer("performer", actor)],
        "request": {"reference": f"MedicationRequest/{prescription.id}"},
        "dosage": {"dose": dict(prescription.doses[given.round].fhir)},
    }
    if status == NOT_DONE:
        code = REFUSED if given.outcome == "refused" else str(given.reason)
        reason: dict[str, Any] = {"coding": [{"system": NOT_GIVEN, "code": code, "display": NOT_GIVEN_REASONS[code]}]}
        if given.reason_text:
            reason["text"] = given.reason_text
        administration["statusReason"] = [reason]
    if given.note:
        administration["note"] = [{"text": given.note}]
    return administration


def _performer(function: str, actor: Actor) -> dict[str, Any]:
    return {"function": {"coding": [{"system": PERFORM_FUNCTION, "code": function}]},
            "actor": actor_reference(actor)}


# -- the double-check ----------------------------------------------------------------------------------------------

def double_check(record: Record, actor: Actor, administration_id: str) -> tuple[dict[str, Any], int]:
    """A second nurse confirms a dose of a médicament à risque: the administration is completed, with her as its
    ``verifier``. ``Unprocessable`` when she is the nurse who prepared it; ``DoseConflict`` when it awaits no
    check (checked already, refused, not a médicament à risque)."""
    resource, version = record.read("MedicationAdministration", administration_id)
    record.ctx.require("u", "MedicationAdministration")
    current = view(resource, version)
    patients = (current["resident_id"],)
    if current["state"] != "awaiting-check":
        raise _nothing_to_check(current, patients)
    if _identity(actor_reference(actor)) in {_identity(p) for p in _performers(resource, "performer")}:
        raise Unprocessable(Message("The double-check is done by another nurse than the one who recorded the dose",
                                    "Le double contrôle est fait par une autre infirmière que celle qui a enregistré "
                                    "la prise"), code="business-rule", patients=patients)
    resource["status"] = GIVEN
    resource["performer"] = [*(resource.get("performer") or []), _performer("verifier", actor)]
    resource.pop("meta", None)
    try:
        return record.update(resource, f'W/"{version}"')
    except PreconditionFailed:  # another nurse confirmed it meanwhile
        raise _nothing_to_check(view(*record.read("MedicationAdministration", administration_id)), patients) from None


def _nothing_to_check(current: dict[str, Any], patients: tuple[str, ...]) -> DoseConflict:
    if current["checked_by"]:
        message = Message(f"This dose was double-checked already, by {current['checked_by']}",
                          f"Cette prise a déjà été contrôlée, par {current['checked_by']}")
    else:
        message = Message(f"This dose awaits no double-check ({current['state']})",
                          f"Cette prise n'attend pas de double contrôle ({current['state']})")
    return DoseConflict(message, current, patients)


# -- views ---------------------------------------------------------------------------------------------------------

def view(administration: dict[str, Any], version: int | None = None) -> dict[str, Any]:
    """An administration as the staff API shows it; ``state``: given, awaiting-check, refused or not-given."""
    key = planned_dose(administration) or ""
    prescription_id, _, rest = key.partition("/")
    day, _, name = rest.partition("/")
    status = administration.get("status")
    reason = (administration.get("statusReason") or [None])[0]
    code = next((c.get("code") for c in (reason or {}).get("coding") or [] if c.get("system") == NOT_GIVEN), None)
    state = {GIVEN: "given", AWAITING_CHECK: "awaiting-check"}.get(str(status)) or (
        "refused" if code == REFUSED else "not-given")
    checkers = [_who(p) for p in _performers(administration, "verifier")]
    dose = (administration.get("dosage") or {}).get("dose") or {}
    return {"id": administration["id"],
            "version": version if version is not None else version_of(administration),
            "prescription_id": prescription_id or str((administration.get("request") or {}).get(
                "reference", "")).removeprefix("MedicationRequest/"),
            "resident_id": str((administration.get("subject") or {}).get("reference", "")).removeprefix("Patient/"),
            "date": day or None, "round": name or None, "state": state, "status": status,
            "reason": {"code": code, "text": (reason or {}).get("text")} if reason else None,
            "quantity": float(dose["value"]) if dose.get("value") is not None else None, "unit": dose.get("unit"),
            "recorded_by": next((_who(p) for p in _performers(administration, "performer")), None),
            "recorded_at": administration.get("effectiveDateTime"),
            "checked_by": checkers[0] if checkers else None,
            "checked_at": (administration.get("meta") or {}).get("lastUpdated") if checkers else None,
            "note": ((administration.get("note") or [{}])[0] or {}).get("text")}


def _performers(administration: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """The actors (references) of the performers with ``function`` (a performer without one is the performer)."""
    out = []
    for performer in administration.get("performer") or []:
        codes = {c.get("code") for c in (performer.get("function") or {}).get("coding") or []}
        if function in codes or (function == "performer" and not codes):
            out.append(performer.get("actor") or {})
    return out


def _who(reference: dict[str, Any]) -> str:
    """A performer as the staff API names her: the login of ``actor_reference``, else the reference."""
    identifier = reference.get("identifier") or {}
    return str(identifier.get("value") or reference.get("reference") or reference.get("display") or "?")


def _identity(reference: dict[str, Any]) -> tuple[str, str]:
    """Who a reference is, to tell two actors apart: the system and value of its identifier (``actor_reference``:
    the kind of actor and its id), else its literal reference."""
    identifier = reference.get("identifier") or {}
    if identifier.get("value"):
        return str(identifier.get("system")), str(identifier["value"])
    return "reference", str(reference.get("reference") or reference.get("display") or "")
