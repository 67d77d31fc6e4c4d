"""Prescriptions as the médecin gives them, and the rounds their doses are due at.

A prescription is a FHIR ``MedicationRequest`` of the resident (http://hl7.org/fhir/R4/medicationrequest.html), so
partners read it through ``/fhir`` as any prescription: the drug as ``medicationCodeableConcept`` (its WHO ATC code
when the médecin gives one, the label as ``text``; a free-text drug has the label only), the prescriber's text kept
as written in ``dosageInstruction[0].text``, the prescriber as ``requester``, and one ``Dosage`` per round with the
dose of that round (``doseAndRate.doseQuantity``). The Dosages share ``sequence`` 1: R4 reads Dosages of one sequence
as concurrent, which a dose at each round is. "Si besoin" is ``asNeededBoolean`` (or ``asNeededCodeableConcept``
with the condition as text: "si douleur"); an as-needed dose is offered at its rounds, never counted as due.

The rounds are the establishment's (``ROUNDS``: matin 08:00, midi 12:00, soir 18:00, coucher 21:00, in its time
zone). Each Dosage's ``timing.repeat`` says "once a day" (``frequency`` 1, ``period`` 1 ``d``) at a moment of the
resident's day, with the R4 EventTiming codes of ``repeat.when`` (MORN, NOON, EVE, HS), not with ``timeOfDay``
clock times (R4 invariant tim-10 allows one or the other). Why ``when``: the médecin prescribes "le matin", "au
coucher", moments of the resident's day, and EventTiming defines them so ("the exact time is unspecified and
established by institution convention"): the clock time is the establishment's organisation of its rounds, which
may change without rewriting any prescription, and a hospital reading the prescription reads the intent rather than
our round times. ``repeat.boundsPeriod`` holds the start and the optional end date (inclusive); stopping a
prescription sets the end to the instant it was stopped, and the status to ``stopped``.

A dose is named by its prescription, date and round: that is the identifier of its administration
(``dui.staff.administrations``), which makes it recorded once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dui.auth.actor import Actor
from dui.errors import Conflict, PreconditionFailed, Unprocessable
from dui.residents.provenance import actor_reference
from dui.staff.high_risk import RiskClass, risk_class
from dui.staff.record import Record, instant, version_of
from fhir_profiles import CANONICAL

ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
PLANNED_DOSE = f"{CANONICAL}/planned-dose"  # identifier of an administration: <prescription>/<date>/<round>
NOT_GIVEN = f"{CANONICAL}/CodeSystem/dui-medication-not-given"  # why a dose was not given
PERFORM_FUNCTION = "http://terminology.hl7.org/CodeSystem/med-admin-perform-function"  # performer, verifier


@dataclass(frozen=True)
class Round:
    name: str
    when: str  # R4 EventTiming code (http://hl7.org/fhir/R4/valueset-event-timing.html)
    at: time  # the establishment's time of the round


ROUNDS: dict[str, Round] = {r.name: r for r in (
    Round("matin", "MORN", time(8)),
    Round("midi", "NOON", time(12)),
    Round("soir", "EVE", time(18)),
    Round("coucher", "HS", time(21)),
)}
ROUND_OF_WHEN = {r.when: r.name for r in ROUNDS.values()}
# A round opens this long before its time (the doses are prepared): from then on its doses are recorded, and it is
# the current round of "my residents now" until the next one opens.
ROUND_OPENS = timedelta(hours=1)

# The units a dose is written in: the UCUM code where UCUM has one, else the unit as the care team writes it.
UNITS: dict[str, str | None] = {
    "comprimé": None, "gélule": None, "sachet": None, "ampoule": None, "suppositoire": None, "patch": None,
    "bouffée": None, "application": None, "goutte": "[drp]", "mg": "mg", "g": "g", "µg": "ug", "mL": "mL",
    "UI": "[iU]",
}

# Why a dose was not given (MedicationAdministration.statusReason, our CodeSystem NOT_GIVEN). ``refus`` is the
# outcome "refused"; the others are the reasons of a dose "not given".
REFUSED = "refus"
NOT_GIVEN_REASONS: dict[str, str] = {
    REFUSED: "Refus du résident",
    "absent": "Résident absent",
    "hospitalise": "Résident hospitalisé",
    "a-jeun": "À jeun (examen, intervention)",
    "vomissements": "Vomissements",
    "troubles-deglutition": "Troubles de la déglutition",
    "endormi": "Résident endormi",
    "non-disponible": "Médicament non disponible",
    "autre": "Autre raison (précisée en texte)",
}
SEARCH_CHUNK = 50  # values per search parameter (ids of residents, doses) in one FHIR search


class Message(str):
    """An error message in English with its French (``fr``), which the staff API's problems show next to it
    (``dui.web.staff.problems.error_problem`` reads ``fr``)."""

    fr: str

    def __new__(cls, en: str, fr: str) -> Message:
        value = super().__new__(cls, en)
        value.fr = fr
        return value


@dataclass(frozen=True)
class Dose:
    quantity: float
    unit: str
    fhir: dict[str, Any]  # the doseQuantity as written, for the administration's dose


@dataclass(frozen=True)
class Prescription:
    """A MedicationRequest as the rounds read it (parsed by ``parse``; any MedicationRequest parses)."""

    id: str
    version: int
    patient_id: str
    status: str
    atc: str | None
    label: str | None
    text: str | None  # the prescriber's text as written
    doses: dict[str, Dose]  # round -> dose; empty: no round timing (free text only, or written elsewhere)
    as_needed: bool
    as_needed_reason: str | None
    start: str | None  # boundsPeriod.start (a FHIR date or dateTime)
    end: str | None  # boundsPeriod.end: the last date, or the instant the prescription was stopped
    prescriber: str | None
    authored_on: str | None
    resource: dict[str, Any]

    @property
    def risk(self) -> RiskClass | None:
        return risk_class(self.atc)

    def due_on(self, day: date, name: str, tz: ZoneInfo) -> bool:
        """Whether the prescription's dates cover the dose of ``day`` at round ``name`` (whatever its status)."""
        if name not in self.doses or not self.covers(day):
            return False
        if self.end and len(self.end) > 10:  # the instant it was stopped
            try:
                return round_start(day, name, tz) < _moment(self.end, tz)
            except ValueError:  # a precision Python does not read: the date part said enough
                return True
        return True

    def covers(self, day: date) -> bool:
        """Whether ``day`` is within the prescription's dates (the end date included; FHIR: a partial date covers
        its whole month or year)."""
        text = day.isoformat()
        if self.start and text[:len(self.start[:10])] < self.start[:10]:
            return False
        return not self.end or text[:len(self.end[:10])] <= self.end[:10]


def parse(resource: dict[str, Any], version: int | None = None) -> Prescription:
    medication = resource.get("medicationCodeableConcept") or {}
    atc = next((c.get("code") for c in medication.get("coding") or [] if c.get("system") == ATC), None)
    label = medication.get("text") or next((c.get("display") for c in medication.get("coding") or []
                                            if c.get("display")), None)
    dosages = resource.get("dosageInstruction") or []
    doses: dict[str, Dose] = {}
    start = end = as_needed_reason = None
    as_needed = False
    for dosage in dosages:
        repeat = (dosage.get("timing") or {}).get("repeat") or {}
        bounds = repeat.get("boundsPeriod") or {}
        start, end = start or bounds.get("start"), end or bounds.get("end")
        if dosage.get("asNeededBoolean") or dosage.get("asNeededCodeableConcept"):
            as_needed = True
            as_needed_reason = as_needed_reason or (dosage.get("asNeededCodeableConcept") or {}).get("text")
        quantity = ((dosage.get("doseAndRate") or [{}])[0] or {}).get("doseQuantity") or {}
        for code in repeat.get("when") or []:
            name = ROUND_OF_WHEN.get(code)
            if name is not None and quantity.get("value") is not None:
                doses[name] = Dose(float(quantity["value"]), str(quantity.get("unit") or quantity.get("code") or ""),
                                   quantity)
    requester = resource.get("requester") or {}
    return Prescription(
        id=resource["id"], version=version if version is not None else version_of(resource),
        patient_id=str((resource.get("subject") or {}).get("reference", "")).removeprefix("Patient/"),
        status=str(resource.get("status")), atc=atc, label=label,
        text=next((d["text"] for d in dosages if d.get("text")), None),
        doses={name: doses[name] for name in ROUNDS if name in doses}, as_needed=as_needed,
        as_needed_reason=as_needed_reason, start=start, end=end,
        prescriber=(requester.get("identifier") or {}).get("value") or requester.get("reference"),
        authored_on=resource.get("authoredOn"), resource=resource)


def _moment(text: str, tz: ZoneInfo) -> datetime:
    """A FHIR dateTime with a time (one written without its offset is read in the establishment's time zone)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def round_start(day: date, name: str, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, ROUNDS[name].at, tzinfo=tz)


def round_of(moment: datetime, tz: ZoneInfo) -> tuple[date, str]:
    """The current round at ``moment``: the last one opened (``ROUND_OPENS`` before its time). Before the matin
    round opens, it is the evening before's coucher (the night belongs to the evening, as the night shift does)."""
    local = moment.astimezone(tz)
    for name in reversed(ROUNDS):
        if local >= round_start(local.date(), name, tz) - ROUND_OPENS:
            return local.date(), name
    return local.date() - timedelta(days=1), "coucher"


def dose_key(prescription_id: str, day: date, name: str) -> str:
    """The identifier value of the administration of one dose."""
    return f"{prescription_id}/{day.isoformat()}/{name}"


# -- prescribing ---------------------------------------------------------------------------------------------------

def prescribe(record: Record, actor: Actor, now: datetime, patient_id: str, given: dict[str, Any]) -> Prescription:
    """Record a médecin's prescription for a resident; ``Forbidden`` for anyone who may not write prescriptions,
    ``NotFound`` for a resident not visible, ``Unprocessable`` for an end date already past."""
    record.ctx.require("c", "MedicationRequest")
    record.read("Patient", patient_id)
    today = now.astimezone(record.ctx.tz).date()
    start: date = given.get("start") or today
    end: date | None = given.get("end")
    if end is not None and end < today:
        raise Unprocessable(Message("The end date is already past", "La date de fin est déjà passée"),
                            expression="end", patients=(patient_id,))
    resource = prescription_resource(actor, now, patient_id, given, start, end)
    created, version = record.create(resource)
    return parse(created, version)


def prescription_resource(actor: Actor, now: datetime, patient_id: str, given: dict[str, Any], start: date,
                          end: date | None) -> dict[str, Any]:
    medication = given["medication"]
    concept: dict[str, Any] = {"text": medication["label"]}
    if medication.get("atc"):
        concept["coding"] = [{"system": ATC, "code": medication["atc"]}]
    bounds = {"start": start.isoformat(), **({"end": end.isoformat()} if end else {})}
    by_round = {d["round"]: d for d in given["doses"]}
    dosages: list[dict[str, Any]] = []
    for name in (n for n in ROUNDS if n in by_round):
        dose = by_round[name]
        quantity: dict[str, Any] = {"value": dose["quantity"], "unit": dose["unit"]}
        if UNITS.get(dose["unit"]):
            quantity |= {"system": UCUM, "code": UNITS[dose["unit"]]}
        dosage: dict[str, Any] = {"sequence": 1}
        if not dosages:
            dosage["text"] = given["text"]  # as written, once for the whole prescription
        dosage["timing"] = {"repeat": {"boundsPeriod": bounds, "frequency": 1, "period": 1, "periodUnit": "d",
                                       "when": [ROUNDS[name].when]}}
        if given.get("as_needed_reason"):
            dosage["asNeededCodeableConcept"] = {"text": given["as_needed_reason"]}
        elif given.get("as_needed"):
            dosage["asNeededBoolean"] = True
        dosage["doseAndRate"] = [{"doseQuantity": quantity}]
        dosages.append(dosage)
    return {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": concept, "subject": {"reference": f"Patient/{patient_id}"},
            "authoredOn": instant(now), "requester": actor_reference(actor), "dosageInstruction": dosages}


def stop(record: Record, now: datetime, prescription_id: str, reason: str | None,
         if_match: str | None) -> Prescription:
    """Stop an active prescription now: status ``stopped``, its dates ending now; the doses of the rounds that
    began before stay as they were recorded. ``Conflict`` if it is not active (or was stopped meanwhile)."""
    resource, version = record.read("MedicationRequest", prescription_id)
    record.ctx.require("u", "MedicationRequest")
    current = parse(resource, version)
    _require_active(current)
    stopped_at = instant(now)
    today = now.astimezone(record.ctx.tz).date().isoformat()
    for dosage in resource.get("dosageInstruction") or []:
        repeat = (dosage.get("timing") or {}).get("repeat")
        if repeat is None:
            continue
        bounds = repeat.setdefault("boundsPeriod", {})
        end = bounds.get("end")
        if not (end and len(end) <= 10 and end < today):  # an end date already past stays the end
            bounds["end"] = stopped_at
    resource["status"] = "stopped"
    if reason:
        resource["statusReason"] = {"text": reason}
    resource.pop("meta", None)
    try:
        updated, new_version = record.update(resource, if_match or f'W/"{version}"')
    except PreconditionFailed:
        if if_match:
            raise
        _require_active(parse(*record.read("MedicationRequest", prescription_id)))  # stopped meanwhile
        raise
    return parse(updated, new_version)


def _require_active(prescription: Prescription) -> None:
    if prescription.status != "active":
        raise Conflict(Message(f"This prescription is not active (status {prescription.status})",
                               f"Cette prescription n'est pas en cours (statut {prescription.status})"),
                       patients=(prescription.patient_id,))


# -- reading -------------------------------------------------------------------------------------------------------

def everything(record: Record, rtype: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every match of a search, page after page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    count = [("_count", str(record.ctx.settings.limits.max_count))]
    while True:
        page, cursor = record.page(rtype, [*params, *count], cursor)
        found.extend(page)
        if not cursor:
            return found


def chunks(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), SEARCH_CHUNK):
        yield values[i:i + SEARCH_CHUNK]


def prescriptions_of(record: Record, patient_ids: list[str], statuses: str = "active",
                     changed_since: datetime | None = None) -> list[Prescription]:
    """The prescriptions of these residents with one of ``statuses`` (comma-separated), changed since a moment."""
    out: list[Prescription] = []
    for ids in chunks(patient_ids):
        params = [("subject", ",".join(f"Patient/{i}" for i in ids)), ("status", statuses), ("_sort", "_id")]
        if changed_since is not None:
            params.append(("_lastUpdated", f"ge{instant(changed_since)}"))
        out.extend(parse(r) for r in everything(record, "MedicationRequest", params))
    return out


def recorded(record: Record, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The administrations already recorded for these doses (``dose_key``), by key."""
    found: dict[str, dict[str, Any]] = {}
    for some in chunks(sorted(set(keys))):
        params = [("identifier", ",".join(f"{PLANNED_DOSE}|{k}" for k in some)), ("_sort", "_id")]
        for administration in everything(record, "MedicationAdministration", params):
            key = planned_dose(administration)
            if key is not None:
                found[key] = administration
    return found


def planned_dose(administration: dict[str, Any]) -> str | None:
    return next((i.get("value") for i in administration.get("identifier") or [] if i.get("system") == PLANNED_DOSE),
                None)


def doses_due(record: Record, patient_ids: list[str], now: datetime) -> dict[str, int] | None:
    """Resident -> how many doses of the current round (``round_of``) are due and not yet recorded; as-needed doses
    are not counted. None when the actor may not read prescriptions and administrations (an aide-soignant)."""
    if not (record.may("s", "MedicationRequest") and record.may("s", "MedicationAdministration")):
        return None
    counts = dict.fromkeys(patient_ids, 0)
    if not patient_ids:
        return counts
    tz = record.ctx.tz
    day, name = round_of(now, tz)
    due = [p for p in prescriptions_of(record, patient_ids) if not p.as_needed and p.due_on(day, name, tz)]
    done = recorded(record, [dose_key(p.id, day, name) for p in due])
    for prescription in due:
        if dose_key(prescription.id, day, name) not in done and prescription.patient_id in counts:
            counts[prescription.patient_id] += 1
    return counts


def view(prescription: Prescription) -> dict[str, Any]:
    """A prescription as the staff API shows it."""
    risk = prescription.risk
    return {"id": prescription.id, "version": prescription.version, "resident_id": prescription.patient_id,
            "status": prescription.status, "medication": {"atc": prescription.atc, "label": prescription.label},
            "text": prescription.text,
            "doses": [{"round": name, "time": ROUNDS[name].at.strftime("%H:%M"), "quantity": dose.quantity,
                       "unit": dose.unit} for name, dose in prescription.doses.items()],
            "as_needed": prescription.as_needed, "as_needed_reason": prescription.as_needed_reason,
            "start": prescription.start, "end": prescription.end, "high_risk": risk is not None,
            "high_risk_class": risk.label if risk else None, "prescriber": prescription.prescriber,
            "authored_on": prescription.authored_on}
