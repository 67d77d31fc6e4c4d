"""The bedside use cases: vital signs and weight, pain, falls.

Each is one transaction through ``dui.staff.record.Record`` (one unit of work: everything recorded, or nothing).
Values come checked by the staff API's schemas against the plausibility limits of ``dui.staff.codes``; what is
plausible but worth a look (a weight 5 kg away from last week's) is recorded and answered with a warning.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from dui.auth.actor import Actor
from dui.residents.provenance import actor_reference
from dui.staff import codes
from dui.staff.record import Record, create_entry, instant, location_id


@dataclass
class Recorded:
    """What a use case wrote: the ids of the resources created, and warnings for the person who wrote them."""

    ids: list[str]
    warnings: list[dict[str, str]] = field(default_factory=list)


def record_vital_signs(record: Record, actor: Actor, now: datetime, patient_id: str,
                       values: dict[str, Any]) -> Recorded:
    """One Observation per measure given (blood pressure as one panel, pain with its scale)."""
    subject = _subject(record, patient_id)
    when = instant(values.get("effective") or now)
    observations: list[dict[str, Any]] = []
    for name, measure in codes.MEASURES.items():
        if values.get(name) is not None:
            observations.append(_measure(measure, values[name], subject, actor, when))
    if values.get("systolic") is not None or values.get("diastolic") is not None:
        observations.append(_blood_pressure(values, subject, actor, when))
    if values.get("pain") is not None:
        observations.append(_pain(values["pain"], subject, actor, when))
    warnings = _weight_warnings(record, patient_id, values.get("weight_kg"), values.get("effective") or now)
    entries = [create_entry(o, f"urn:uuid:{uuid.uuid4()}") for o in observations]
    return Recorded([location_id(loc) for loc in record.transaction(entries)], warnings)


def declare_fall(record: Record, actor: Actor, now: datetime, patient_id: str, fall: dict[str, Any],
                 source: str = "declared", device: dict[str, Any] | None = None) -> Recorded:
    """A fall, with its circumstances: an Observation (SNOMED CT 1912002 |Fall|) the indicators count."""
    subject = _subject(record, patient_id)
    observation = fall_observation(subject, actor, instant(fall.get("occurred_at") or now), fall, source,
                                   device)
    return Recorded([location_id(loc) for loc in record.transaction([create_entry(observation,
                                                                                  f"urn:uuid:{uuid.uuid4()}")])])


def fall_observation(subject: dict[str, Any], actor: Actor, when: str, fall: dict[str, Any], source: str,
                     device: dict[str, Any] | None = None) -> dict[str, Any]:
    system, code, display = codes.FALL
    components = []
    for key, label in codes.FALL_COMPONENTS.items():
        value = fall.get(key)
        if value is None:
            continue
        component: dict[str, Any] = {"code": {"coding": [{"system": codes.DUI_OBSERVATION, "code": f"chute-{label}"}]}}
        if isinstance(value, bool):
            component["valueBoolean"] = value
        elif isinstance(value, int):
            component["valueQuantity"] = {"value": value, "unit": "min", "system": codes.UCUM, "code": "min"}
        else:
            component["valueString"] = str(value)
        components.append(component)
    observation: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": codes.DUI_CARE, "code": "chute", "display": "Chute"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": "Chute"},
        "subject": subject, "effectiveDateTime": when, "performer": [actor_reference(actor)],
        "method": {"coding": [{"system": codes.DUI_CARE, "code": codes.FALL_SOURCE[source]}]},
    }
    if device is not None:
        observation["device"] = device
    if components:
        observation["component"] = components
    if fall.get("note"):
        observation["note"] = [{"text": fall["note"]}]
    return observation


def _subject(record: Record, patient_id: str) -> dict[str, Any]:
    """The resident's reference, once her record is known visible (404 as ``/fhir`` says it otherwise)."""
    record.read("Patient", patient_id)
    return {"reference": f"Patient/{patient_id}"}


def _base(category: str, system: str, code: str, display: str, subject: dict[str, Any], actor: Actor,
          when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "subject": subject, "effectiveDateTime": when, "performer": [actor_reference(actor)]}


def _quantity(measure: codes.Measure, value: Any) -> dict[str, Any]:
    number = int(value) if measure.integer else float(value)  # as typed: 72.5 is written 72.5
    return {"value": number, "unit": measure.unit, "system": codes.UCUM, "code": measure.unit}


def _measure(measure: codes.Measure, value: Any, subject: dict[str, Any], actor: Actor, when: str) -> dict[str, Any]:
    observation = _base(measure.category, measure.system, measure.code, measure.display, subject, actor, when)
    observation["code"]["coding"] += [{"system": measure.system, "code": c, "display": d} for c, d in measure.also]
    observation["valueQuantity"] = _quantity(measure, value)
    return observation


def _blood_pressure(values: dict[str, Any], subject: dict[str, Any], actor: Actor, when: str) -> dict[str, Any]:
    code, display = codes.BLOOD_PRESSURE
    observation = _base("vital-signs", codes.LOINC, code, display, subject, actor, when)
    observation["component"] = [
        {"code": {"coding": [{"system": codes.LOINC, "code": m.code, "display": m.display}]},
         "valueQuantity": _quantity(m, values[m.name])}
        for m in (codes.SYSTOLIC, codes.DIASTOLIC) if values.get(m.name) is not None]
    return observation


def _pain(pain: dict[str, Any], subject: dict[str, Any], actor: Actor, when: str) -> dict[str, Any]:
    system, code, display, _ = codes.PAIN_SCALES[pain["scale"]]
    observation = _base("survey", system, code, display, subject, actor, when)
    observation["valueInteger"] = pain["score"]
    return observation


def _weight_warnings(record: Record, patient_id: str, weight: Any, when: datetime) -> list[dict[str, str]]:
    """A warning when the weight moved by ``WEIGHT_WARNING_KG`` or more from one of the past week's."""
    if weight is None:
        return []
    since = instant(when - timedelta(days=codes.WEIGHT_WARNING_DAYS))
    previous = record.search("Observation", [
        ("subject", f"Patient/{patient_id}"), ("code", f"{codes.LOINC}|29463-7"), ("date", f"ge{since}"),
        ("date", f"le{instant(when)}"), ("_sort", "-date"), ("_count", "50")])
    for observation in previous:
        before = (observation.get("valueQuantity") or {}).get("value")
        if before is None:
            continue
        change = Decimal(str(weight)) - Decimal(str(before))
        if abs(change) >= Decimal(str(codes.WEIGHT_WARNING_KG)):
            day = str(observation.get("effectiveDateTime", ""))[:10]
            return [{"field": "weight_kg", "code": "weight-change",
                     "detail": f"Weight changed by {change:+} kg since {day} (threshold "
                               f"{codes.WEIGHT_WARNING_KG} kg in {codes.WEIGHT_WARNING_DAYS} days)",
                     "detail_fr": f"Le poids a varié de {change:+} kg depuis le {day} (seuil "
                                  f"{codes.WEIGHT_WARNING_KG} kg en {codes.WEIGHT_WARNING_DAYS} jours)"}]
    return []
