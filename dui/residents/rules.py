"""What every write of a Patient must respect, whatever the path (create, update, patch, bundles).

- An INS identifier holds a well-formed matricule with its right key, and a Patient has one active
  INS at most (a former one is kept with ``use`` old).
- A Patient with an INS states its five traits, and they follow the INS rules and agree with the
  matricule (sex digit, year and month of birth).
- The stated status agrees with its evidence: récupérée and qualifiée need an INS, validée and
  qualifiée a high-trust identity document; FR Core VALI needs an INS (fr-core-1).
- Once an identity is above provisoire, its status, evidence, INS and traits change only through the
  identity operations (``dui.residents.operations``), which record each change with its reason. The
  administrator at the command line and the system itself (imports, demo data) are trusted with plain
  writes.

A write that breaks a rule is refused with 422, every problem listed with its FHIRPath location.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date
from typing import Any

from dui.auth.actor import Actor
from dui.errors import Issue, Unprocessable
from dui.residents import mapping
from dui.residents.sharing import restore_withheld
from ins import parse_matricule
from ins.errors import NirError, TransitionError
from ins.status import IdentityStatus, check_document
from ins.traits import TraitProblem, check_coherence, check_traits, differences

TRUSTED_WRITERS = frozenset({"cli", "system"})
IDENTITY_OPERATIONS = "$ins-fetch, $identity-check, $identity-withdraw or $ins-verify"


def prepare_patient(resource: dict[str, Any], previous: Callable[[], dict[str, Any] | None], actor: Actor,
                    today: date, *, production: bool = False) -> dict[str, Any]:
    """The Patient to store (a withheld INS put back), or ``Unprocessable`` listing every problem.

    In production (``DUI_ENV=prod``) an INS of the test or demonstration OIDs is refused: those identities
    are fictitious and must never mix with real residents."""
    stored = previous()
    if stored is not None:
        resource = restore_withheld(resource, stored, actor)
    issues = identity_issues(resource, today)
    if production:
        issues += [_issue(f"an INS of the {i.kind.usage} OID ({i.kind.system}) is refused in production", i.path)
                   for i in mapping.ins_identifiers(resource) if not i.kind.is_production]
    if stored is not None and not issues and actor.kind not in TRUSTED_WRITERS:
        issues = _locked(resource, stored)
    if issues:
        count = len(issues)
        raise Unprocessable(f"The Patient breaks the INS identity rules ({count} problem{'s' if count > 1 else ''})",
                            issues=issues, code="business-rule")
    return resource


def identity_issues(patient: dict[str, Any], today: date) -> list[Issue]:
    issues: list[Issue] = []
    found = mapping.ins_identifiers(patient)
    for ident in found:
        try:
            parse_matricule(ident.value)
        except NirError as exc:
            issues.append(_issue(str(exc), ident.path))
    active = [i for i in found if i.active]
    if len(active) > 1:
        issues.append(_issue("a Patient carries one active INS; mark a former one with use = old",
                             active[1].path.removesuffix(".value")))
    status = mapping.status_of(patient)
    if active:
        issues += _trait_issues(patient, active[0].value, status, today)
    issues += _status_issues(patient, status, bool(active))
    return issues


def _trait_issues(patient: dict[str, Any], matricule: str, status: IdentityStatus, today: date) -> list[Issue]:
    traits = mapping.traits_of(patient)
    if traits is None:
        return [_issue("a Patient with an INS states its birth name in a name with use = official", "Patient.name")]
    problems = check_traits(traits, today, qualified=status is IdentityStatus.QUAL)
    issues = []
    name = mapping.official_name(patient) or {}
    given = [g for g in name.get("given") or [] if isinstance(g, str)]
    if given and traits.birth_given_names and given[0] != traits.first_given:
        issues.append(_issue("the first given name of the official name is the first of the birth given names",
                             mapping.TRAIT_PATHS["first_given"]))
    with contextlib.suppress(NirError):  # a malformed matricule is reported already
        problems += check_coherence(parse_matricule(matricule), traits)
    issues += [_issue(p.message, mapping.TRAIT_PATHS[p.field]) for p in problems if p.severity == "error"]
    return issues


def _status_issues(patient: dict[str, Any], status: IdentityStatus, has_ins: bool) -> list[Issue]:
    issues = []
    stated = mapping.stated_status(patient)
    where = f"Patient.extension('{mapping.STATUS_EXTENSION}')"
    if stated is not None:
        if stated.insi and not has_ins:
            issues.append(_issue(f"an identity {stated.label.split()[-1]} has an INS identifier", where))
        if not stated.insi and has_ins:
            issues.append(_issue(f"an {stated.label.lower()} has no INS: an INS from INSi makes it récupérée or "
                                 "qualifiée", where))
        if stated.document:
            document = mapping.evidence_of(patient).document
            try:
                check_document(document or "")
            except TransitionError as exc:
                message = str(exc) if document else f"an identity {stated.label.split()[-1]} records the " \
                                                    "high-trust document it was checked against (validationMode)"
                issues.append(_issue(message, f"Patient.extension('{mapping.RELIABILITY}')"))
    rel = mapping.reliability_of(patient).get("identityStatus")
    if isinstance(rel, dict) and rel.get("code") == "VALI" and not has_ins:
        issues.append(_issue("FR Core identityStatus VALI needs an INS identifier (fr-core-1)",
                             f"Patient.extension('{mapping.RELIABILITY}')"))
    return issues


def _locked(patient: dict[str, Any], stored: dict[str, Any]) -> list[Issue]:
    """Issues when a plain write changes the identity of a stored identity above provisoire."""
    before = mapping.status_of(stored)
    if before is IdentityStatus.PROV:
        return []
    changed = []
    if mapping.status_of(patient) is not before or mapping.evidence_of(patient) != mapping.evidence_of(stored):
        changed.append("status")
    old, new = mapping.active_ins(stored), mapping.active_ins(patient)
    if (old and (old.kind, old.value)) != (new and (new.kind, new.value)):
        changed.append("INS")
    old_traits, new_traits = mapping.traits_of(stored), mapping.traits_of(patient)
    if old_traits is not None and (new_traits is None or differences(old_traits, new_traits)):
        changed.append("traits")
    if not changed:
        return []
    return [_issue(f"the identity of this resident is {before.label.lower()}: its {', '.join(changed)} change only "
                   f"through the identity operations ({IDENTITY_OPERATIONS})", "Patient")]


def trait_issue(problem: TraitProblem) -> Issue:
    return _issue(problem.message, mapping.TRAIT_PATHS[problem.field])


def _issue(message: str, path: str) -> Issue:
    return Issue(message, "business-rule", expression=(path,))
