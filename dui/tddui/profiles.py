"""The profiles of TDDUI 2.2.0 (``https://interop.esante.gouv.fr/ig/fhir/tddui``), and which one a stored
resource is sent under.

Each profile has its canonical URL (``.../StructureDefinition/<id>``), its name (the FSH ``Profile:`` name,
which producers put in an entry's ``request.url``, as the IG's own Bundle example does) and the resource
type it constrains. The ids and names are those of the IG's FSH sources and examples (DOMAIN.md §2.3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dui.residents import mapping

CANONICAL = "https://interop.esante.gouv.fr/ig/fhir/tddui"
IG_PACKAGE = "ans.fhir.fr.tddui"
IG_VERSION = "2.2.0"
_SD = f"{CANONICAL}/StructureDefinition/"

# Business identifier systems that tell profiles of one resource type apart.
EVENT_SYSTEM = "https://identifiant-medicosocial-evenement.esante.gouv.fr"
OBJECTIVE_SYSTEM = "https://identifiant-medicosocial-objectif.esante.gouv.fr"
TRANSPORT_PROFESSIONAL_SYSTEM = "https://identifiant-medicosocial-transportprofessionnel.esante.gouv.fr"
TRANSPORT_RESIDENT_SYSTEM = "https://identifiant-medicosocial-transportusager.esante.gouv.fr"
TASK_INPUT = f"{CANONICAL}/CodeSystem/tddui-task-input-"


@dataclass(frozen=True)
class Profile:
    name: str  # as in request.url: "TDDUIPatientINS"
    id: str  # "tddui-patient-ins"
    rtype: str  # "Patient"

    @property
    def url(self) -> str:
        return _SD + self.id


BUNDLE = Profile("TDDUIBundle", "tddui-bundle", "Bundle")
PATIENT = Profile("TDDUIPatient", "tddui-patient", "Patient")
PATIENT_INS = Profile("TDDUIPatientINS", "tddui-patient-ins", "Patient")
ORGANIZATION = Profile("TDDUIOrganization", "tddui-organization", "Organization")
STAY = Profile("TDDUIEncounterSejour", "tddui-encounter-sejour", "Encounter")
EVENT = Profile("TDDUIEncounterEvenement", "tddui-encounter-evenement", "Encounter")
PRACTITIONER = Profile("TDDUIPractitioner", "tddui-practitioner", "Practitioner")
PRACTITIONER_ROLE = Profile("TDDUIPractitionerRole", "tddui-practitioner-role", "PractitionerRole")
RELATED_PERSON = Profile("TDDUIRelatedPersonContact", "tddui-related-person-contact", "RelatedPerson")
DOCUMENT = Profile("TDDUIDocumentReference", "tddui-document-reference", "DocumentReference")
EVALUATION = Profile("TDDUIQuestionnaireResponse", "tddui-questionnaire-response", "QuestionnaireResponse")
CARE_PLAN = Profile("TDDUICarePlanProjetPersonnalise", "tddui-careplan-projet-personnalise", "CarePlan")
CONSENT = Profile("TDDUIConsentAccord", "tddui-consent-accord", "Consent")
GOAL_EXPECTATION = Profile("TDDUIGoalAttente", "tddui-goal-attente", "Goal")
GOAL_OBJECTIVE = Profile("TDDUIGoalObjectif", "tddui-goal-objectif", "Goal")
NEED = Profile("TDDUIServiceRequestBesoin", "tddui-service-request-besoin", "ServiceRequest")
TASK_ACTION = Profile("TDDUITaskAction", "tddui-task-action", "Task")
TASK_REVIEW = Profile("TDDUITaskBilan", "tddui-task-bilan", "Task")
TASK_MEANS = Profile("TDDUITaskMoyenRessource", "tddui-task-moyen-ressource", "Task")
TASK_SERVICE = Profile("TDDUITaskPrestation", "tddui-task-prestation", "Task")
TASK_TRANSPORT = Profile("TDDUITaskTransport", "tddui-task-transport", "Task")
TRANSPORT_PROFESSIONAL = Profile("TDDUITaskTransportProfessionnel", "tddui-task-transport-professionnel", "Task")
TRANSPORT_RESIDENT = Profile("TDDUITaskTransportUsager", "tddui-task-transport-usager", "Task")

PROFILES: tuple[Profile, ...] = (
    BUNDLE, PATIENT, PATIENT_INS, ORGANIZATION, STAY, EVENT, PRACTITIONER, PRACTITIONER_ROLE, RELATED_PERSON,
    DOCUMENT, EVALUATION, CARE_PLAN, CONSENT, GOAL_EXPECTATION, GOAL_OBJECTIVE, NEED, TASK_ACTION, TASK_REVIEW,
    TASK_MEANS, TASK_SERVICE, TASK_TRANSPORT, TRANSPORT_PROFESSIONAL, TRANSPORT_RESIDENT,
)
# Some FSH versions of the IG name the resident's transport profile this way; the Bundle example does not.
_ALIASES = {"TDDUITransportTaskUsager": TRANSPORT_RESIDENT}
_BY_NAME = {p.name: p for p in PROFILES if p is not BUNDLE} | _ALIASES
_BY_URL = {p.url: p for p in PROFILES}


def named(name: str) -> Profile | None:
    """The entry profile a ``request.url`` names (``TDDUIPatientINS``), None when it names none."""
    return _BY_NAME.get(name)


def by_url(url: str) -> Profile | None:
    """The profile of a canonical URL, with or without ``|version``."""
    return _BY_URL.get(url.split("|", 1)[0])


def declared(resource: dict[str, Any]) -> Profile | None:
    """The first TDDUI profile of its type that ``meta.profile`` names."""
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    for url in (meta or {}).get("profile") or []:
        found = by_url(url) if isinstance(url, str) else None
        if found is not None and found.rtype == resource.get("resourceType"):
            return found
    return None


def profile_for(resource: dict[str, Any]) -> Profile | None:
    """The TDDUI profile a resource is sent under; None for a type TDDUI does not carry.

    A Patient carrying an INS is ``tddui-patient-ins``, one without ``tddui-patient`` (give it the Patient
    as it may leave the system: ``dui.residents.sharing.shareable_patient``). For the other types a
    declared TDDUI profile wins, then the business identifier's system or the content decides.
    """
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return PATIENT_INS if mapping.ins_identifiers(resource) else PATIENT
    found = declared(resource)
    if found is not None:
        return found
    systems = {i.get("system") for i in resource.get("identifier") or [] if isinstance(i, dict)}
    if rtype == "Encounter":
        return EVENT if EVENT_SYSTEM in systems or resource.get("partOf") else STAY
    if rtype == "Goal":
        expressed = str((resource.get("expressedBy") or {}).get("reference", ""))
        by_person = expressed.split("/")[-2:-1] in (["Patient"], ["RelatedPerson"])
        return GOAL_EXPECTATION if by_person and OBJECTIVE_SYSTEM not in systems else GOAL_OBJECTIVE
    if rtype == "Task":
        return _task_profile(resource, systems)
    return _SINGLE.get(str(rtype))


_SINGLE = {p.rtype: p for p in (ORGANIZATION, PRACTITIONER, PRACTITIONER_ROLE, RELATED_PERSON, DOCUMENT,
                                EVALUATION, CARE_PLAN, CONSENT, NEED)}
_TASK_INPUTS = {"action": TASK_ACTION, "bilan": TASK_REVIEW, "moyen-ressource": TASK_MEANS,
                "prestation": TASK_SERVICE, "transport": TASK_TRANSPORT}


def _task_profile(task: dict[str, Any], systems: set[Any]) -> Profile:
    if TRANSPORT_PROFESSIONAL_SYSTEM in systems:
        return TRANSPORT_PROFESSIONAL
    if TRANSPORT_RESIDENT_SYSTEM in systems:
        return TRANSPORT_RESIDENT
    for system in _input_systems(task.get("input") or []):
        kind = system.removeprefix(TASK_INPUT) if system.startswith(TASK_INPUT) else None
        if kind in _TASK_INPUTS:
            return _TASK_INPUTS[kind]
    return TASK_ACTION


def _input_systems(inputs: Iterable[Any]) -> Iterable[str]:
    for item in inputs:
        type_ = item.get("type") if isinstance(item, dict) else None
        for coding in (type_ or {}).get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("system"), str):
                yield coding["system"]
