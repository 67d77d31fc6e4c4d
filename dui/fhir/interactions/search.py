"""search at type level, by GET and by POST ``_search``: http://hl7.org/fhir/R4/http.html#search,
http://hl7.org/fhir/R4/search.html.

The total is counted on the first page (``_total=accurate`` asks for it on every page, ``none`` never,
``estimate`` takes the planner's estimate on PostgreSQL). Pages are linked by position cursors that
stay valid while others write (``dui.fhir.search.order``).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl

from dui.errors import Invalid, Issue, UnsupportedMediaType
from dui.fhir import jsontext
from dui.fhir.definitions import r4
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse
from dui.fhir.interactions.bundles import bundle, link
from dui.fhir.outcomes import operation_outcome
from dui.fhir.repository import ResourceVersion
from dui.fhir.search.includes import MAX_ROUNDS
from dui.fhir.search.plan import SearchPlan, encode_cursor
from dui.fhir.search.shaping import shape

MAX_INCLUDED = 1000


def search_type(ctx: FhirContext, req: FhirRequest, plan: SearchPlan) -> FhirResponse:
    """``plan``: the request's whole parameter set (query and ``_search`` form), parsed and authorized by the
    router (``dui.fhir.router.Route``)."""
    plan = dataclasses.replace(plan)  # the route's plan stays as it was read
    if plan.summary == "count":
        plan.count = 0
    total = plan.total or ("accurate" if plan.first_page or plan.summary == "count" else None)
    result = ctx.repo.search(plan, total=None if total == "none" else total)
    versions = ctx.repo.fetch(result.rids)
    warnings: list[str] = []
    if plan.ignored:
        warnings.append(f"Ignored search parameters: {', '.join(plan.ignored)} (unknown or not supported; "
                        "ignored as Prefer: handling=lenient asks)")
    warnings.extend(plan.warnings)
    included = _included(ctx, plan, versions, warnings)
    entries = [entry(ctx, plan, v, "match") for v in versions] + [entry(ctx, plan, v, "include") for v in included]
    if warnings:
        outcome = operation_outcome([Issue(w, "informational", severity="warning") for w in warnings])
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    return FhirResponse(200, bundle("searchset", ctx.clock(), entries, _links(ctx, plan, result), result.total),
                        touched=versions + included)


def _included(ctx: FhirContext, plan: SearchPlan, matches: list[ResourceVersion],
              warnings: list[str]) -> list[ResourceVersion]:
    if not plan.includes or not matches:
        return []
    seen = {v.rid for v in matches}
    found: list[int] = []
    frontier = [v.rid for v in matches]
    for round_ in range(MAX_ROUNDS):
        steps = plan.includes if round_ == 0 else [i for i in plan.includes if i.iterate]
        reached: list[int] = []
        for include in steps:
            for rid in ctx.repo.include(include, frontier):
                if rid not in seen:
                    seen.add(rid)
                    reached.append(rid)
        if not reached:
            break
        found += reached
        if len(found) >= MAX_INCLUDED:
            warnings.append(f"Included resources were cut at {MAX_INCLUDED}; page with a smaller _count")
            found = found[:MAX_INCLUDED]
            break
        frontier = reached
        if not any(i.iterate for i in plan.includes):
            break
    return ctx.repo.fetch(found)


def entry(ctx: FhirContext, plan: SearchPlan, version: ResourceVersion, mode: str) -> dict[str, Any]:
    resource: Any = jsontext.raw(version.body or b"{}")
    if plan.summary not in (None, "false") or plan.elements is not None:
        resource = shape(version.resource(), r4(), plan.summary, plan.elements)
    return {"fullUrl": f"{ctx.base}/{version.reference}", "resource": resource, "search": {"mode": mode}}


def _links(ctx: FhirContext, plan: SearchPlan, result: Any) -> list[tuple[str, str]]:
    rtype = plan.resource_type
    current = [*plan.kept, ("_cursor", encode_cursor(plan.cursor))] if plan.cursor else plan.kept
    links = [("self", link(ctx.base, rtype, current)), ("first", link(ctx.base, rtype, plan.kept))]
    for relation, cursor in (("previous", result.previous_cursor), ("next", result.next_cursor)):
        if cursor is not None:
            links.append((relation, link(ctx.base, rtype, [*plan.kept, ("_cursor", encode_cursor(cursor))])))
    return links


def form(req: FhirRequest) -> list[tuple[str, str]]:
    """The parameters of a POST ``_search`` form (http://hl7.org/fhir/R4/http.html#search)."""
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if not req.body:
        return []
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    try:
        return parse_qsl(req.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Invalid("The _search form is not valid UTF-8") from None
