"""Potential duplicates: ``Patient/$match`` (http://hl7.org/fhir/R4/patient-operation-match.html).

Candidates come from the search index: the same INS (a certain match), the same year of birth (which
covers a wrong day, a wrong month, or day and month swapped), and family names starting with the same
three letters. Each candidate is scored by ``ins.matching.compare``: French names compared by sound
and spelling, birth names against used names, birth date, sex and birth place. Results go out
through the sharing gate like any read.
"""

from __future__ import annotations

from typing import Any

from dui.fhir.interactions.base import FhirContext
from dui.fhir.interactions.bundles import bundle
from dui.fhir.repository import ResourceVersion
from dui.fhir.search.normalize import normalize
from dui.fhir.search.plan import parse_search
from dui.residents import mapping
from fhir_profiles import CANONICAL
from ins.matching import Match, Person, compare

CANDIDATES_PER_CRITERION = 500
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
MATCH_REASON = f"{CANONICAL}/StructureDefinition/dui-match-reason"  # why the score is what it is, one per reason


def person_of(patient: dict[str, Any]) -> Person:
    """The traits ``compare`` weighs: birth name first, then other names; birth given names, then others."""
    official = mapping.official_name(patient)
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    ordered = ([official] if official else []) + [n for n in names if n is not official]
    families = [n["family"] for n in ordered if isinstance(n.get("family"), str)]
    traits = mapping.traits_of(patient)
    givens = list(traits.birth_given_names) if traits else []
    givens += [g for n in ordered for g in n.get("given") or [] if isinstance(g, str) and g not in givens]
    birth = patient.get("birthDate")
    gender = patient.get("gender")
    return Person(tuple(dict.fromkeys(families)), tuple(givens), birth if isinstance(birth, str) else None,
                  gender if isinstance(gender, str) else None, mapping.birth_place_of(patient))


def find_matches(ctx: FhirContext, patient: dict[str, Any], only_certain: bool = False,
                 count: int | None = None) -> list[tuple[ResourceVersion, Match]]:
    """Candidates scored and sorted, best first; "certainly-not" left out."""
    query = person_of(patient)
    same_ins = _same_ins(ctx, patient)
    scored = []
    for version in ctx.repo.fetch(sorted(_candidates(ctx, patient, query) | same_ins)):
        if version.body is None or (patient.get("id") and version.id == patient.get("id")):
            continue
        if version.rid in same_ins:
            found = Match(1.0, "certain", ("same INS",))
        else:
            found = compare(query, person_of(version.resource()))
        if found.grade == "certainly-not" or (only_certain and found.grade != "certain"):
            continue
        scored.append((version, found))
    scored.sort(key=lambda pair: (-pair[1].score, pair[0].id))
    return scored[:count] if count else scored


def match_bundle(ctx: FhirContext, patient: dict[str, Any], only_certain: bool, count: int | None) -> dict[str, Any]:
    entries = []
    for version, found in find_matches(ctx, patient, only_certain, count or ctx.settings.limits.default_count):
        entries.append({
            "fullUrl": f"{ctx.base}/{version.reference}",
            "resource": version.resource(),
            "search": {"mode": "match", "score": found.score,
                       "extension": [{"url": MATCH_GRADE, "valueCode": found.grade},
                                     *({"url": MATCH_REASON, "valueString": r} for r in found.reasons)]},
        })
    return bundle("searchset", ctx.clock(), entries, [], total=len(entries))


def _search(ctx: FhirContext, params: list[tuple[str, str]]) -> set[int]:
    plan = parse_search("Patient", params, ctx.registry, ctx.settings.limits, strict=True)
    plan.count = CANDIDATES_PER_CRITERION
    # Among the residents the actor may see: candidates the actor could not see would crowd out those it can (an
    # answer depending on another establishment's residents).
    return set(ctx.repo.search(plan, total=None).rids)


def _same_ins(ctx: FhirContext, patient: dict[str, Any]) -> set[int]:
    ins = mapping.active_ins(patient)
    return _search(ctx, [("identifier", f"{ins.kind.system}|{ins.value}")]) if ins else set()


def _candidates(ctx: FhirContext, patient: dict[str, Any], query: Person) -> set[int]:
    found: set[int] = set()
    if query.birth_date and len(query.birth_date) >= 4 and query.birth_date[:4].isdigit():
        found |= _search(ctx, [("birthdate", query.birth_date[:4])])
    for family in query.family_names:
        prefix = normalize(family).replace(" ", "")[:3]
        if len(prefix) == 3:
            found |= _search(ctx, [("family", prefix)])
    return found
