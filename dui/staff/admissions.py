"""Admission, discharge and death of a resident: each one call of the staff API, each one unit of work.

**Admission** (RNIV; DOMAIN.md §1.5 and §2.3, TDDUI ``tddui-encounter-sejour``), for the establishment's
administration:

1. The identity traits follow the INS rules (``ins.traits.check_traits``), else 422 naming the field.
2. The RNIV asks to look for an existing record before creating one: ``Patient/$match``
   (``dui.residents.duplicates``) among the residents the establishment sees. A ``certain`` or ``probable`` match
   stops the admission with 409 naming the records, unless ``confirm_new`` (staff checked: another person);
   ``possible`` matches never stop it and are answered with the new record, as ``dui.residents.admission.admit``
   does.
3. The room: a ``Location`` of physical type room (``ro``) managed by the establishment (else 422), with no current
   stay in it (else 409). Its row is locked first, so that two admissions into one room run one after the other.
4. One transaction Bundle: the Patient (identity provisoire, ``dui.residents.admission.provisional_patient``;
   ``managingOrganization`` the establishment; ``generalPractitioner`` the médecin traitant, a Practitioner
   created from the name and RPPS given unless one with this RPPS exists), the stay (Encounter ``in-progress``,
   ``serviceProvider`` the establishment's Organization, ``location`` the room, the TDDUI admission date and
   entry mode), the personne de confiance (RelatedPerson ``NOK``, as the demo data and the DLU read it), the DMP
   information and opposition (Consents of ``dui-dmp``, as ``dui.documents.dmp_feed`` reads them).
5. INSi when asked (``Patient/{id}/$ins-fetch``, ``dui.residents.operations.fetch_ins``): one identity found, the
   identity is récupérée; none or several, it stays provisoire with INSi's advice; INSi unreachable, it stays
   provisoire and the answer says to retry ``$ins-fetch`` later. An INS another resident already carries is a
   certain duplicate: 409, and nothing of the admission stays.

The GIR (AGGIR evaluation) is not part of this call: it is recorded with ``POST
/api/residents/{id}/evaluations/aggir`` (built separately), once the resident is admitted.

**Discharge** and **death** end the resident's current stay in the establishment: Encounter ``finished``,
``period.end``, the room's ``location.status`` completed (which frees the room), the TDDUI exit mode
(``tddui-exit-mode-label``; a death also sets ``hospitalization.dischargeDisposition`` to ``exp``). A death sets
``Patient.deceasedDateTime`` too. A date before the admission, or later than now, is refused (422); a second
discharge, or a second death, is a conflict (409).

Every read and write goes through ``Record``: the authorization policy decides, on each interaction, what the
actor's role may write (by default the direction reads identity data only: an establishment that wants its
direction to admit grants it in ``DUI_POLICY_FILE``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from dui.auth.actor import Actor
from dui.auth.roles import ADMINISTRATIF, DIRECTION, MEDECIN
from dui.documents import dmp_feed
from dui.errors import Conflict, Issue, NotFound, Unavailable, Unprocessable
from dui.fhir.scope import CURRENT_ENCOUNTER, FINESS_SYSTEM
from dui.residents import admission
from dui.staff.record import (
    Record,
    as_json,
    create_entry,
    editable,
    instant,
    location_id,
    update_entry,
    version_of,
)
from dui.staff.refusals import Said, refuse, require_role
from dui.staff.residents import identity_view
from dui.tddui.profiles import CANONICAL as TDDUI
from ins import InsTraits
from ins.traits import GENDERS, check_traits

ADMISSION_ROLES = frozenset({ADMINISTRATIF, DIRECTION})
DEATH_ROLES = frozenset({ADMINISTRATIF, DIRECTION, MEDECIN})

# TDDUI 2.2.0 (DOMAIN.md §2.3; the tddui-encounter-sejour differential and example)
STAY_SYSTEM = "https://identifiant-medicosocial-sejour.esante.gouv.fr"
STAY_TYPE = {"coding": [{"system": f"{TDDUI}/CodeSystem/tddui-encounter-identifier", "code": "SEJ",
                         "display": "Identifiant du séjour"}]}
ADMISSION_DATE = f"{TDDUI}/StructureDefinition/tddui-admission-date"
ENTRY_MODE = f"{TDDUI}/StructureDefinition/tddui-entry-mode-label"
EXIT_MODE = f"{TDDUI}/StructureDefinition/tddui-exit-mode-label"
HOME_HEALTH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH",
               "display": "home health"}
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ROOM = "ro"  # http://terminology.hl7.org/CodeSystem/location-physical-type
STAY_KIND = "Hébergement permanent en EHPAD"
# FR Core practitioner identifiers (DOMAIN.md §3): RPPS, and the idNat PS ("8" + RPPS) TDDUI requires
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
IDNPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
FR_CORE_TYPES = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
# The personne de confiance, as the demo data writes her and the DLU reads her (dui.documents.extract)
NOK_RELATIONSHIP = {"system": "https://mos.esante.gouv.fr/NOS/TRE_R260-HL7RoleClass/FHIR/TRE-R260-HL7RoleClass",
                    "code": "NOK"}
CONSENT_SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                             "code": "patient-privacy"}]}
CLOCK_TOLERANCE = timedelta(minutes=5)  # a time of death "now" from a device whose clock runs a little ahead
BLOCKING_GRADES = ("certain", "probable")  # a match of these grades stops an admission unless confirmed

INSI_FRENCH = {
    "00": "INS récupéré par le téléservice INSi : l'identité est récupérée",
    "01": "INSi ne trouve aucune identité pour ces traits : vérifiez-les sur une pièce d'identité, essayez un "
          "autre prénom de naissance ou la carte Vitale",
    "02": "INSi trouve plusieurs identités pour ces traits : indiquez le lieu de naissance (code COG) et réessayez",
    "unavailable": "INSi ne répond pas : l'identité reste provisoire ; relancez la recherche plus tard "
                   "(Patient/$ins-fetch)",
}
TRAIT_FIELDS = {"birth_family": "identity.birth_family", "birth_given_names": "identity.birth_given_names",
                "first_given": "identity.birth_given_names", "birth_date": "identity.birth_date",
                "sex": "identity.gender", "birth_place": "identity.birth_place"}
TRAIT_FRENCH = {"birth_family": "Le nom de naissance ne suit pas les règles de l'INS (lettres, espace, tiret, "
                                "apostrophe)",
                "birth_given_names": "Les prénoms de naissance ne suivent pas les règles de l'INS (lettres, "
                                     "espace, tiret, apostrophe)",
                "first_given": "Le premier prénom de naissance ne suit pas les règles de l'INS",
                "birth_date": "La date de naissance n'est pas plausible",
                "sex": "Le sexe est féminin, masculin ou indéterminé",
                "birth_place": "Le lieu de naissance est un code COG de l'INSEE (5 caractères ; 99xxx pour un "
                               "pays)"}


@dataclass
class Admitted:
    """What an admission wrote and found: the answer of ``POST /api/admissions``."""

    resident: dict[str, Any]
    version: int
    stay: dict[str, Any]
    insi: dict[str, Any]
    duplicates: list[dict[str, Any]]
    created: dict[str, str] = field(default_factory=dict)  # what -> Type/id


def admit(record: Record, actor: Actor, now: datetime, request: dict[str, Any]) -> Admitted:
    """Admit a resident (see the module's docstring); ``request`` is the checked body of ``POST /api/admissions``."""
    require_role(actor, ADMISSION_ROLES, "an admission is recorded by the establishment's administration",
                 "une admission est enregistrée par l'administration de l'établissement")
    assert actor.establishment is not None  # the staff API serves the staff of an establishment
    finess = actor.establishment
    today = now.astimezone(record.ctx.tz).date()
    identity, stay_in = request["identity"], request["stay"]
    traits = _traits(identity, today)
    if request["insi"] and traits.sex not in ("M", "F"):
        raise refuse(Unprocessable, "INSi searches by traits need the sex (female or male): give it, or admit "
                     "without INSi (insi: false)", "La recherche INSi par traits demande le sexe (féminin ou "
                     "masculin) : indiquez-le, ou admettez sans INSi (insi : false)", "identity.gender")
    if stay_in["start"] > today:
        raise refuse(Unprocessable, "The stay starts on the day the resident arrives, not later",
                     "Le séjour commence le jour de l'arrivée du résident, pas après", "stay.start")
    org = establishment(record, finess)
    local_id = identity.get("local_id") or uuid.uuid4().hex[:12].upper()
    patient = admission.provisional_patient(traits, f"3{finess}/{local_id}")
    _name_in_use(patient, identity)
    patient["managingOrganization"] = _reference(org)
    duplicates = _duplicates(record, patient)
    blocking = [d for d in duplicates if d["grade"] in BLOCKING_GRADES]
    if blocking and not request["confirm_new"]:
        raise _probable_duplicates(blocking)
    room = _free_room(record, finess, stay_in["room"])

    urls = {kind: f"urn:uuid:{uuid.uuid4()}" for kind in ("patient", "stay", "gp", "trusted", "informed",
                                                          "opposed")}
    subject = {"reference": urls["patient"]}
    entries: list[dict[str, Any]] = []
    gp = request.get("general_practitioner")
    if gp:
        patient["generalPractitioner"] = [_general_practitioner(record, gp, urls["gp"], entries)]
    entries.insert(0, create_entry(patient, urls["patient"]))
    entries.append(create_entry(_stay(local_id, finess, subject, org, room, stay_in), urls["stay"]))
    trusted = request.get("trusted_person")
    if trusted:
        entries.append(create_entry(_trusted_person(subject, trusted), urls["trusted"]))
    dmp = request.get("dmp")
    if dmp and dmp.get("informed"):
        entries.append(create_entry(_dmp_information(subject, org, dmp.get("informed_on") or today), urls["informed"]))
    if dmp and dmp.get("opposed"):
        entries.append(create_entry(_dmp_opposition(subject, org, now, dmp["opposition_reason"]), urls["opposed"]))
    locations = record.transaction(entries)
    created = {kind: "/".join(loc.split("/")[:2]) for kind, loc in zip(_kinds(entries, urls), locations,
                                                                        strict=True)}
    pid = location_id(created["patient"])
    insi = _fetch_ins(record, pid) if request["insi"] else {"requested": False, "result": None, "message": None,
                                                               "message_fr": None}
    body, version = record.read("Patient", pid)
    stay_view = {"id": location_id(created["stay"]), "status": "in-progress", "start": stay_in["start"].isoformat(),
                 "end": None, "exit_mode": None, "room": {"id": room["id"], "name": room.get("name")}}
    return Admitted(identity_view(body), version, stay_view, insi, duplicates, created)


def discharge(record: Record, actor: Actor, now: datetime, pid: str, day: date, destination: str) -> dict[str, Any]:
    """End the resident's current stay on ``day``, going to ``destination`` (the TDDUI exit mode's label)."""
    require_role(actor, ADMISSION_ROLES, "a discharge is recorded by the establishment's administration",
                 "une sortie est enregistrée par l'administration de l'établissement")
    record.read("Patient", pid)
    _lock(record, "Patient", pid)
    stay, version = current_stay(record, actor, pid)
    if stay is None:
        raise refuse(Conflict, "The resident has no current stay in the establishment: already discharged?",
                     "Le résident n'a pas de séjour en cours dans l'établissement : sortie déjà enregistrée ?")
    _check_end(record, now, stay, day, "date")
    finished, _ = record.update(_finished(stay, day.isoformat(), destination, None), f'W/"{version}"')
    return {"resident_id": pid, "stay": stay_of(finished), "deceased_at": None}


def record_death(record: Record, actor: Actor, now: datetime, pid: str, moment: datetime) -> dict[str, Any]:
    """Record the resident's death at ``moment``: ``Patient.deceasedDateTime``, and her current stay finished."""
    require_role(actor, DEATH_ROLES, "a death is recorded by the establishment's administration or a physician",
                 "un décès est enregistré par l'administration de l'établissement ou un médecin")
    patient, patient_version = record.read("Patient", pid)
    _lock(record, "Patient", pid)
    if patient.get("deceasedDateTime") or patient.get("deceasedBoolean"):
        raise refuse(Conflict, "The resident's death is recorded already", "Le décès du résident est déjà "
                     "enregistré")
    if moment > now + CLOCK_TOLERANCE:
        raise refuse(Unprocessable, "The time of death cannot be later than now",
                     "L'heure du décès ne peut pas être postérieure à maintenant", "deceased_at")
    stay, version = current_stay(record, actor, pid)
    when = instant(moment)
    patient = editable(patient)
    patient["deceasedDateTime"] = when
    entries = [update_entry(patient, patient_version)]
    if stay is not None:
        _check_end(record, now, stay, moment.astimezone(record.ctx.tz).date(), "deceased_at")
        entries.append(update_entry(_finished(stay, when, "Décès", "exp"), version))
    record.transaction(entries)
    stays = [record.read("Encounter", stay["id"])[0]] if stay is not None else []
    return {"resident_id": pid, "stay": stay_of(stays[0]) if stays else None, "deceased_at": when}


# -- the establishment, its rooms and stays -----------------------------------------------------------------


def establishment(record: Record, finess: str) -> dict[str, Any]:
    """The establishment's Organization (the first carrying its FINESS); 422 when the record has none."""
    found = record.search("Organization", [("identifier", f"{FINESS_SYSTEM}|{finess}"), ("_sort", "_id"),
                                           ("_count", "10")])
    if not found:
        raise refuse(Unprocessable, f"No Organization of the record carries your establishment's FINESS ({finess}): "
                     "the administrator records it first", f"Aucune Organization du dossier ne porte le FINESS de "
                     f"votre établissement ({finess}) : l'administrateur doit d'abord l'enregistrer")
    return found[0]


def current_stay(record: Record, actor: Actor, pid: str) -> tuple[dict[str, Any] | None, int]:
    """The resident's current stay in the actor's establishment (planned, arrived or in progress), and its
    version; (None, 0) when there is none (a stay in a partner's establishment is not one)."""
    assert actor.establishment is not None
    orgs = _organizations(record, actor.establishment)
    for stay in record.search("Encounter", [("subject", f"Patient/{pid}"), ("status", ",".join(CURRENT_ENCOUNTER)),
                                            ("_sort", "-date"), ("_count", "20")]):
        if (stay.get("serviceProvider") or {}).get("reference") in orgs:
            return stay, version_of(stay)
    return None, 0


def _organizations(record: Record, finess: str) -> set[str]:
    """References of the Organizations carrying the establishment's FINESS (those its grants name)."""
    return {f"Organization/{o['id']}" for o in record.search("Organization", [
        ("identifier", f"{FINESS_SYSTEM}|{finess}"), ("_elements", "id"), ("_count", "10")])}


def stay_of(encounter: dict[str, Any]) -> dict[str, Any]:
    """A stay as the staff API shows it."""
    period = encounter.get("period") or {}
    place = ((encounter.get("location") or [{}])[0].get("location")) or {}
    exit_mode = next((e.get("valueString") for e in encounter.get("extension") or [] if e.get("url") == EXIT_MODE),
                     None)
    return {"id": encounter["id"], "status": encounter.get("status"), "start": period.get("start"),
            "end": period.get("end"), "exit_mode": exit_mode,
            "room": {"id": str(place.get("reference", "")).removeprefix("Location/") or None,
                     "name": place.get("display")} if place else None}


def _free_room(record: Record, finess: str, room_id: str) -> dict[str, Any]:
    """The room, once known to be a room of the establishment that no current stay occupies."""
    not_ours = refuse(Unprocessable, f"Location/{room_id} is not an open room of your establishment",
                      f"Location/{room_id} n'est pas une chambre ouverte de votre établissement", "stay.room")
    _lock(record, "Location", room_id)
    try:
        room, _ = record.read("Location", room_id)
    except NotFound:
        raise not_ours from None
    physical = {c.get("code") for c in (room.get("physicalType") or {}).get("coding") or []}
    orgs = _organizations(record, finess)
    if ROOM not in physical or (room.get("managingOrganization") or {}).get("reference") not in orgs \
            or room.get("status") == "inactive":
        raise not_ours
    taken = record.search("Encounter", [("location", f"Location/{room_id}"), ("status", ",".join(CURRENT_ENCOUNTER)),
                                        ("_elements", "id"), ("_count", "1")])
    if taken:
        raise refuse(Conflict, f"{room.get('name') or room_id} is occupied by a current stay: choose another room, "
                     "or record the discharge first", f"{room.get('name') or room_id} est occupée par un séjour en "
                     "cours : choisissez une autre chambre, ou enregistrez d'abord la sortie", "stay.room")
    return room


def _lock(record: Record, rtype: str, rid: str) -> None:
    """Hold the row of ``rtype/rid`` until the unit of work ends (``SELECT ... FOR UPDATE`` on PostgreSQL), so that
    two requests that would both pass a check (a free room; a current stay) run one after the other. A lock, not a
    write: the record is changed only through ``Record``."""
    record.ctx.repo.current(rtype, rid, for_update=True)


def _check_end(record: Record, now: datetime, stay: dict[str, Any], day: date, name: str) -> None:
    start = date.fromisoformat(str((stay.get("period") or {}).get("start", "0001-01-01"))[:10])
    if day < start:
        raise refuse(Unprocessable, f"The date is before the admission ({start.isoformat()})",
                     f"La date est antérieure à l'admission ({start.strftime('%d/%m/%Y')})", name)
    if day > now.astimezone(record.ctx.tz).date():
        raise refuse(Unprocessable, "The date is in the future: record the discharge on the day",
                     "La date est dans le futur : enregistrez la sortie le jour même", name)


def _finished(stay: dict[str, Any], end: str, exit_mode: str, disposition: str | None) -> dict[str, Any]:
    out = editable(stay)
    out["status"] = "finished"
    out["period"] = {**(out.get("period") or {}), "end": end}
    for place in out.get("location") or []:
        if place.get("status") in (None, "active", "planned", "reserved"):
            place["status"] = "completed"
            place["period"] = {**(place.get("period") or {}), "end": end}
    out["extension"] = [e for e in out.get("extension") or [] if e.get("url") != EXIT_MODE]
    out["extension"].append({"url": EXIT_MODE, "valueString": exit_mode})
    concept: dict[str, Any] = {"text": exit_mode}
    if disposition:
        concept["coding"] = [{"system": DISCHARGE_DISPOSITION, "code": disposition, "display": "Expired"}]
    out["hospitalization"] = {**(out.get("hospitalization") or {}), "dischargeDisposition": concept}
    return out


# -- what an admission writes ------------------------------------------------------------------------------


def _traits(identity: dict[str, Any], today: date) -> InsTraits:
    traits = InsTraits(identity["birth_family"], tuple(" ".join(identity["birth_given_names"]).split()),
                       identity["birth_date"].isoformat(), GENDERS[identity["gender"]], identity.get("birth_place"))
    problems = [p for p in check_traits(traits, today) if p.severity == "error"]
    if problems:  # each problem names its field and rule, never the value
        issues = [Issue(Said(p.message, TRAIT_FRENCH.get(p.field, "Trait d'identité refusé (règles de l'INS)")),
                        "business-rule", expression=(TRAIT_FIELDS.get(p.field, "identity"),)) for p in problems]
        raise Unprocessable(Said("The identity traits break the INS rules",
                                 "Les traits d'identité ne suivent pas les règles de l'INS"),
                            issues=issues, code="business-rule")
    return traits


def _name_in_use(patient: dict[str, Any], identity: dict[str, Any]) -> None:
    """The name used every day (nom d'usage, prénom usuel), when it differs from the birth name."""
    family, given = identity.get("used_family"), identity.get("used_given")
    if family or given:
        official = patient["name"][0]
        patient["name"].append({"use": "usual", "family": family or official["family"],
                                "given": [given or official["given"][0]]})


def _reference(resource: dict[str, Any]) -> dict[str, Any]:
    out = {"reference": f"{resource['resourceType']}/{resource['id']}"}
    if resource.get("name") and isinstance(resource["name"], str):
        out["display"] = resource["name"]
    return out


def _duplicates(record: Record, patient: dict[str, Any]) -> list[dict[str, Any]]:
    """The records ``patient`` may duplicate, best first (``Patient/$match``)."""
    answer = as_json(record.run("POST", "Patient/$match", body={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient}]}).body)
    out = []
    for entry in answer.get("entry") or []:
        found, search = entry["resource"], entry.get("search") or {}
        grade = next((e.get("valueCode") for e in search.get("extension") or [] if e.get("url", "").endswith(
            "match-grade")), None)
        view = identity_view(found)
        out.append({"id": found["id"], "grade": grade, "score": search.get("score"), "family": view["family"],
                    "given": view["given"], "birth_date": view["birth_date"]})
    return out


def _probable_duplicates(blocking: list[dict[str, Any]]) -> Conflict:
    names = ", ".join(f"Patient/{d['id']} ({d['grade']}, {d['score']})" for d in blocking)
    return refuse(Conflict, f"The record may already exist: {names}. Check them; if the resident is another person, "
                  "admit again with confirm_new: true", f"Le dossier existe peut-être déjà : {names}. Vérifiez ; "
                  "s'il s'agit d'une autre personne, admettez de nouveau avec confirm_new : true", "confirm_new",
                  code="duplicate", patients=tuple(d["id"] for d in blocking))


def _general_practitioner(record: Record, gp: dict[str, Any], url: str,
                          entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The médecin traitant's reference: the Practitioner named, the one carrying the RPPS given, or a new one
    (its creation appended to ``entries``)."""
    if gp.get("id"):
        try:
            found, _ = record.read("Practitioner", gp["id"])
        except NotFound:
            raise refuse(Unprocessable, f"Practitioner/{gp['id']} does not exist",
                         f"Practitioner/{gp['id']} n'existe pas", "general_practitioner.id") from None
        return {"reference": f"Practitioner/{found['id']}", "display": _display(found)}
    rpps = gp.get("rpps")
    if rpps:
        known = record.search("Practitioner", [("identifier", f"{RPPS_SYSTEM}|{rpps}"), ("_sort", "_id"),
                                               ("_count", "1")])
        if known:
            return {"reference": f"Practitioner/{known[0]['id']}", "display": _display(known[0])}
    practitioner: dict[str, Any] = {"resourceType": "Practitioner", "active": True,
                                    "name": [{"family": gp["family"], **({"given": [gp["given"]]} if gp.get("given")
                                                                          else {}), "prefix": ["Dr"]}]}
    if rpps:
        practitioner["identifier"] = [
            {"use": "official", "type": {"coding": [{"system": FR_CORE_TYPES, "code": "IDNPS"}]},
             "system": IDNPS_SYSTEM, "value": f"8{rpps}"},
            {"use": "official", "type": {"coding": [{"system": FR_CORE_TYPES, "code": "RPPS"}]},
             "system": RPPS_SYSTEM, "value": rpps}]
    if gp.get("phone"):
        practitioner["telecom"] = [{"system": "phone", "value": gp["phone"], "use": "work"}]
    entries.append(create_entry(practitioner, url))
    return {"reference": url, "display": _display(practitioner)}


def _display(practitioner: dict[str, Any]) -> str:
    name = (practitioner.get("name") or [{}])[0]
    return " ".join(["Dr", *(name.get("given") or []), name.get("family") or ""]).strip()


def _stay(local_id: str, finess: str, subject: dict[str, Any], org: dict[str, Any], room: dict[str, Any],
          stay: dict[str, Any]) -> dict[str, Any]:
    start = stay["start"].isoformat()
    extensions = [{"url": ADMISSION_DATE, "valueDateTime": start}]
    if stay.get("entry_mode"):
        extensions.append({"url": ENTRY_MODE, "valueString": stay["entry_mode"]})
    return {
        "resourceType": "Encounter", "extension": extensions,
        "identifier": [{"type": STAY_TYPE, "system": STAY_SYSTEM, "value": f"3{finess}/{local_id}-SEJOUR-1"}],
        "status": "in-progress", "class": HOME_HEALTH, "type": [{"text": stay.get("kind") or STAY_KIND}],
        "subject": subject, "period": {"start": start},
        "location": [{"location": {"reference": f"Location/{room['id']}", "display": room.get("name")},
                      "status": "active", "period": {"start": start}}],
        "serviceProvider": _reference(org),
    }


def _trusted_person(subject: dict[str, Any], person: dict[str, Any]) -> dict[str, Any]:
    relationship: list[dict[str, Any]] = [{"coding": [NOK_RELATIONSHIP], "text": "Personne de confiance"}]
    if person.get("relationship"):
        relationship.append({"text": person["relationship"]})
    related: dict[str, Any] = {"resourceType": "RelatedPerson", "active": True, "patient": subject,
                               "relationship": relationship,
                               "name": [{"family": person["family"],
                                         **({"given": [person["given"]]} if person.get("given") else {})}]}
    if person.get("phone"):
        related["telecom"] = [{"system": "phone", "value": person["phone"]}]
    return related


def _dmp_information(subject: dict[str, Any], org: dict[str, Any], day: date) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active", "scope": CONSENT_SCOPE,
            "category": [{"coding": [{"system": dmp_feed.CONSENT_SYSTEM, "code": dmp_feed.INFORMATION}]}],
            "patient": subject, "dateTime": day.isoformat(), "organization": [_reference(org)],
            "policyRule": {"text": "Information sur le DMP donnée au résident"}}


def _dmp_opposition(subject: dict[str, Any], org: dict[str, Any], now: datetime, reason: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active", "scope": CONSENT_SCOPE,
            "category": [{"coding": [{"system": dmp_feed.CONSENT_SYSTEM, "code": dmp_feed.OPPOSITION}]}],
            "extension": [{"url": dmp_feed.OPPOSITION_REASON, "valueString": reason}],
            "patient": subject, "dateTime": instant(now), "organization": [_reference(org)],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTOUT"}]}}


def _kinds(entries: list[dict[str, Any]], urls: dict[str, str]) -> list[str]:
    by_url = {url: kind for kind, url in urls.items()}
    return [by_url[entry["fullUrl"]] for entry in entries]


def _fetch_ins(record: Record, pid: str) -> dict[str, Any]:
    """INSi by traits on the new record (``$ins-fetch``); unreachable, the identity stays provisoire."""
    try:
        answer = as_json(record.run("POST", f"Patient/{pid}/$ins-fetch").body)
    except Unavailable as exc:
        record.refused = None  # nothing was written: the admission goes on with a provisional identity
        return {"requested": True, "result": "unavailable", "message": exc.message,
                "message_fr": INSI_FRENCH["unavailable"]}
    except Conflict as exc:  # another record carries the INS INSi returns: the admission is refused whole
        raise refuse(Conflict, exc.message, "INSi renvoie un INS qu'un autre dossier porte déjà : c'est sans doute "
                     "le même résident (voir le détail) ; rien n'a été enregistré", "identity", code="duplicate",
                     patients=exc.patients) from None
    values = {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None)
              for p in answer.get("parameter") or []}
    result = str(values.get("result"))
    return {"requested": True, "result": result, "message": values.get("message"),
            "message_fr": INSI_FRENCH.get(result)}

