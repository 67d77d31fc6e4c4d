"""Realistic EHPAD records for the benchmarks, as FHIR transaction Bundles of at most 100 entries.

Each resident has a stay, 3-6 conditions, 0-2 allergies, 4-8 treatments, a document a month and, every
week: one weight, three blood pressures, three pulses, three temperatures and two oxygen saturations
(12 Observations). Identities are French and fictitious (test INS OID, valid NIR keys). Patients are
PUT with fixed ids (``bench-<n>``) so that every server holds the same ids; everything else is POSTed
with ``urn:uuid`` full URLs, as an integration engine would send it. Deterministic for a seed.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dui.demo.identities import identity
from ins import FR_CORE_IDENTIFIER_TYPES, InsKind

PARIS = ZoneInfo("Europe/Paris")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
END = date(2026, 11, 1)  # the last week of data ends here
IPP_SYSTEM = "https://identifiant-medicosocial-localusager.esante.gouv.fr"
VITALS = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
WEEKLY = [  # (LOINC, label, UCUM, low, high, decimals, times a week)
    ("29463-7", "Poids", "kg", 45.0, 90.0, 1, 1),
    ("8867-4", "Fréquence cardiaque", "/min", 55, 100, 0, 3),
    ("8310-5", "Température", "Cel", 36.0, 37.8, 1, 3),
    ("59408-5", "Saturation en oxygène", "%", 90, 99, 0, 2),
]
CONDITIONS = ["G30.9", "I10", "E11.9", "I50.9", "M19.9", "E46", "F32.9", "H91.1", "I48.9", "N18.3", "M81.9"]
DRUGS = ["N02BE01", "C08CA01", "A10BA02", "N06DA02", "C03CA01", "B01AF01", "N06AB10", "A02BC01", "C07AB07"]


def resident_id(index: int) -> str:
    return f"bench-{index:06d}"


def ins_of(index: int, seed: int = 7) -> str:
    """The test INS of resident ``index`` (as generated for it)."""
    return identity(random.Random(seed * 1_000_003 + index), index).nir


# The EHPAD every resident is admitted to, so that a member of its staff (``bench/run.py --actor staff``) sees them.
ESTABLISHMENT_ID, ESTABLISHMENT_FINESS = "bench-ehpad", "690001425"


def establishment_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Organization", "id": ESTABLISHMENT_ID, "name": "EHPAD du banc d'essai",
                     "identifier": [{"system": "https://finess.esante.gouv.fr", "value": ESTABLISHMENT_FINESS}]},
        "request": {"method": "PUT", "url": f"Organization/{ESTABLISHMENT_ID}"}}]}


def resident_bundles(index: int, weeks: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """The bundles holding one resident's record (the Patient is in the first one)."""
    rng = random.Random(seed * 1_000_003 + index)
    person = identity(rng, index)
    pid = resident_id(index)
    ref = {"reference": f"Patient/{pid}"}
    entries: list[dict[str, Any]] = [{
        "resource": {
            "resourceType": "Patient", "id": pid,
            "identifier": [
                {"use": "official", "system": InsKind.TEST.system, "value": person.nir,
                 "type": {"coding": [{"system": FR_CORE_IDENTIFIER_TYPES, "code": InsKind.TEST.type_code}]}},
                {"use": "usual", "system": IPP_SYSTEM, "value": f"3690001428/{index:06d}"},
            ],
            "name": [{"use": "official", "family": person.family, "given": person.given}],
            "gender": person.gender, "birthDate": person.birth_date.isoformat(),
            "address": [{"line": ["12 allée des Tilleuls"], "city": "Lyon", "postalCode": "69008"}],
            "managingOrganization": {"reference": f"Organization/{ESTABLISHMENT_ID}"},
        },
        "request": {"method": "PUT", "url": f"Patient/{pid}"},
    }]
    start = END - timedelta(weeks=weeks)
    entries.append(_post({"resourceType": "Encounter", "status": "in-progress",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                          "subject": ref, "period": {"start": start.isoformat()}}, rng))
    for code in rng.sample(CONDITIONS, rng.randint(3, 6)):
        entries.append(_post({"resourceType": "Condition", "subject": ref, "recordedDate": start.isoformat(),
                              "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                             "condition-clinical", "code": "active"}]},
                              "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}]}}, rng))
    for _ in range(rng.randint(0, 2)):
        entries.append(_post({"resourceType": "AllergyIntolerance", "patient": ref,
                              "code": {"text": rng.choice(["Pénicillines", "Iode", "Latex", "Arachide"])}}, rng))
    for atc in rng.sample(DRUGS, rng.randint(4, 8)):
        entries.append(_post({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                              "subject": ref, "authoredOn": start.isoformat(),
                              "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc",
                                                                        "code": atc}]}}, rng))
    note = base64.b64encode(("Transmissions ciblées. " * 60).encode()).decode()
    for month in range(max(1, weeks // 4)):
        day = start + timedelta(weeks=4 * month)
        entries.append(_post({"resourceType": "DocumentReference", "status": "current", "subject": ref,
                              "type": {"coding": [{"system": LOINC, "code": "34133-9"}]}, "date": _at(day, 11),
                              "content": [{"attachment": {"contentType": "text/plain", "data": note}}]}, rng))
    for week in range(weeks):
        monday = start + timedelta(weeks=week)
        for code, label, unit, low, high, decimals, times in WEEKLY:
            for n in range(times):
                value = round(rng.uniform(low, high), decimals) if decimals else rng.randint(int(low), int(high))
                entries.append(_post(_vital(ref, _at(monday + timedelta(days=2 * n), 8 + n), code, label,
                                            {"value": value, "unit": unit, "system": UCUM, "code": unit}), rng))
        for n in range(3):
            sys_value = rng.randint(110, 165)
            bp = _vital(ref, _at(monday + timedelta(days=2 * n), 9), "85354-9", "Pression artérielle", None)
            bp["component"] = [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": {"value": sys_value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": {"value": sys_value - rng.randint(40, 60), "unit": "mmHg", "system": UCUM,
                                   "code": "mm[Hg]"}}]
            entries.append(_post(bp, rng))
    for i in range(0, len(entries), 100):
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries[i:i + 100]}


def _post(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    full_url = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _vital(subject: dict[str, str], when: str, code: str, label: str,
           quantity: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Observation", "status": "final", "category": [{"coding": [VITALS]}],
                           "code": {"coding": [{"system": LOINC, "code": code, "display": label}]},
                           "subject": subject, "effectiveDateTime": when}
    if quantity is not None:
        out["valueQuantity"] = quantity
    return out


def _at(day: date, hour: int) -> str:
    return datetime.combine(day, time(hour), PARIS).isoformat()


def resources_per_resident(weeks: int) -> float:
    """About how many resources ``resident_bundles`` makes for ``weeks`` weeks."""
    return 1 + 1 + 4.5 + 1 + 6 + max(1, weeks // 4) + 12 * weeks
