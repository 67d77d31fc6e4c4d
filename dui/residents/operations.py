"""Identity use cases: INS retrieval and verification through INSi, identity-document checks, withdrawals.

Each takes the FHIR context (repository, actor, clock) and, when it calls INSi, an ``InsiClient``;
each locks the resident's row, writes the new Patient version and a Provenance in the caller's
transaction, and raises a ``DuiError`` that says what to do next when it cannot proceed. A resident is
admitted with a provisional identity by a plain FHIR create (``dui.residents.rules`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from dui.errors import Conflict, Gone, Invalid, NotFound, Unavailable, Unprocessable
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import Current, ResourceVersion
from dui.fhir.search.plan import parse_search
from dui.fhir.sql import INS_RECORDED
from dui.metrics.counters import CountedInsi
from dui.residents import mapping, provenance, rules
from ins import InsKind, InsTraits
from ins.errors import InsiError, InsiFault, InsiUnavailable, TraitError, TransitionError
from ins.insi.client import InsiClient, InsiIdentity, InsiResult, TraitsQuery, VitaleQuery
from ins.status import Event, IdentityStatus, apply
from ins.traits import check_traits, differences

INSI_MESSAGES = {
    "01": "INSi found no identity for these traits: check them against an identity document, try another "
          "birth given name, or search with the carte Vitale",
    "02": "INSi found several identities for these traits: add the birth place (COG) and try again",
}


# INSi query fields that are not Patient traits -> the operation parameter they come from
QUERY_FIELDS = {"given": mapping.TRAIT_PATHS["birth_given_names"], "nir_individu": "matriculeIndividu",
                "nir_od": "matriculeOD", "birth_rank": "birthRank"}


@dataclass(frozen=True)
class IdentityOutcome:
    """What an identity use case did: the INSi code when INSi was called, the status now, the Patient."""

    outcome: str  # "00", "01", "02", "confirmed", "matricule-changed", "withdrawn", "recorded", "no-ins"
    status: IdentityStatus
    patient: ResourceVersion
    message: str = ""


def fetch_ins(ctx: FhirContext, insi: InsiClient, pid: str, vitale: VitaleQuery | None = None) -> IdentityOutcome:
    """Retrieve the resident's INS through INSi (by traits, or by carte Vitale) and take its traits."""
    current, patient = load_patient(ctx, pid)
    traits = _complete_traits(ctx, patient)
    result = _call(insi, traits, vitale, mapping.status_of(patient))
    if result.code != "00" or result.identity is None:
        return IdentityOutcome(result.code, mapping.status_of(patient), _version(ctx, pid),
                               INSI_MESSAGES.get(result.code, f"INSi answered {result.code}"))
    identity = result.identity
    new_traits = _traits_from(identity)
    status = mapping.status_of(patient)
    if status.document:
        clash = [f for f in differences(traits, new_traits) if f in ("birth_family", "birth_date", "sex")]
        if clash:
            raise Conflict(f"INSi returns an identity whose {', '.join(clash)} differ from the traits checked on "
                           "the identity document: check the document again before retrieving the INS",
                           code="business-rule")
    kind = _kind(identity.oid)
    _refuse_duplicate(ctx, pid, kind, identity.matricule)
    previous = mapping.active_ins(patient)
    change = apply(status, Event.INSI_CONFIRMED, ctx.clock())
    evidence = replace(mapping.evidence_of(patient), insi_date=today(ctx))
    updated = mapping.with_identity(mapping.with_ins(mapping.with_traits(patient, new_traits), kind,
                                                     identity.matricule), change.after, evidence)
    version = save_patient(ctx, current, updated)
    changed = previous is not None and previous.value != identity.matricule
    provenance.record(ctx, Event.INSI_CONFIRMED.value, [version], change=change,
                      reason="matricule changed (NIA -> NIR)" if changed else None)
    return IdentityOutcome("00", change.after, version, "INS retrieved through INSi")


def check_document(ctx: FhirContext, pid: str, document: str, checked_on: date | None = None) -> IdentityOutcome:
    """Record that the identity was checked against a high-trust identity document."""
    current, patient = load_patient(ctx, pid)
    _complete_traits(ctx, patient)
    status = mapping.status_of(patient)
    try:
        change = apply(status, Event.DOCUMENT_CHECKED, ctx.clock(), document=document)
    except TransitionError as exc:
        raise Unprocessable(str(exc), code="business-rule", expression="documentType") from None
    when = checked_on or today(ctx)
    if when > today(ctx):
        raise Invalid("the date of the identity document check is in the future", expression="date")
    evidence = replace(mapping.evidence_of(patient), document=document, document_date=when)
    version = save_patient(ctx, current, mapping.with_identity(patient, change.after, evidence))
    provenance.record(ctx, Event.DOCUMENT_CHECKED.value, [version], change=change)
    return IdentityOutcome("recorded", change.after, version, f"the identity is now {change.after.label.lower()}")


def withdraw(ctx: FhirContext, pid: str, evidence_kind: str, reason: str) -> IdentityOutcome:
    """Withdraw a piece of evidence: ``insi`` (the INS is removed) or ``document`` (the check no longer holds)."""
    events = {"insi": Event.INSI_WITHDRAWN, "document": Event.DOCUMENT_WITHDRAWN}
    if evidence_kind not in events:
        raise Invalid("evidence must be 'insi' or 'document'", expression="evidence")
    current, patient = load_patient(ctx, pid)
    try:
        change = apply(mapping.status_of(patient), events[evidence_kind], ctx.clock(), reason=reason)
    except TransitionError as exc:
        raise Unprocessable(str(exc), code="business-rule", expression="evidence") from None
    evidence = mapping.evidence_of(patient)
    if evidence_kind == "insi":
        evidence, patient = replace(evidence, insi_date=None), mapping.without_active_ins(patient)
    else:
        evidence = replace(evidence, document=None, document_date=None)
    version = save_patient(ctx, current, mapping.with_identity(patient, change.after, evidence))
    provenance.record(ctx, change.event.value, [version], change=change, reason=reason)
    return IdentityOutcome("withdrawn", change.after, version, f"the identity is now {change.after.label.lower()}")


def verify(ctx: FhirContext, insi: InsiClient, pid: str) -> IdentityOutcome:
    """Check the stored INS against INSi again: confirmed, matricule changed (NIA -> NIR), or withdrawn."""
    current, patient = load_patient(ctx, pid)
    stored = mapping.active_ins(patient)
    status = mapping.status_of(patient)
    if stored is None or not status.insi:
        return IdentityOutcome("no-ins", status, _version(ctx, pid), "no INS to verify")
    traits = _complete_traits(ctx, patient)
    result = _call(insi, traits, None, status)
    identity = result.identity
    if result.code == "00" and identity is not None and identity.matricule == stored.value:
        evidence = replace(mapping.evidence_of(patient), insi_date=today(ctx))
        version = save_patient(ctx, current, mapping.with_identity(patient, status, evidence))
        provenance.record(ctx, provenance.VERIFIED, [version])
        return IdentityOutcome("confirmed", status, version, "INSi confirms the INS")
    if result.code == "00" and identity is not None and (
            stored.value in {m for m, _ in identity.previous} or stored.kind is InsKind.NIA):
        kind = _kind(identity.oid)
        _refuse_duplicate(ctx, pid, kind, identity.matricule)
        evidence = replace(mapping.evidence_of(patient), insi_date=today(ctx))
        updated = mapping.with_identity(mapping.with_ins(patient, kind, identity.matricule), status, evidence)
        version = save_patient(ctx, current, updated)
        provenance.record(ctx, provenance.MATRICULE_CHANGED, [version], reason="INSi returns a new matricule; "
                          "the former one is kept with use = old")
        return IdentityOutcome("matricule-changed", status, version, "the matricule INS changed; the former one "
                               "is kept with use = old")
    reason = {"01": "INSi no longer finds an identity for the stored traits",
              "02": "INSi finds several identities for the stored traits"}.get(
        result.code, "INSi returns another matricule for the stored traits")
    change = apply(status, Event.INSI_WITHDRAWN, ctx.clock(), reason=reason)
    evidence = replace(mapping.evidence_of(patient), insi_date=None)
    updated = mapping.with_identity(mapping.without_active_ins(patient), change.after, evidence)
    version = save_patient(ctx, current, updated)
    provenance.record(ctx, change.event.value, [version], change=change, reason=reason)
    return IdentityOutcome("withdrawn", change.after, version, reason)


# -- helpers ----------------------------------------------------------------------------------------


def load_patient(ctx: FhirContext, pid: str, *, lock: bool = True) -> tuple[Current, dict[str, Any]]:
    """The resident's row (locked) and current body; 404 / 410 otherwise."""
    current = ctx.internal.current("Patient", pid, for_update=lock)
    if current is None:
        raise NotFound(f"Patient/{pid} does not exist")
    if current.deleted:
        raise Gone(f"Patient/{pid} was deleted")
    stored = ctx.internal.read("Patient", pid)
    assert stored is not None and stored.body is not None
    return current, stored.resource()



def save_patient(ctx: FhirContext, current: Current, patient: dict[str, Any], method: str = "PUT") -> ResourceVersion:
    """Store a Patient written by a use case: base structure and identity consistency checked."""
    ctx.validator.check(patient)
    issues = rules.identity_issues(patient, today(ctx))
    if issues:
        raise Unprocessable("The identity would break the INS rules", issues=issues, code="business-rule")
    return ctx.internal.update(current, "Patient", current.id, patient, method=method)



def _version(ctx: FhirContext, pid: str) -> ResourceVersion:
    found = ctx.internal.read("Patient", pid)
    assert found is not None
    return found


def today(ctx: FhirContext) -> date:
    return ctx.clock().astimezone(ctx.tz).date()


def _complete_traits(ctx: FhirContext, patient: dict[str, Any]) -> InsTraits:
    traits = mapping.traits_of(patient)
    if traits is None:
        raise Unprocessable("The resident has no official name (use = official): record the birth name first",
                            code="business-rule", expression="Patient.name")
    problems = [p for p in check_traits(traits, today(ctx)) if p.severity == "error"]
    if problems:
        raise Unprocessable("The identity traits are incomplete or break the INS rules", code="business-rule",
                            issues=[rules.trait_issue(p) for p in problems])
    return traits


def _call(insi: InsiClient, traits: InsTraits, vitale: VitaleQuery | None, status: IdentityStatus) -> InsiResult:
    insi = CountedInsi(insi)  # each search counted by outcome (dui_external_calls_total{system="insi"})
    try:
        if vitale is not None:
            return insi.search_by_vitale(vitale)
        if traits.sex not in ("M", "F"):
            raise Unprocessable("INSi searches by traits need the sex (male or female)", code="business-rule",
                                expression="Patient.gender")
        result = InsiResult("01", None)
        for given in traits.birth_given_names:  # one given name per call, the first then the others
            result = insi.search_by_traits(TraitsQuery(traits.birth_family, given, traits.sex,
                                                       date.fromisoformat(traits.birth_date), traits.birth_place))
            if result.code != "01":
                break
        return result
    except TraitError as exc:
        raise Unprocessable(str(exc), code="business-rule",
                            expression=QUERY_FIELDS.get(exc.field, mapping.TRAIT_PATHS.get(exc.field))) from None
    except InsiUnavailable as exc:
        raise Unavailable(f"INSi is unreachable ({exc}); the identity stays {status.label.lower()}: retry later",
                          headers={"Retry-After": "60"}) from None
    except InsiFault as exc:
        if exc.code.lower().endswith("sender"):
            raise Unprocessable(f"INSi refused the request: {exc.reason or exc}", code="business-rule") from None
        raise Unavailable(f"INSi failed ({exc.reason or exc}); the identity stays {status.label.lower()}: "
                          "retry later", headers={"Retry-After": "60"}) from None
    except InsiError as exc:
        raise Unavailable(f"INSi cannot be used: {exc}", code="exception") from None


def _traits_from(identity: InsiIdentity) -> InsTraits:
    return InsTraits(identity.birth_family, identity.given_names, identity.birth_date.isoformat(), identity.sex,
                     identity.birth_place)


def _kind(oid: str) -> InsKind:
    for kind in InsKind:
        if kind.system == f"urn:oid:{oid}":
            return kind
    raise Unavailable(f"INSi returned an unknown INS OID ({oid[:40]})", code="exception")


def _refuse_duplicate(ctx: FhirContext, pid: str, kind: InsKind, matricule: str) -> None:
    """409 naming the other record when another resident already carries this INS (a duplicate to merge)."""
    plan = parse_search("Patient", [("identifier", f"{kind.system}|{matricule}")], ctx.registry,
                        ctx.settings.limits, strict=True)
    plan.count = 2
    for other in ctx.internal.fetch(ctx.internal.search(plan, total=None).rids):
        if other.id == pid:
            continue
        if ctx.repo.current("Patient", other.id) is None:  # a resident the actor may not see: not named
            raise Conflict(INS_RECORDED, code="duplicate", patients=(other.id,))
        raise Conflict(f"Patient/{other.id} already carries this INS: the two records are probably the same "
                       f"resident; merge them (Patient/$merge) into one", code="duplicate", patients=(other.id,))

