"""Demonstration data as FHIR transaction Bundles: two EHPADs, their staff, a partner hospital, and
residents with stays, vital signs, an AGGIR evaluation, conditions, allergies, treatments and a document.

Resources have fixed ids and are written with PUT, so loading twice changes nothing (a PUT that
changes nothing writes no new version). Every resource carries the ``HTEST`` tag (test health
data), which is how a production instance recognises demo data.
"""

from __future__ import annotations

import base64
import random
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dui.demo.identities import Identity, finess, identity, nir_for, rpps
from dui.residents import mapping
from dui.staff.evaluations import aggir_response
from fhir_profiles import CANONICAL
from ins import FR_CORE_IDENTIFIER_TYPES, Evidence, IdentityStatus, InsKind

TEST_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
            "display": "test health data"}
PARIS = ZoneInfo("Europe/Paris")
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITAL = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs",
         "display": "Vital Signs"}


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    resource["meta"] = {**resource.get("meta", {}), "tag": [TEST_TAG]}
    return resource


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    ref = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": ref, "resource": _tagged(resource), "request": {"method": "PUT", "url": ref}}


def _type(code: str, system: str = FR_CORE_IDENTIFIER_TYPES) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# -- establishments and staff ---------------------------------------------------------------------

ESTABLISHMENTS = [
    {"id": "demo-ehpad-les-tilleuls", "name": "EHPAD Les Tilleuls (démo)", "finess": finess("69", "000142"),
     "line": "12 allée des Tilleuls", "city": "Lyon", "postal": "69008"},
    {"id": "demo-ehpad-le-parc", "name": "EHPAD Le Parc (démo)", "finess": finess("69", "000266"),
     "line": "3 rue du Parc", "city": "Villeurbanne", "postal": "69100"},
]
HOSPITAL = {"id": "demo-ch-partenaire", "name": "Centre hospitalier partenaire (démo)",
            "finess": finess("69", "000731"), "line": "1 place de l'Hôpital", "city": "Villefranche-sur-Saône",
            "postal": "69400"}


def organization(org: dict[str, str], kind: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": org["id"],
        "identifier": [
            {"use": "official", "type": _type("FINEG"), "system": "https://finess.esante.gouv.fr",
             "value": org["finess"]},
            {"use": "official", "type": _type("IDNST"), "system": "urn:oid:1.2.250.1.71.4.2.2",
             "value": "1" + org["finess"]},
        ],
        "active": True,
        "type": [{"text": kind}],
        "name": org["name"],
        "telecom": [{"system": "phone", "value": "04 78 00 00 00", "use": "work"}],
        "address": [{"use": "work", "line": [org["line"]], "city": org["city"], "postalCode": org["postal"],
                     "country": "FR"}],
    }


STAFF = [
    # (id suffix, given, family, gender, profession code and label, has RPPS)
    ("medco", "Claire", "Vidal", "female", ("10", "Médecin"), "médecin coordonnateur", True),
    ("ide-1", "Sophie", "Marchand", "female", ("60", "Infirmier"), "infirmière", True),
    ("ide-2", "Karim", "Haddad", "male", ("60", "Infirmier"), "infirmier", True),
    ("as-1", "Nathalie", "Perret", "female", ("526", "Aide-soignant"), "aide-soignante", False),
    ("as-2", "Julien", "Brun", "male", ("526", "Aide-soignant"), "aide-soignant", False),
]


def staff_entries(org: dict[str, str], number: int) -> list[dict[str, Any]]:
    entries = []
    for i, (suffix, given, family, gender, (code, label), role, licensed) in enumerate(STAFF):
        pid = f"{org['id']}-{suffix}"
        identifiers: list[dict[str, Any]] = []
        if licensed:
            number_rpps = rpps(f"10{number:03d}{i:05d}")
            identifiers = [
                {"use": "official", "type": _type("RPPS"), "system": "https://rpps.esante.gouv.fr",
                 "value": number_rpps},
                {"use": "official", "type": _type("IDNPS"), "system": "urn:oid:1.2.250.1.71.4.2.1",
                 "value": "8" + number_rpps},
            ]
        else:
            identifiers = [{"use": "usual", "system": "https://dui.example.org/demo/staff", "value": pid}]
        entries.append(_entry({
            "resourceType": "Practitioner", "id": pid, "identifier": identifiers, "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}], "gender": gender,
        }))
        entries.append(_entry({
            "resourceType": "PractitionerRole", "id": f"{pid}-role", "active": True,
            "practitioner": {"reference": f"Practitioner/{pid}", "display": f"{given} {family}"},
            "organization": {"reference": f"Organization/{org['id']}", "display": org["name"]},
            "code": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                                  "TRE-G15-ProfessionSante", "code": code, "display": label}], "text": role}],
        }))
    return entries


UNITS = [("lilas", "Unité Les Lilas"), ("iris", "Unité protégée Les Iris")]
SENSOR_SYSTEM = "https://dui.example.org/demo/sensor"  # demo serial numbers of the fall sensors
PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"


def unit_location(org: dict[str, str], key: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Location", "id": f"{org['id']}-{key}", "status": "active", "name": name,
            "mode": "instance",
            "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "wa", "display": "Ward"}]},
            "managingOrganization": {"reference": f"Organization/{org['id']}", "display": org["name"]}}


def room_of(index: int) -> tuple[str, str, str]:
    """(room number, unit key, unit name) of the demo resident ``index``: one resident per room."""
    key, name = UNITS[(index // 2) % len(UNITS)]
    return f"{100 + index}", key, name


def room_id_of(index: int) -> str:
    return f"{ESTABLISHMENTS[index % len(ESTABLISHMENTS)]['id']}-chambre-{room_of(index)[0]}"


def room_entries(index: int) -> list[dict[str, Any]]:
    """The room of the demo resident ``index`` and its fall sensor: the establishment's, written with her record
    (and alone, by a test that wants the rooms of residents it does not load)."""
    org = ESTABLISHMENTS[index % len(ESTABLISHMENTS)]
    number, unit_key, unit_name = room_of(index)
    room_id = room_id_of(index)
    return [_entry({
        "resourceType": "Location", "id": room_id, "status": "active", "name": f"Chambre {number}",
        "mode": "instance", "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "ro", "display": "Room"}]},
        "partOf": {"reference": f"Location/{org['id']}-{unit_key}", "display": unit_name},
        "managingOrganization": {"reference": f"Organization/{org['id']}", "display": org["name"]}}), _entry({
            "resourceType": "Device", "id": f"{org['id']}-capteur-{number}", "status": "active",
            "identifier": [{"system": SENSOR_SYSTEM, "value": f"CAPTEUR-{org['finess']}-{number}"}],
            "deviceName": [{"name": "Capteur de détection de chute", "type": "user-friendly-name"}],
            "owner": {"reference": f"Organization/{org['id']}"}, "location": {"reference": f"Location/{room_id}"}})]


def setup_bundle() -> dict[str, Any]:
    """The establishments, their units, their staff and the partner hospital."""
    entries = [_entry(organization(o, "EHPAD")) for o in ESTABLISHMENTS]
    entries.append(_entry(organization(HOSPITAL, "Centre hospitalier")))
    for number, org in enumerate(ESTABLISHMENTS, start=1):
        entries.extend(_entry(unit_location(org, key, name)) for key, name in UNITS)
        entries.extend(staff_entries(org, number))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# -- residents ------------------------------------------------------------------------------------

# The README's examples use this resident (demo-resident-001): her name exercises accents.
FIRST_RESIDENT = Identity("Lefèvre", ["Hélène", "Marie"], None, "female", date(1931, 6, 14), ("69123", "Lyon"),
                          nir_for("female", date(1931, 6, 14), "69123", 1))

CONDITIONS = [
    ("G30.9", "Maladie d'Alzheimer, sans précision"), ("I10", "Hypertension essentielle"),
    ("E11.9", "Diabète de type 2 sans complication"), ("I50.9", "Insuffisance cardiaque"),
    ("M19.9", "Arthrose"), ("E46", "Dénutrition protéino-énergétique"), ("F32.9", "Épisode dépressif"),
    ("H91.1", "Presbyacousie"), ("I48.9", "Fibrillation auriculaire"), ("N18.3", "Insuffisance rénale chronique"),
]  # fmt: skip
TREATMENTS = [
    ("N02BE01", "Paracétamol 500 mg, 1 gélule 3 fois par jour si douleur"),
    ("C08CA01", "Amlodipine 5 mg, 1 comprimé le matin"),
    ("A10BA02", "Metformine 850 mg, 1 comprimé matin et soir"),
    ("N06DA02", "Donépézil 5 mg, 1 comprimé le soir"),
    ("C03CA01", "Furosémide 40 mg, 1 comprimé le matin"),
    ("B01AF01", "Rivaroxaban 15 mg, 1 comprimé au dîner"),
    ("N06AB10", "Escitalopram 10 mg, 1 comprimé le matin"),
]  # fmt: skip
ALLERGIES = [
    ("Pénicillines", "medication"), ("Produits de contraste iodés", "medication"), ("Latex", "environment"),
    ("Arachide", "food"),
]  # fmt: skip


# The GIR of each demo resident's AGGIR evaluation, 30 days after admission: resident 1 has GIR 2, resident 2 GIR 4...
DEMO_GIR = (2, 4, 3, 1, 5, 4, 2, 6, 3, 4)


def demo_gir(index: int) -> int:
    return DEMO_GIR[(index - 1) % len(DEMO_GIR)]


def demo_person(index: int, seed: int = 2026) -> Identity:
    """The identity of the demo resident ``index`` (the one ``resident_bundle`` writes)."""
    return identity(random.Random(seed * 1000 + index), index) if index != 1 else FIRST_RESIDENT


def resident_bundle(index: int, anchor: date, seed: int = 2026) -> dict[str, Any]:
    """One resident and their record, as a transaction Bundle of PUTs."""
    rng = random.Random(seed * 1000 + index)
    person = identity(rng, index) if index != 1 else FIRST_RESIDENT
    org = ESTABLISHMENTS[index % len(ESTABLISHMENTS)]
    pid = f"demo-resident-{index:03d}"
    patient_ref = {"reference": f"Patient/{pid}", "display": person.display}
    medco = {"reference": f"Practitioner/{org['id']}-medco", "display": "Dr Claire Vidal"}
    nurse = {"reference": f"Practitioner/{org['id']}-ide-{1 + index % 2}"}
    admitted = anchor - timedelta(days=rng.randint(60, 1500))
    entries = [_entry(_patient(pid, person, org, index, admitted, rng, medco))]
    number, room_id = room_of(index)[0], room_id_of(index)
    entries.extend(room_entries(index))
    entries.append(_entry({
        "resourceType": "Encounter", "id": f"{pid}-sejour",
        "identifier": [{"type": {"coding": [{"system": "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/"
                                                       "tddui-encounter-identifier", "code": "SEJ",
                                             "display": "Identifiant du séjour"}]},
                        "system": "https://identifiant-medicosocial-sejour.esante.gouv.fr",
                        "value": f"3{org['finess']}/{index:06d}-SEJOUR-1"}],
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH",
                  "display": "home health"},
        "type": [{"text": "Hébergement permanent en EHPAD"}],
        "subject": patient_ref,
        "period": {"start": admitted.isoformat()},
        "location": [{"location": {"reference": f"Location/{room_id}", "display": f"Chambre {number}"},
                      "status": "active"}],
        "serviceProvider": {"reference": f"Organization/{org['id']}", "display": org["name"]},
    }))
    entries.extend(_entry(o) for o in _vital_signs(pid, patient_ref, nurse, anchor, rng))
    entries.append(_entry({**aggir_response(pid, medco, demo_gir(index), admitted + timedelta(days=30), None,
                                            f"3{org['finess']}/{index:06d}-EVAL-1"), "id": f"{pid}-aggir"}))
    for n, (code, label) in enumerate(rng.sample(CONDITIONS, rng.randint(2, 4))):
        entries.append(_entry({
            "resourceType": "Condition", "id": f"{pid}-condition-{n}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code, "display": label}],
                     "text": label},
            "subject": patient_ref,
            "recordedDate": (admitted + timedelta(days=n)).isoformat(),
            "recorder": medco,
        }))
    if rng.random() < 0.4:
        substance, category = rng.choice(ALLERGIES)
        entries.append(_entry({
            "resourceType": "AllergyIntolerance", "id": f"{pid}-allergy-0",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                           "allergyintolerance-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "allergyintolerance-verification", "code": "confirmed"}]},
            "category": [category], "criticality": "high",
            "code": {"text": substance}, "patient": patient_ref, "recorder": medco,
        }))
    for n, (atc, text) in enumerate(rng.sample(TREATMENTS, rng.randint(2, 4))):
        entries.append(_entry({
            "resourceType": "MedicationRequest", "id": f"{pid}-treatment-{n}",
            "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": atc}],
                                          "text": text.split(",")[0]},
            "subject": patient_ref, "authoredOn": (anchor - timedelta(days=rng.randint(1, 90))).isoformat(),
            "requester": medco, "dosageInstruction": [{"text": text.split(", ", 1)[1]}],
        }))
    entries.extend(_entry(r) for r in _dlu_facts(pid, patient_ref, medco, admitted, rng, person))
    summary = (f"Synthèse d'admission de {person.display}, née le {person.birth_date:%d/%m/%Y}. "
               if person.gender == "female" else
               f"Synthèse d'admission de {person.display}, né le {person.birth_date:%d/%m/%Y}. ")
    summary += "Document de démonstration : données fictives."
    entries.append(_entry({
        "resourceType": "DocumentReference", "id": f"{pid}-synthese",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "34133-9", "display": "Summary of episode note"}],
                 "text": "Synthèse d'admission"},
        "subject": patient_ref,
        "date": _instant(admitted, 11),
        "author": [medco],
        "custodian": {"reference": f"Organization/{org['id']}"},
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "language": "fr-FR",
                                    "title": "Synthèse d'admission",
                                    "data": base64.b64encode(summary.encode("utf-8")).decode("ascii")}}],
    }))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


HOSPITALS = ["Centre hospitalier partenaire (démo), Villefranche-sur-Saône", "Hôpital Édouard-Herriot, Lyon",
             "Centre hospitalier Lyon Sud, Pierre-Bénite"]
VACCINES = [("J07BB02", "Vaccin grippal saisonnier"), ("J07AL02", "Vaccin pneumococcique conjugué"),
            ("J07BX03", "Vaccin COVID-19")]


def _dlu_facts(pid: str, subject: dict[str, str], medco: dict[str, str], admitted: date, rng: random.Random,
               person: Identity) -> list[dict[str, Any]]:
    """What the DLU shows beyond conditions, allergies and treatments: a personne de confiance, the dispositions
    with the preferred hospital, risks, sometimes BMR carriage and advance directives, vaccinations."""
    flag_system = f"{CANONICAL}/CodeSystem/dui-demo-alert"
    out: list[dict[str, Any]] = [{
        "resourceType": "RelatedPerson", "id": f"{pid}-confiance", "active": True, "patient": subject,
        "relationship": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_R260-HL7RoleClass/FHIR/"
                                                "TRE-R260-HL7RoleClass", "code": "NOK"}],
                          "text": "Personne de confiance"}],
        "name": [{"family": person.usual_family or person.family,
                  "given": [rng.choice(["Isabelle", "Philippe", "Catherine", "Alain", "Sylvie", "Patrick"])]}],
        "telecom": [{"system": "phone", "value": f"06 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                                                 f"{rng.randint(10, 99)} {rng.randint(10, 99)}"}],
    }, {
        "resourceType": "CarePlan", "id": f"{pid}-dispositions", "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": LOINC, "code": "11302-7", "display": "Dispositions"}]}],
        "subject": subject, "author": medco,
        "description": "En cas d'urgence, appeler le 15 puis la personne de confiance.",
        "activity": [{"detail": {"status": "not-started", "description": "Hospitalisation si nécessaire",
                                 "location": {"display": rng.choice(HOSPITALS)}}}],
        "note": [{"text": "Porte des lunettes et un appareil auditif."}],
    }, {
        "resourceType": "Flag", "id": f"{pid}-risque-chute", "status": "active", "subject": subject,
        "code": {"coding": [{"system": flag_system, "code": "fall-risk"}], "text": "Risque de chute"},
        "period": {"start": admitted.isoformat()},
    }]
    if rng.random() < 0.2:
        out.append({"resourceType": "Flag", "id": f"{pid}-bmr", "status": "active", "subject": subject,
                    "code": {"coding": [{"system": flag_system, "code": "mdro"}],
                             "text": "Portage de BMR (entérobactérie BLSE)"},
                    "period": {"start": (admitted + timedelta(days=30)).isoformat()}})
    if rng.random() < 0.3:
        out.append({"resourceType": "Consent", "id": f"{pid}-directives", "status": "active",
                    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                          "code": "adr", "display": "Advanced Care Directive"}],
                              "text": "Directives anticipées : pas d'acharnement thérapeutique"},
                    "category": [{"coding": [{"system": LOINC, "code": "42348-3"}]}],
                    "policyRule": {"text": "Directives anticipées (code de la santé publique, art. L.1111-11)"},
                    "patient": subject, "dateTime": (admitted + timedelta(days=10)).isoformat()})
    for n, (atc, label) in enumerate(rng.sample(VACCINES, rng.randint(1, 3))):
        out.append({"resourceType": "Immunization", "id": f"{pid}-vaccin-{n}", "status": "completed",
                    "vaccineCode": {"coding": [{"system": "http://www.whocc.no/atc", "code": atc}], "text": label},
                    "patient": subject,
                    "occurrenceDateTime": (admitted + timedelta(days=20 + n)).isoformat()})
    return out


def _patient(pid: str, person: Identity, org: dict[str, str], index: int, admitted: date,
             rng: random.Random, medco: dict[str, str]) -> dict[str, Any]:
    draw = rng.random()
    status = IdentityStatus.QUAL if draw < 0.65 or index == 1 else (
        IdentityStatus.RECUP if draw < 0.8 else IdentityStatus.PROV)
    identifiers: list[dict[str, Any]] = [{
        "use": "usual", "type": _type("PI", "http://terminology.hl7.org/CodeSystem/v2-0203"),
        "system": "https://identifiant-medicosocial-localusager.esante.gouv.fr",
        "value": f"3{org['finess']}/{index:06d}",
    }]
    if status.insi:
        identifiers.insert(0, {"use": "official", "type": _type(InsKind.TEST.type_code),
                               "system": InsKind.TEST.system, "value": person.nir})
    names: list[dict[str, Any]] = [{
        "use": "official", "family": person.family, "given": [person.given[0]],
        "extension": [{"url": f"{FR_CORE}fr-core-patient-birth-list-given-name",
                       "valueString": " ".join(person.given)}],
    }]
    if person.usual_family:
        names.append({"use": "usual", "family": person.usual_family, "given": [person.given[0]]})
    cog, label = person.birth_place
    birth_place: dict[str, Any] = {"extension": [{"url": f"{FR_CORE}fr-core-address-insee-code", "valueCoding": {
        "system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
        if not cog.startswith("99") else "https://mos.esante.gouv.fr/NOS/TRE_R20-Pays/FHIR/TRE-R20-Pays",
        "code": cog}}]}
    if cog.startswith("99"):
        birth_place["country"] = label
    else:
        birth_place["city"] = label
    evidence = Evidence(document="CN" if status.document else None,
                        document_date=admitted if status.document else None,
                        insi_date=admitted if status.insi else None)
    child_given = rng.choice(["Isabelle", "Philippe", "Catherine", "Alain", "Sylvie", "Patrick"])
    return mapping.with_identity({
        "resourceType": "Patient", "id": pid,
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": birth_place},
        ],
        "identifier": identifiers,
        "active": True,
        "name": names,
        "telecom": [{"system": "phone", "value": f"04 78 {index % 90 + 10:02d} {rng.randint(10, 99)} "
                                                 f"{rng.randint(10, 99)}", "use": "home"}],
        "gender": person.gender,
        "birthDate": person.birth_date.isoformat(),
        "address": [{"use": "home", "line": [org["line"], f"Chambre {100 + index}"], "city": org["city"],
                     "postalCode": org["postal"], "country": "FR"}],
        "contact": [{
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                          "code": "N", "display": "Next-of-Kin"}], "text": "Enfant"}],
            "name": {"family": person.usual_family or person.family, "given": [child_given]},
            "telecom": [{"system": "phone", "value": f"06 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                                                     f"{rng.randint(10, 99)} {rng.randint(10, 99)}"}],
        }],
        "generalPractitioner": [medco],
        "managingOrganization": {"reference": f"Organization/{org['id']}", "display": org["name"]},
    }, status, evidence)


def _instant(day: date, hour: int, minute: int = 0) -> str:
    return datetime.combine(day, time(hour, minute), PARIS).isoformat()


def _vital_signs(pid: str, subject: dict[str, str], performer: dict[str, str], anchor: date,
                 rng: random.Random) -> list[dict[str, Any]]:
    """Eight weeks of observations: weight weekly; blood pressure, pulse and temperature twice a week."""
    out = []
    weight = round(rng.uniform(48, 82), 1)
    systolic = rng.randint(118, 150)
    for week in range(8):
        monday = anchor - timedelta(days=anchor.weekday() + 7 * (8 - week))
        weight = round(weight + rng.uniform(-0.6, 0.4), 1)
        out.append(_quantity(f"{pid}-weight-{week}", subject, performer, _instant(monday, 9),
                             "29463-7", "Poids corporel", weight, "kg", "kg"))
        for day_offset, slot in ((1, "a"), (4, "b")):
            day = monday + timedelta(days=day_offset)
            when = _instant(day, 8, 30)
            sys_value = systolic + rng.randint(-12, 12)
            out.append({
                "resourceType": "Observation", "id": f"{pid}-bp-{week}{slot}", "status": "final",
                "category": [{"coding": [VITAL]}],
                "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
                         "text": "Pression artérielle"},
                "subject": subject, "effectiveDateTime": when, "performer": [performer],
                "component": [
                    _component("8480-6", "Pression artérielle systolique", sys_value),
                    _component("8462-4", "Pression artérielle diastolique", sys_value - rng.randint(40, 60)),
                ],
            })
            out.append(_quantity(f"{pid}-pulse-{week}{slot}", subject, performer, when, "8867-4",
                                 "Fréquence cardiaque", rng.randint(58, 96), "/min", "battements/min"))
            out.append(_quantity(f"{pid}-temp-{week}{slot}", subject, performer, when, "8310-5",
                                 "Température corporelle", round(rng.uniform(36.2, 37.6), 1), "Cel", "°C"))
    return out


def _quantity(oid: str, subject: dict[str, str], performer: dict[str, str], when: str, code: str, label: str,
              value: float | int, ucum: str, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final", "category": [{"coding": [VITAL]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": label}], "text": label},
        "subject": subject, "effectiveDateTime": when, "performer": [performer],
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
    }


def _component(code: str, label: str, value: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code, "display": label}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}
