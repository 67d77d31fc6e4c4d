"""The resident's record read into a ``ResidentRecord`` (``dui.documents.record``): one reading, shared by the
DLU, the FLUDT and their PDF.

What fills what (docs/documents.md, "What fills each section"):

=====================  ===================================================================================
identity               the Patient: RNIV traits, the INS only when the identity is qualified (sharing gate)
establishment          the Organization managing the resident (``Patient.managingOrganization``)
gp                     ``Patient.generalPractitioner`` (a Practitioner; its RPPS and phone)
trusted / notify       ``Patient.contact`` and RelatedPerson: personne de confiance (NOK, PERSCONF, or the
                       words "personne de confiance"), else a person to notify (ECON, C, N...)
dispositions           CarePlan (active) of category LOINC 11302-7: its description; the preferred hospital
                       is its ``activity.detail.location``; its notes are the comment
pathologies            Condition active (or recurrence, relapse)
antecedents            Condition inactive, remission or resolved; Procedure completed
allergies              AllergyIntolerance active (refuted and entered-in-error left out); one coded "no known
                       allergy" (SNOMED CT 716186003...) says that none is known, which an empty list does not
treatments             MedicationRequest active, MedicationStatement active or intended
directives             Consent of scope ``adr`` or category ``acd`` (active); DocumentReference of type
                       42348-3 (advance directives)
state                  Flag active (risks: falls, wandering...), Observation of category survey or
                       functional status / ``exam`` (psychic state, mobility, handicaps)
results                Observation of category laboratory, and Flags naming BMR / BHRe carriage
vaccinations           Immunization completed
vitals                 the latest Observation of each vital sign (category vital-signs)
attached               DocumentReference current, other than the documents built here
=====================  ===================================================================================

``record_version`` is a digest of every ``Type/id/_history/version`` read: the same record gives the same
version, any change to what a document shows gives another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from dui.documents.record import Code, Establishment, Identity, Item, Person, ResidentRecord
from dui.fhir.repository import FhirRepository, ResourceVersion
from dui.residents import mapping
from dui.residents.sharing import may_share_ins
from fhir_profiles import CANONICAL

LOINC = "http://loinc.org"
BUILT_TAG_SYSTEM = f"{CANONICAL}/CodeSystem/dui-document-origin"
# The resource types a document shows: a change to one of them in a resident's compartment makes the resident's
# DLU out of date (dui.documents.freshness).
SOURCE_TYPES = ("Patient", "AllergyIntolerance", "Condition", "Procedure", "MedicationRequest",
                "MedicationStatement", "Immunization", "Observation", "Flag", "Consent", "CarePlan",
                "RelatedPerson", "DocumentReference", "Encounter")
REFERENCED_TYPES = ("Organization", "Practitioner")
DISPOSITIONS = "11302-7"
ADVANCE_DIRECTIVES = ("42348-3", "acd", "adr")  # LOINC advance directives; consent scope adr, category acd
TRUSTED_CODES = frozenset({"NOK", "PERSCONF", "TRUSTED"})
# SNOMED CT: no known allergy, no known drug allergy, no known food allergy, no known environmental allergy
NO_KNOWN_ALLERGY = ("716186003", "409137002", "429625007", "428607008")
ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
PAST_CONDITION = frozenset({"inactive", "remission", "resolved"})
BMR_WORDS = ("bmr", "bhre", "multirésistant", "multiresistant", "ehpad-bmr")
RPPS_SYSTEMS = ("urn:oid:1.2.250.1.71.4.2.1", "https://rpps.esante.gouv.fr")
FINESS_SYSTEM = "https://finess.esante.gouv.fr"
LOCAL_ID_SYSTEM = "https://identifiant-medicosocial-localusager.esante.gouv.fr"
LOCAL_ID_OID = "1.2.250.1.213.1.4.2"  # UNCONFIRMED placeholder for the local identifier's assigning authority


class Record:
    """The versions read for one resident, by type, with the referenced practitioners and organizations."""

    def __init__(self, versions: Iterable[ResourceVersion]) -> None:
        self.by_type: dict[str, list[dict[str, Any]]] = {}
        self.by_ref: dict[str, dict[str, Any]] = {}
        self.stamps: list[str] = []
        for version in versions:
            if version.deleted or version.body is None:
                continue
            body = version.resource()
            if version.type == "DocumentReference" and built_here(body):
                continue  # a document built from the record is not part of what it shows
            self.by_type.setdefault(version.type, []).append(body)
            self.by_ref[f"{version.type}/{version.id}"] = body
            self.stamps.append(f"{version.type}/{version.id}/_history/{version.version}")

    def of(self, rtype: str) -> list[dict[str, Any]]:
        return self.by_type.get(rtype, [])

    def ref(self, reference: Any) -> dict[str, Any] | None:
        if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
            return self.by_ref.get(reference["reference"])
        return None

    @property
    def version(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.stamps)).encode()).hexdigest()[:32]


def read_versions(repo: FhirRepository, patient: ResourceVersion, page: int = 500) -> list[ResourceVersion]:
    """The resident's Patient, the resources of its compartment a document shows, and the organizations and
    practitioners they point at (``$everything``'s reading, filtered by type)."""
    options: dict[str, Any] = {"count": page, "since": None, "types": [*SOURCE_TYPES, *REFERENCED_TYPES],
                               "cursor": None}
    rids: list[int] = []
    while True:
        found, cursor = repo.everything(patient.rid, patient.id, options)
        rids += found
        if cursor is None:
            break
        options["cursor"] = cursor
    return repo.fetch(rids)


def built_here(doc: dict[str, Any]) -> bool:
    """A DocumentReference this service built (a DLU, a FLUDT, an N1): not a source of the documents."""
    return any(t.get("system") == BUILT_TAG_SYSTEM for t in (doc.get("meta") or {}).get("tag") or [])


def read_record(record: Record, patient_id: str, as_of: datetime) -> ResidentRecord:
    patient = record.by_ref[f"Patient/{patient_id}"]
    org = record.ref(patient.get("managingOrganization")) or {}
    dispositions = [c for c in record.of("CarePlan") if c.get("status") == "active" and _has_code(
        c.get("category"), (DISPOSITIONS,))]
    stays = [e for e in record.of("Encounter") if e.get("status") in ("in-progress", "onleave", "arrived", "planned")
             and _refers(e.get("subject"), patient_id)]
    people = _people(record, patient)
    return ResidentRecord(
        patient_id=patient_id,
        identity=identity_of(patient),
        establishment=_establishment(org, patient.get("managingOrganization")),
        as_of=as_of,
        record_version=record.version,
        stay_start=min((s.get("period") or {}).get("start") or "9999" for s in stays) if stays else None,
        gp=_gp(record, patient),
        trusted=tuple(p for p, trusted in people if trusted),
        notify=tuple(p for p, trusted in people if not trusted),
        preferred_hospital=next((loc for c in dispositions for loc in _locations(c)), None),
        dispositions=tuple(Item(c.get("description") or _text(c.get("title")) or "Dispositions",
                                source=_src(c)) for c in dispositions),
        pathologies=tuple(_condition(c) for c in record.of("Condition")
                          if _status(c.get("clinicalStatus")) in ACTIVE_CONDITION and not _refuted(c)),
        antecedents=(*(_condition(c) for c in record.of("Condition")
                       if _status(c.get("clinicalStatus")) in PAST_CONDITION and not _refuted(c)),
                     *(_procedure(p) for p in record.of("Procedure") if p.get("status") == "completed")),
        allergies=tuple(_allergy(a) for a in record.of("AllergyIntolerance")
                        if _status(a.get("clinicalStatus")) in ("active", None) and not _refuted(a)
                        and not _has_code([a.get("code")], NO_KNOWN_ALLERGY)),
        no_known_allergy=any(_has_code([a.get("code")], NO_KNOWN_ALLERGY) and not _refuted(a)
                             and _status(a.get("clinicalStatus")) in ("active", None)
                             for a in record.of("AllergyIntolerance")),
        treatments=(*(_medication(m, m.get("dosageInstruction")) for m in record.of("MedicationRequest")
                      if m.get("status") == "active"),
                    *(_medication(m, m.get("dosage")) for m in record.of("MedicationStatement")
                      if m.get("status") in ("active", "intended"))),
        directives=(*(Item(_concept_text(c.get("scope")) or "Directives anticipées", _first_code(c.get("scope")),
                           start=c.get("dateTime"), detail=_notes(c), source=_src(c))
                      for c in record.of("Consent") if c.get("status") == "active"
                      and (_has_code([c.get("scope")], ADVANCE_DIRECTIVES)
                           or _has_code(c.get("category"), ADVANCE_DIRECTIVES))),
                    *(Item(d.get("description") or _concept_text(d.get("type")) or "Directives anticipées",
                           _first_code(d.get("type")), start=d.get("date"), source=_src(d))
                      for d in record.of("DocumentReference")
                      if d.get("status") == "current" and _has_code([d.get("type")], ADVANCE_DIRECTIVES))),
        state=(*(_flag(f) for f in record.of("Flag") if f.get("status") == "active" and not _bmr(f)),
               *(_observation(o) for o in record.of("Observation")
                 if _categories(o) & {"survey", "functional-status", "exam", "social-history"}
                 and o.get("status") in ("final", "amended", "corrected"))),
        results=(*(_flag(f) for f in record.of("Flag") if f.get("status") == "active" and _bmr(f)),
                 *(_observation(o) for o in _latest(record.of("Observation"), "laboratory"))),
        vaccinations=tuple(Item(_concept_text(i.get("vaccineCode")) or "Vaccination", _first_code(i.get("vaccineCode")),
                                start=i.get("occurrenceDateTime"), source=_src(i))
                           for i in record.of("Immunization") if i.get("status") == "completed"),
        vitals=tuple(_observation(o) for o in _latest(record.of("Observation"), "vital-signs")),
        attached=tuple(Item(_concept_text(d.get("type")) or d.get("description") or "Document",
                            _first_code(d.get("type")), start=d.get("date"), source=_src(d))
                       for d in record.of("DocumentReference") if d.get("status") == "current" and not built_here(d)),
        comment=" ".join(n for c in dispositions for n in [_notes(c)] if n) or None,
        sources=tuple(sorted(record.stamps)),
    )


# -- identity and people ----------------------------------------------------------------------------


def identity_of(patient: dict[str, Any]) -> Identity:
    """The identity traits of a Patient as documents print them; the INS only when the sharing gate allows it."""
    official = mapping.official_name(patient) or {}
    usual = next((n for n in patient.get("name") or [] if n.get("use") == "usual"), None)
    given = official.get("given") or [""]
    birth_list = next((e.get("valueString") for e in official.get("extension") or []
                       if e.get("url") == mapping.BIRTH_LIST), None)
    place = _birth_place(patient)
    status = mapping.status_of(patient)
    ins = mapping.active_ins(patient) if may_share_ins(patient) else None
    local = next((i for i in patient.get("identifier") or [] if i.get("system") == LOCAL_ID_SYSTEM), None)
    address: dict[str, Any] = next(iter(patient.get("address") or []), {})
    phone = next((t.get("value") for t in patient.get("telecom") or [] if t.get("system") == "phone"), None)
    return Identity(
        birth_family=official.get("family") or "",
        first_given=given[0],
        birth_given=birth_list or " ".join(given),
        used_family=usual.get("family") if usual else None,
        used_given=(usual.get("given") or [None])[0] if usual else None,
        birth_date=date.fromisoformat(patient["birthDate"][:10]) if patient.get("birthDate") else date(1900, 1, 1),
        sex=patient.get("gender") or "unknown",
        birth_place_code=place[0],
        birth_place=place[1],
        status_code=status.code,
        status_label=status.label,
        ins=ins.value if ins is not None else None,
        ins_oid=ins.kind.system.removeprefix("urn:oid:") if ins is not None else None,
        local_id=(local or {}).get("value") or patient["id"],
        local_oid=LOCAL_ID_OID,
        address=tuple([*address.get("line", []), " ".join(x for x in (address.get("postalCode"),
                                                                           address.get("city")) if x)]
                      if address else ()),
        phone=phone,
    )


def _birth_place(patient: dict[str, Any]) -> tuple[str | None, str | None]:
    for ext in patient.get("extension") or []:
        if ext.get("url") != mapping.BIRTH_PLACE:
            continue
        address = ext.get("valueAddress") or {}
        code = next((e.get("valueCoding", {}).get("code") for e in address.get("extension") or []
                     if e.get("url") == mapping.INSEE_CODE), None)
        return code, address.get("city") or address.get("country")
    return None, None


def _establishment(org: dict[str, Any], ref: Any) -> Establishment:
    finess = next((i.get("value") for i in org.get("identifier") or [] if i.get("system") == FINESS_SYSTEM), "")
    address: dict[str, Any] = next(iter(org.get("address") or []), {})
    return Establishment(
        name=org.get("name") or (ref or {}).get("display") or "Établissement",
        finess=finess or "",
        line=" ".join(address.get("line") or []) or None,
        postal=address.get("postalCode"),
        city=address.get("city"),
        phone=next((t.get("value") for t in org.get("telecom") or [] if t.get("system") == "phone"), None),
        source=f"Organization/{org['id']}" if org.get("id") else None,
    )


def _gp(record: Record, patient: dict[str, Any]) -> Person | None:
    for ref in patient.get("generalPractitioner") or []:
        found = record.ref(ref)
        if found is not None and found.get("resourceType") == "Practitioner":
            name: dict[str, Any] = next(iter(found.get("name") or []), {})
            rpps = next((i.get("value") for i in found.get("identifier") or []
                         if i.get("system") in RPPS_SYSTEMS), None)
            return Person(name.get("family") or "", (name.get("given") or [None])[0], "Médecin traitant",
                          _phone(found), rpps, f"Practitioner/{found['id']}")
        if isinstance(ref, dict) and ref.get("display"):
            return Person(ref["display"], None, "Médecin traitant")
    return None


def _people(record: Record, patient: dict[str, Any]) -> list[tuple[Person, bool]]:
    out: list[tuple[Person, bool]] = []
    for n, contact in enumerate(patient.get("contact") or []):
        trusted = _trusted(contact.get("relationship"))
        name = contact.get("name") or {}
        out.append((Person(name.get("family") or name.get("text") or "", (name.get("given") or [None])[0],
                           "Personne de confiance" if trusted else _concept_text(
                               next(iter(contact.get("relationship") or []), None)) or "Personne à prévenir",
                           _phone(contact), source=f"Patient/{patient['id']}#contact[{n}]"), trusted))
    for related in record.of("RelatedPerson"):
        if related.get("active") is False:
            continue
        trusted = _trusted(related.get("relationship"))
        related_name: dict[str, Any] = next(iter(related.get("name") or []), {})
        out.append((Person(related_name.get("family") or related_name.get("text") or "",
                           (related_name.get("given") or [None])[0],
                           "Personne de confiance" if trusted else _concept_text(
                               next(iter(related.get("relationship") or []), None)) or "Personne à prévenir",
                           _phone(related), source=_src(related)), trusted))
    return out


def _trusted(relationships: Any) -> bool:
    for concept in relationships or []:
        if _has_code([concept], TRUSTED_CODES) or "confiance" in (_concept_text(concept) or "").lower():
            return True
    return False


def _phone(resource: dict[str, Any]) -> str | None:
    return next((t.get("value") for t in resource.get("telecom") or [] if t.get("system") == "phone"), None)


# -- clinical items -----------------------------------------------------------------------------------


def _condition(c: dict[str, Any]) -> Item:
    return Item(_concept_text(c.get("code")) or "Pathologie", _first_code(c.get("code")),
                start=c.get("onsetDateTime") or c.get("recordedDate"), end=c.get("abatementDateTime"),
                source=_src(c))


def _procedure(p: dict[str, Any]) -> Item:
    return Item(_concept_text(p.get("code")) or "Intervention", _first_code(p.get("code")),
                start=p.get("performedDateTime") or (p.get("performedPeriod") or {}).get("start"), source=_src(p))


def _allergy(a: dict[str, Any]) -> Item:
    reactions = [m for r in a.get("reaction") or [] for m in (_concept_text(x) for x in r.get("manifestation") or [])
                 if m]
    criticality = {"high": "criticité élevée", "low": "criticité faible"}.get(a.get("criticality") or "")
    detail = "; ".join(x for x in (", ".join(reactions), criticality) if x) or None
    return Item(_concept_text(a.get("code")) or "Allergie", _first_code(a.get("code")),
                start=a.get("onsetDateTime") or a.get("recordedDate"), detail=detail, source=_src(a))


def _medication(m: dict[str, Any], dosage: Any) -> Item:
    concept = m.get("medicationCodeableConcept")
    text = _concept_text(concept) or ((m.get("medicationReference") or {}).get("display")) or "Traitement"
    posology = "; ".join(str(d["text"]) for d in dosage or [] if isinstance(d, dict) and d.get("text")) or None
    return Item(text, _first_code(concept), start=m.get("authoredOn") or (m.get("effectivePeriod") or {}).get(
        "start"), detail=posology, source=_src(m))


def _flag(f: dict[str, Any]) -> Item:
    return Item(_concept_text(f.get("code")) or "Alerte", _first_code(f.get("code")),
                start=(f.get("period") or {}).get("start"), source=_src(f))


def _bmr(f: dict[str, Any]) -> bool:
    text = (_concept_text(f.get("code")) or "").lower()
    return any(word in text for word in BMR_WORDS)


def _observation(o: dict[str, Any]) -> Item:
    return Item(_concept_text(o.get("code")) or "Observation", _first_code(o.get("code")),
                start=o.get("effectiveDateTime") or (o.get("effectivePeriod") or {}).get("start"),
                detail=_value(o), source=_src(o))


def _value(o: dict[str, Any]) -> str | None:
    if "valueQuantity" in o:
        q = o["valueQuantity"]
        return f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    if "valueCodeableConcept" in o:
        return _concept_text(o["valueCodeableConcept"])
    if "valueString" in o:
        return str(o["valueString"])
    if "valueBoolean" in o:
        return "oui" if o["valueBoolean"] else "non"
    parts = []
    for component in o.get("component") or []:
        value = _value(component)
        if value:
            parts.append(f"{_concept_text(component.get('code')) or ''} {value}".strip())
    return ", ".join(parts) or None


def _latest(observations: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """The latest final observation of each code in ``category``."""
    best: dict[str, dict[str, Any]] = {}
    for o in observations:
        if category not in _categories(o) or o.get("status") not in ("final", "amended", "corrected"):
            continue
        code = _first_code(o.get("code"))
        key = code.code if code else (_concept_text(o.get("code")) or "")
        when = o.get("effectiveDateTime") or ""
        if key not in best or when > (best[key].get("effectiveDateTime") or ""):
            best[key] = o
    return sorted(best.values(), key=lambda o: _concept_text(o.get("code")) or "")


# -- small readings -------------------------------------------------------------------------------------


def _src(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _refers(ref: Any, patient_id: str) -> bool:
    return isinstance(ref, dict) and ref.get("reference") == f"Patient/{patient_id}"


def _categories(resource: dict[str, Any]) -> set[str]:
    return {c.get("code") for concept in resource.get("category") or [] for c in concept.get("coding") or []}


def _status(concept: Any) -> str | None:
    return next((c.get("code") for c in (concept or {}).get("coding") or []), None)


def _refuted(resource: dict[str, Any]) -> bool:
    return _status(resource.get("verificationStatus")) in ("refuted", "entered-in-error")


def _has_code(concepts: Any, codes: Iterable[str]) -> bool:
    wanted = set(codes)
    return any(c.get("code") in wanted for concept in concepts or [] if isinstance(concept, dict)
               for c in concept.get("coding") or [])


def _concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    return concept.get("text") or next((c.get("display") for c in concept.get("coding") or [] if c.get("display")),
                                       None)


def _first_code(concept: Any) -> Code | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if coding.get("code"):
            system = coding.get("system")
            return Code(coding["code"], coding.get("display") or concept.get("text") or coding["code"], system,
                        system.removeprefix("urn:oid:") if isinstance(system, str) and system.startswith("urn:oid:")
                        else None)
    return None


def _notes(resource: dict[str, Any]) -> str | None:
    return " ".join(n.get("text") for n in resource.get("note") or [] if n.get("text")) or None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _locations(careplan: dict[str, Any]) -> Iterable[str]:
    for activity in careplan.get("activity") or []:
        location = (activity.get("detail") or {}).get("location") or {}
        if location.get("display"):
            yield location["display"]
