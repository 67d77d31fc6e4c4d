"""INS identity <-> FHIR Patient (FR Core 2.1.0 ``fr-core-patient-ins`` / ``fr-core-patient``).

- INS identifier: ``identifier`` with the kind's system and FR Core type (``ins.InsKind``), ``use``
  official; a former matricule (an NIA replaced by a NIR) keeps its identifier with ``use`` old.
- The five traits: ``name`` (use official) family and first given name, the full birth given-name
  list in the ``fr-core-patient-birth-list-given-name`` extension, ``birthDate``, ``gender``, and the
  COG code in ``patient-birthPlace`` / ``fr-core-address-insee-code``.
- Status: FR Core has no code for the RNIV statuses récupérée and qualifiée; it says "qualified" with
  ``identityStatus`` VALI plus an INS identifier. The RNIV status itself is kept in the DUI extension
  ``dui-identity-status`` (PROV, RECUP, VALI, QUAL), and ``fr-core-identity-reliability`` carries the
  FR Core view and the evidence: collection method and date (INSi), validation mode and date
  (identity document). ``fr_core_status`` is the one place where the two views meet.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_profiles import CANONICAL
from ins import FR_CORE_IDENTIFIER_TYPES, InsKind, ins_kind
from ins.status import DOCUMENT_SYSTEM, DOCUMENTS, Evidence, IdentityStatus
from ins.traits import GENDERS, SEXES, InsTraits

FR_CORE_SD = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
RELIABILITY = FR_CORE_SD + "fr-core-identity-reliability"
BIRTH_LIST = FR_CORE_SD + "fr-core-patient-birth-list-given-name"
INSEE_CODE = FR_CORE_SD + "fr-core-address-insee-code"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
STATUS_EXTENSION = f"{CANONICAL}/StructureDefinition/dui-identity-status"
STATUS_SYSTEM = f"{CANONICAL}/CodeSystem/dui-identity-status"
FR_CORE_0445 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
METHOD_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-method-collection"
COMMUNE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
COUNTRY_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R20-Pays/FHIR/TRE-R20-Pays"

# Where each trait lives, for messages (FHIRPath).
TRAIT_PATHS = {
    "birth_family": "Patient.name.where(use='official').family",
    "birth_given_names": f"Patient.name.where(use='official').extension('{BIRTH_LIST}')",
    "first_given": "Patient.name.where(use='official').given[0]",
    "birth_date": "Patient.birthDate",
    "sex": "Patient.gender",
    "birth_place": f"Patient.extension('{BIRTH_PLACE}').value.extension('{INSEE_CODE}').value.code",
    "matricule": "Patient.identifier",
}


@dataclass(frozen=True)
class InsIdentifierAt:
    """An INS identifier of a Patient and where it is (its index in ``identifier``)."""

    index: int
    kind: InsKind
    value: str
    use: str | None

    @property
    def active(self) -> bool:
        return self.use != "old"

    @property
    def path(self) -> str:
        return f"Patient.identifier[{self.index}].value"


def fr_core_status(status: IdentityStatus) -> str:
    """The FR Core ``identityStatus`` code (table 0445) for an RNIV status: VALI when qualified.

    UNCONFIRMED beyond "qualified = VALI + INS identifier": a validated identity without INS would
    break fr-core-1 as VALI, so it is sent as PROV with its validation mode.
    """
    return "VALI" if status is IdentityStatus.QUAL else "PROV"


# -- reading ----------------------------------------------------------------------------------------


def ins_identifiers(patient: dict[str, Any]) -> list[InsIdentifierAt]:
    out = []
    for index, ident in enumerate(patient.get("identifier") or []):
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        type_ = ident.get("type") if isinstance(ident.get("type"), dict) else {}
        codings = [(c.get("system"), c.get("code")) for c in (type_ or {}).get("coding", []) if isinstance(c, dict)]
        kind = ins_kind(ident.get("system"), codings)
        if kind is not None:
            out.append(InsIdentifierAt(index, kind, ident["value"], ident.get("use")))
    return out


def active_ins(patient: dict[str, Any]) -> InsIdentifierAt | None:
    return next((i for i in ins_identifiers(patient) if i.active), None)


def official_name(patient: dict[str, Any]) -> dict[str, Any] | None:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    return next((n for n in names if n.get("use") == "official"), None)


def traits_of(patient: dict[str, Any]) -> InsTraits | None:
    """The INS traits the Patient states, None when it has no official name."""
    name = official_name(patient)
    if name is None:
        return None
    given = [g for g in name.get("given") or [] if isinstance(g, str)]
    listed = _extension_value(name, BIRTH_LIST, "valueString")
    given_names = tuple(listed.split()) if isinstance(listed, str) and listed.strip() else tuple(given)
    family, born = name.get("family"), patient.get("birthDate")
    return InsTraits(
        birth_family=family if isinstance(family, str) else "",
        birth_given_names=given_names,
        birth_date=born if isinstance(born, str) else "",
        sex=GENDERS.get(patient.get("gender") or "", "?"),
        birth_place=birth_place_of(patient),
    )


def birth_place_of(patient: dict[str, Any]) -> str | None:
    place = _extension_value(patient, BIRTH_PLACE, "valueAddress")
    if not isinstance(place, dict):
        return None
    coding = _extension_value(place, INSEE_CODE, "valueCoding")
    code = coding.get("code") if isinstance(coding, dict) else None
    return code if isinstance(code, str) else None


def reliability_of(patient: dict[str, Any]) -> dict[str, Any]:
    """The sub-extensions of the first ``fr-core-identity-reliability`` as {url: value}."""
    for ext in patient.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == RELIABILITY:
            out = {}
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and isinstance(sub.get("url"), str):
                    value = next((v for k, v in sub.items() if k.startswith("value")), None)
                    out[sub["url"]] = value
            return out
    return {}


def evidence_of(patient: dict[str, Any]) -> Evidence:
    """The evidence the Patient records: a document check and an INSi result."""
    rel = reliability_of(patient)
    mode = rel.get("validationMode")
    document = mode.get("code") if isinstance(mode, dict) and isinstance(mode.get("code"), str) else None
    method = rel.get("methodCollection")
    insi = isinstance(method, dict) and method.get("code") == "INSI"
    return Evidence(document=document, document_date=_date(rel.get("validationDate")),
                    insi_date=_date(rel.get("dateCollection")) if insi else None)


def stated_status(patient: dict[str, Any]) -> IdentityStatus | None:
    """The RNIV status of the DUI extension, None when absent or not one of the four codes."""
    coding = _extension_value(patient, STATUS_EXTENSION, "valueCoding")
    code = coding.get("code") if isinstance(coding, dict) else None
    return next((s for s in IdentityStatus if s.code == code), None)


def status_of(patient: dict[str, Any]) -> IdentityStatus:
    """The RNIV status: the DUI extension when present, else what the FR Core view implies
    (VALI + INS = qualified; an INS alone = récupérée; a validation mode alone = validée)."""
    stated = stated_status(patient)
    if stated is not None:
        return stated
    status = reliability_of(patient).get("identityStatus")
    vali = isinstance(status, dict) and status.get("code") == "VALI"
    document = evidence_of(patient).document
    high_trust = document is not None and DOCUMENTS.get(document, ("", False))[1]
    return IdentityStatus.of(vali or high_trust, active_ins(patient) is not None)


# -- writing ----------------------------------------------------------------------------------------


def with_identity(patient: dict[str, Any], status: IdentityStatus, evidence: Evidence) -> dict[str, Any]:
    """A copy of ``patient`` whose status extensions say ``status`` on ``evidence``."""
    out = copy.deepcopy(patient)
    subs: list[dict[str, Any]] = [{"url": "identityStatus", "valueCoding": {
        "system": FR_CORE_0445, "code": fr_core_status(status),
        "display": "Identité validée" if fr_core_status(status) == "VALI" else "Identité provisoire"}}]
    if evidence.insi_date is not None:
        subs.append({"url": "methodCollection", "valueCoding": {"system": METHOD_SYSTEM, "code": "INSI",
                                                                "display": "Téléservice INSI"}})
        subs.append({"url": "dateCollection", "valueDate": evidence.insi_date.isoformat()})
    if evidence.document is not None:
        if evidence.document_date is not None:
            subs.append({"url": "validationDate", "valueDate": evidence.document_date.isoformat()})
        subs.append({"url": "validationMode", "valueCoding": {
            "system": DOCUMENT_SYSTEM, "code": evidence.document,
            "display": DOCUMENTS.get(evidence.document, ("", False))[0]}})
    kept = [e for e in out.get("extension") or [] if not (isinstance(e, dict)
                                                           and e.get("url") in (RELIABILITY, STATUS_EXTENSION))]
    out["extension"] = [
        {"url": STATUS_EXTENSION, "valueCoding": {"system": STATUS_SYSTEM, "code": status.code,
                                                  "display": status.label}},
        {"url": RELIABILITY, "extension": subs},
        *kept,
    ]
    return out


def with_traits(patient: dict[str, Any], traits: InsTraits) -> dict[str, Any]:
    """A copy of ``patient`` stating ``traits`` (the official name, birth date, gender, birth place)."""
    out = copy.deepcopy(patient)
    names = [n for n in out.get("name") or [] if not (isinstance(n, dict) and n.get("use") == "official")]
    previous = official_name(patient) or {}
    official: dict[str, Any] = {k: v for k, v in previous.items() if k not in ("family", "given", "extension")}
    others = [e for e in previous.get("extension") or [] if isinstance(e, dict) and e.get("url") != BIRTH_LIST]
    official.update({
        "extension": [{"url": BIRTH_LIST, "valueString": " ".join(traits.birth_given_names)}, *others],
        "use": "official", "family": traits.birth_family, "given": [traits.first_given],
    })
    out["name"] = [official, *names]
    out["birthDate"] = traits.birth_date
    out["gender"] = SEXES.get(traits.sex, "unknown")
    if traits.birth_place:
        address: dict[str, Any] = {"extension": [{"url": INSEE_CODE, "valueCoding": {
            "system": COUNTRY_SYSTEM if traits.birth_place.startswith("99") else COMMUNE_SYSTEM,
            "code": traits.birth_place}}]}
        old = _extension_value(patient, BIRTH_PLACE, "valueAddress")
        if isinstance(old, dict):
            address.update({k: v for k, v in old.items() if k != "extension"})
        kept = [e for e in out.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == BIRTH_PLACE)]
        out["extension"] = [*kept, {"url": BIRTH_PLACE, "valueAddress": address}]
    return out


def with_ins(patient: dict[str, Any], kind: InsKind, value: str) -> dict[str, Any]:
    """A copy of ``patient`` whose active INS is ``kind``/``value``; a different active one becomes ``old``."""
    out = copy.deepcopy(patient)
    identifiers = list(out.get("identifier") or [])
    current = {(i.kind, i.value): i for i in ins_identifiers(patient)}
    for found in current.values():
        if found.active and (found.kind, found.value) != (kind, value):
            identifiers[found.index] = {**identifiers[found.index], "use": "old"}
    existing = current.get((kind, value))
    new = {"use": "official", "type": {"coding": [{"system": FR_CORE_IDENTIFIER_TYPES, "code": kind.type_code}]},
           "system": kind.system, "value": value}
    if existing is not None:
        identifiers[existing.index] = {**identifiers[existing.index], **new}
    else:
        identifiers.insert(0, new)
    out["identifier"] = identifiers
    return out


def without_active_ins(patient: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``patient`` without its active INS identifiers (former ones kept)."""
    out = copy.deepcopy(patient)
    drop = {i.index for i in ins_identifiers(patient) if i.active}
    out["identifier"] = [ident for n, ident in enumerate(out.get("identifier") or []) if n not in drop]
    if not out["identifier"]:
        del out["identifier"]
    return out


def _extension_value(element: dict[str, Any], url: str, key: str) -> Any:
    for ext in element.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext.get(key)
    return None


def _date(value: Any) -> date | None:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None
