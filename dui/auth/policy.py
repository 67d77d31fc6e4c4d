"""What each actor may do with each resource type: pure functions, no Flask, no database.

The default follows the rules of the shared professional secret (Code de la santé publique L1110-4 and,
for the médico-social sector, L1110-12): each professional sees what their mission needs, and medical
data stays with health professionals. Resource types fall into four categories:

- ``identity``: who the resident is, their stays, contacts, cover and consents, and the directory
  (organizations, professionals): every role reads it; the administrative staff keep it;
- ``care``: daily care and support (vital signs, care plans, goals, tasks, alerts, evaluations, allergies,
  which meal service needs): the care team reads and writes it;
- ``medical``: diagnoses, prescriptions, medication, results, documents: health professionals (physician,
  nurse, physiotherapist) read it; physicians write it, nurses record administrations;
- ``trace``: Provenance and AuditEvent, records of the past: read by those who read identity, written
  only by the server.

Types not listed are ``medical`` (least privilege). Conformance resources (``CONFORMANCE_TYPES``: profiles, value
sets, search parameters... the description of the API, never a resident's data) are read and searched by every
role on top of their category's rights. Permissions are SMART letters: c(reate), r(ead),
u(pdate), d(elete), s(earch). An establishment can override the defaults per role and category
(``Policy.with_overrides``). API clients are bound by the SMART scopes of their token; a staff token's
scopes, when it has some, narrow the role's rights further. Break-the-glass gives a health professional
read access to medical data for one request, with a mandatory reason that the audit trail keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dui.auth.actor import Actor
from dui.auth.roles import (
    ADMINISTRATEUR,
    ADMINISTRATIF,
    AES_AMP,
    AIDE_SOIGNANT,
    DIRECTION,
    INFIRMIER,
    KINESITHERAPEUTE,
    MEDECIN,
    PSYCHOLOGUE,
    ROLES,
)

IDENTITY, CARE, MEDICAL, TRACE = "identity", "care", "medical", "trace"
CATEGORIES = (IDENTITY, CARE, MEDICAL, TRACE)
PERMISSIONS = "cruds"

TYPE_CATEGORY: dict[str, str] = {
    **dict.fromkeys(("Patient", "RelatedPerson", "Encounter", "EpisodeOfCare", "Coverage", "Consent", "Appointment",
                     "Schedule", "Slot", "Location", "Organization", "Practitioner", "PractitionerRole",
                     "HealthcareService", "Person", "Group", "Endpoint"), IDENTITY),
    **dict.fromkeys(("Observation", "CarePlan", "CareTeam", "Goal", "Task", "Flag", "NutritionOrder",
                     "QuestionnaireResponse", "Questionnaire", "Communication", "CommunicationRequest",
                     "RiskAssessment", "AllergyIntolerance", "DeviceUseStatement", "Device", "Media"), CARE),
    **dict.fromkeys(("Provenance", "AuditEvent"), TRACE),
}

# Read and searched by every role, whatever the category gives (writes stay the category's): dui.profiles.catalogue
CONFORMANCE_TYPES = ("StructureDefinition", "SearchParameter", "OperationDefinition", "ImplementationGuide",
                     "CodeSystem", "ValueSet", "ConceptMap", "CompartmentDefinition", "NamingSystem")

READ = "rs"
KEEP = "crus"
ALL = "cruds"
DEFAULT_RULES: dict[str, dict[str, str]] = {
    MEDECIN: {IDENTITY: KEEP, CARE: ALL, MEDICAL: ALL, TRACE: READ},
    INFIRMIER: {IDENTITY: "rsu", CARE: ALL, MEDICAL: READ, TRACE: READ},
    AIDE_SOIGNANT: {IDENTITY: READ, CARE: KEEP, TRACE: READ},
    AES_AMP: {IDENTITY: READ, CARE: KEEP, TRACE: READ},
    PSYCHOLOGUE: {IDENTITY: READ, CARE: KEEP, TRACE: READ},
    KINESITHERAPEUTE: {IDENTITY: READ, CARE: KEEP, MEDICAL: READ, TRACE: READ},
    ADMINISTRATIF: {IDENTITY: ALL, TRACE: READ},
    DIRECTION: {IDENTITY: READ, TRACE: READ},
    ADMINISTRATEUR: {IDENTITY: READ, TRACE: READ},
}
# Exceptions by resource type, on top of the category: nurses record the administrations they give.
TYPE_RULES: dict[str, dict[str, str]] = {
    INFIRMIER: {"MedicationAdministration": KEEP},
}
HEALTH_PROFESSIONALS = frozenset({MEDECIN, INFIRMIER, KINESITHERAPEUTE})
# Types only API clients registered for an establishment use: a Subscription tells another system (a nurse-call
# system) of changes; it is its owner's, and no role of the staff has any right on it (dui.subscriptions).
CLIENT_TYPES = frozenset({"Subscription"})
UNRESTRICTED_KINDS = frozenset({"cli", "system", "anonymous"})  # anonymous exists only where allowed (dev)


def category(resource_type: str) -> str:
    return TYPE_CATEGORY.get(resource_type, MEDICAL)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    break_glass: bool = False

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Policy:
    """Rules per role and category, the defaults with an establishment's overrides (by FINESS)."""

    rules: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_RULES)
    type_rules: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: TYPE_RULES)
    by_establishment: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    @classmethod
    def with_overrides(cls, config: Mapping[str, Any]) -> Policy:
        """``{"default": {role: {category: perms}}, "<FINESS>": {role: {category: perms}}}``; checked."""
        rules = {role: dict(cats) for role, cats in DEFAULT_RULES.items()}
        local: dict[str, dict[str, dict[str, str]]] = {}
        for key, table in config.items():
            checked = _checked(table, key)
            if key == "default":
                for role, cats in checked.items():
                    rules.setdefault(role, {}).update(cats)
            else:
                if not (len(key) == 9 and key.isalnum()):
                    raise ValueError(f"policy: {key!r} is neither 'default' nor a FINESS number")
                local[key] = checked
        return cls(rules, TYPE_RULES, local)

    def permissions(self, role: str, resource_type: str, establishment: str | None) -> str:
        """The most specific rule wins: the establishment's for the type, then the default for the type, then
        the category's (the establishment's, else the default) with the type exceptions."""
        local = self.by_establishment.get(establishment or "", {}).get(role, {})
        base = self.rules.get(role, {})
        for table in (local, base):
            if resource_type in table:
                return table[resource_type]
        cat = category(resource_type)
        granted = _union(local.get(cat, base.get(cat, "")), self.type_rules.get(role, {}).get(resource_type, ""))
        return _union(granted, READ) if resource_type in CONFORMANCE_TYPES else granted


def may(actor: Actor, permission: str, resource_type: str, policy: Policy, *,
        break_glass: str | None = None) -> Decision:
    """Whether ``actor`` may ``permission`` (a letter of cruds) on ``resource_type``."""
    if actor.kind in UNRESTRICTED_KINDS:
        return Decision(True, f"{actor.kind} actor")
    if actor.kind == "client":
        if resource_type in CLIENT_TYPES and actor.establishment is None:
            return Decision(False, f"a {resource_type} belongs to an establishment: this client is registered "
                            "without one (dui clients create --establishment FINESS)")
        if actor.scopes.allows(resource_type, permission, "system"):
            return Decision(True, "scope")
        return Decision(False, f"the token's scopes do not grant '{permission}' on {resource_type}")
    if actor.kind == "device":
        return Decision(False, "a device client may only post sensor events (POST /api/devices/events)")
    if actor.kind != "staff":
        return Decision(False, f"unknown kind of actor {actor.kind!r}")
    if resource_type in CLIENT_TYPES:
        return Decision(False, f"{resource_type} is for API clients of an establishment, not for the staff")
    granted = any(permission in policy.permissions(role, resource_type, actor.establishment)
                  for role in actor.roles)
    if granted and actor.scopes and not actor.scopes.allows(resource_type, permission):
        return Decision(False, f"the token's scopes do not grant '{permission}' on {resource_type}")
    if granted:
        return Decision(True, "role")
    if (break_glass and break_glass.strip() and permission in READ and category(resource_type) == MEDICAL
            and actor.roles & HEALTH_PROFESSIONALS):
        return Decision(True, "break-the-glass", break_glass=True)
    roles = ", ".join(sorted(actor.roles)) or "no role"
    return Decision(False, f"{roles} may not '{permission}' {resource_type} ({category(resource_type)} data)")


def readable_types(actor: Actor, resource_types: list[str], policy: Policy,
                   break_glass: str | None = None, permission: str = "r") -> list[str] | None:
    """The types ``actor`` may read (or ``permission``) among ``resource_types`` (None: all of them, unrestricted
    actor)."""
    if actor.kind in UNRESTRICTED_KINDS:
        return None
    return [t for t in resource_types if may(actor, permission, t, policy, break_glass=break_glass)]


def _union(a: str, b: str) -> str:
    return "".join(p for p in PERMISSIONS if p in a or p in b)


def _checked(table: Any, where: str) -> dict[str, dict[str, str]]:
    if not isinstance(table, Mapping):
        raise ValueError(f"policy {where}: expected an object of roles")
    out: dict[str, dict[str, str]] = {}
    for role, cats in table.items():
        if role not in ROLES:
            raise ValueError(f"policy {where}: unknown role {role!r}")
        if not isinstance(cats, Mapping):
            raise ValueError(f"policy {where}.{role}: expected an object of categories")
        for name, perms in cats.items():
            if name not in CATEGORIES and not name[:1].isupper():
                raise ValueError(f"policy {where}.{role}: {name!r} is neither a category nor a resource type")
            if not isinstance(perms, str) or set(perms) - set(PERMISSIONS):
                raise ValueError(f"policy {where}.{role}.{name}: permissions are letters of 'cruds'")
        out[role] = {name: str(perms) for name, perms in cats.items()}
    return out
