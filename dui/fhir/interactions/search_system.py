"""search at system level: ``GET [base]?_type=A,B&...`` (http://hl7.org/fhir/R4/http.html#search).

R4: "If the _type parameter is included, all other search parameters SHALL be common to all provided types". Here
``_type`` is required (a search of every type at once would be a search of the whole server), names at most
``MAX_TYPES`` types, and the other parameters are read strictly for each of them, so that a parameter one type does
not know is refused rather than ignored for that type only. The results are those of each type's own search, in the
order ``_type`` names the types; a page may hold several types, and the links continue where the page stopped (the
cursor holds the type and that type's position). ``_sort``, ``_include`` and ``_revinclude`` belong to a type's
search and are refused here. The total, on the first page or with ``_total=accurate``, is the sum of the types'.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from typing import Any

from dui.errors import Invalid
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse
from dui.fhir.interactions.bundles import bundle, link
from dui.fhir.interactions.search import entry
from dui.fhir.search.plan import SearchPlan, parse_search

MAX_TYPES = 10
REFUSED = ("_sort", "_include", "_revinclude")


def plans(ctx: FhirContext, req: FhirRequest, storable: list[str]) -> tuple[SearchPlan, ...]:
    """One strict plan per type of ``_type``, from the other parameters (``_cursor`` left to ``search_system``)."""
    named = [value for name, value in req.query if name == "_type"]
    types = [t.strip() for value in named for t in value.split(",") if t.strip()]
    if not types:
        raise Invalid("A search of the whole server names its types: GET /fhir?_type=Patient,Observation&...",
                      expression="_type")
    unknown = sorted(set(types) - set(storable))
    if unknown:
        raise Invalid(f"_type: {', '.join(unknown)[:100]} is not a resource type of this server", expression="_type")
    types = list(dict.fromkeys(types))
    if len(types) > MAX_TYPES:
        raise Invalid(f"_type names at most {MAX_TYPES} types", expression="_type")
    params = [(n, v) for n, v in req.query if n not in ("_type", "_cursor", "_format", "_pretty")]
    for name, _ in params:
        if name.split(":")[0] in REFUSED:
            raise Invalid(f"{name.split(':')[0]} belongs to the search of one type (GET /fhir/Type?...), not to a "
                          "search of several", expression=name)
    code_sets = ctx.code_sets()
    return tuple(parse_search(t, params, ctx.registry, ctx.settings.limits, strict=True, code_sets=code_sets,
                              ignore_empty=req.ignores_empty) for t in types)


def search_system(ctx: FhirContext, req: FhirRequest, planned: tuple[SearchPlan, ...]) -> FhirResponse:
    position, inner = _cursor(req, len(planned))
    first = planned[0]
    count = 0 if first.summary == "count" else first.count
    total = None
    if first.summary == "count" or first.total == "accurate" or (position == 0 and inner is None
                                                                   and first.total != "none"):
        total = 0
        for plan in planned:
            counted = dataclasses.replace(plan, count=0, cursor=None)
            total += ctx.repo.search(counted, total="accurate").total or 0
    rids: list[int] = []
    following: tuple[int, dict[str, Any] | None] | None = None
    for index in range(position, len(planned) if count else position):
        plan = dataclasses.replace(planned[index], count=count - len(rids),
                                   cursor=inner if index == position else None)
        result = ctx.repo.search(plan, total=None)
        rids += result.rids
        if result.next_cursor is not None:
            following = (index, result.next_cursor)
            break
        if len(rids) >= count:
            following = (index + 1, None) if index + 1 < len(planned) else None
            break
    versions = ctx.repo.fetch(rids)
    kept = [(n, v) for n, v in req.query if n not in ("_cursor", "_format", "_pretty")]
    links = [("self", link(ctx.base, "", kept + ([("_cursor", _encoded(position, inner))]
                                                  if position or inner else []))),
             ("first", link(ctx.base, "", kept))]
    if following is not None:
        links.append(("next", link(ctx.base, "", [*kept, ("_cursor", _encoded(*following))])))
    by_type = {plan.resource_type: plan for plan in planned}  # _summary and _elements, read for each type
    entries = [entry(ctx, by_type[v.type], v, "match") for v in versions]
    return FhirResponse(200, bundle("searchset", ctx.clock(), entries, links, total), touched=versions)


def _cursor(req: FhirRequest, types: int) -> tuple[int, dict[str, Any] | None]:
    raw = next((v for n, v in req.query if n == "_cursor"), None)
    if raw is None:
        return 0, None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        data = None
    inner = data.get("c") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or not isinstance(data.get("t"), int) or not 0 <= data["t"] < types
            or not (inner is None or (isinstance(inner, dict) and isinstance(inner.get("r"), int)))):
        raise Invalid("_cursor is not a cursor given by this server (follow the links of the Bundle)",
                      expression="_cursor")
    return int(data["t"]), inner


def _encoded(position: int, inner: dict[str, Any] | None) -> str:
    raw = json.dumps({"t": position, "c": inner}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
