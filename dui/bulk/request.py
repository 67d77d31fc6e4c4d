"""What an export asks, read from its kick-off (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#query-parameters)
and kept with its job: the level (system, Patient, Group), the types, ``_since`` and the ``_typeFilter`` searches.

Read strictly: a parameter this server does not honour (``_elements``, ``includeAssociatedData``, ``patient``...)
is refused with 400 rather than ignored, since an export that silently carries more than was asked is a leak, and
one that carries less a loss. ``plans`` turns a request into one search per type, run as the requester at export
time: the ordinary search parser and engine, with the requester's scope.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.orm import Session

from dui.auth.policy import readable_types
from dui.errors import Forbidden, Invalid
from dui.fhir.interactions.base import FhirContext
from dui.fhir.scope import compartment_params
from dui.fhir.search.indexer import date_range
from dui.fhir.search.plan import SearchPlan, parse_search
from dui.fhir.tables import resource

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
PARAMETERS = ("_outputFormat", "_type", "_since", "_typeFilter")
IGNORED = ("_format", "_pretty")  # the answer's format: FHIR JSON, checked by the web layer
# A Subscription may carry secret headers (dui.subscriptions): never exported.
NEVER_EXPORTED = frozenset({"Subscription", "Parameters"})
# Search parameters that shape a result page rather than select resources: meaningless in a _typeFilter.
NOT_FILTERS = frozenset({"_include", "_revinclude", "_sort", "_count", "_summary", "_elements", "_total", "_cursor",
                         "_contained", "_containedType", "_format", "_pretty"})


@dataclass(frozen=True)
class ExportRequest:
    level: str  # "system", "patient", "group"
    group: str | None = None
    types: tuple[str, ...] | None = None
    since: str | None = None
    type_filters: tuple[tuple[str, str], ...] = ()  # (type, query)
    output_format: str = "application/fhir+ndjson"

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "group": self.group, "types": list(self.types) if self.types else None,
                "since": self.since, "typeFilters": [list(f) for f in self.type_filters],
                "outputFormat": self.output_format}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        return cls(data["level"], data.get("group"), tuple(data["types"]) if data.get("types") else None,
                   data.get("since"), tuple((t, q) for t, q in data.get("typeFilters") or ()),
                   data.get("outputFormat") or OUTPUT_FORMATS[0])


def level_types(ctx: FhirContext, level: str) -> list[str]:
    """The types an export of ``level`` may carry: every stored type for the system, a resident's record (the
    Patient and its compartment, documents' Binaries included) for Patient and Group exports."""
    if level == "system":
        return sorted(set(ctx.registry.resource_types()) - NEVER_EXPORTED)
    return ["Patient", *sorted(set(compartment_params()) - NEVER_EXPORTED)]


def parse(ctx: FhirContext, level: str, group: str | None, pairs: list[tuple[str, str]]) -> ExportRequest:
    """The kick-off's parameters (the query, or a Parameters body read into pairs), checked."""
    allowed = set(level_types(ctx, level))
    request = ExportRequest(level, group)
    types: list[str] = []
    filters: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in IGNORED:
            continue
        if name not in PARAMETERS:
            raise Invalid(f"'{name[:60]}' is not a parameter of $export this server honours (it reads "
                          f"{', '.join(PARAMETERS)})", code="not-supported", expression=name[:60])
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise Invalid(f"_outputFormat {value[:60]!r} is not available: {', '.join(OUTPUT_FORMATS)}",
                              code="not-supported", expression="_outputFormat")
            request = dataclasses.replace(request, output_format=value)
        elif name == "_since":
            if "T" not in value or date_range(value, ctx.tz) is None:
                raise Invalid("_since must be an instant such as 2026-11-01T00:00:00Z", expression="_since")
            request = dataclasses.replace(request, since=value)
        elif name == "_type":
            for rtype in (t.strip() for t in value.split(",")):
                types.append(_known(rtype, allowed, level, "_type"))
        else:
            rtype, _, query = value.partition("?")
            filters.append((_known(rtype, allowed, level, "_typeFilter"), query))
    if types:
        request = dataclasses.replace(request, types=tuple(dict.fromkeys(types)))
    seen: set[str] = set()
    for rtype, query in filters:
        if request.types is not None and rtype not in request.types:
            raise Invalid(f"_typeFilter on {rtype}, a type _type leaves out", expression="_typeFilter")
        if rtype in seen:
            raise Invalid(f"one _typeFilter per type here ({rtype} has several): export each search on its own",
                          code="not-supported", expression="_typeFilter")
        seen.add(rtype)
        ctx.require_search(_filter_plan(ctx, rtype, query, 1))  # strict, and authorized like the search it is
    request = dataclasses.replace(request, type_filters=tuple(filters))
    _check_readable(ctx, request)
    return request


def _known(rtype: str, allowed: set[str], level: str, where: str) -> str:
    if rtype in allowed:
        return rtype
    if rtype in NEVER_EXPORTED:
        raise Invalid(f"{where}: {rtype} resources are never exported", code="not-supported", expression=where)
    if level != "system" and rtype[:1].isupper() and rtype.isalnum():
        raise Invalid(f"{where}: {rtype[:60]} is not part of a resident's record (the Patient compartment); ask a "
                      "system-level export", code="not-supported", expression=where)
    raise Invalid(f"{where}: {rtype[:60]!r} is not a FHIR R4 resource type", expression=where)


def _filter_plan(ctx: FhirContext, rtype: str, query: str, count: int) -> SearchPlan:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise Invalid(f"_typeFilter {rtype}?{query[:80]} holds no search parameter", expression="_typeFilter")
    for name, _ in pairs:
        if name.split(":")[0] in NOT_FILTERS:
            raise Invalid(f"_typeFilter: {name[:40]} does not select resources and cannot be honoured in an export",
                          code="not-supported", expression="_typeFilter")
    return parse_search(rtype, [*pairs, ("_count", str(count))], ctx.registry, ctx.settings.limits, strict=True)


def _check_readable(ctx: FhirContext, request: ExportRequest) -> None:
    readable = readable_types(ctx.actor, level_types(ctx, request.level), ctx.policy)
    if readable is None:
        return
    if request.types is not None:
        refused = [t for t in request.types if t not in set(readable)]
        if refused:
            raise Forbidden(f"Not allowed: this caller may not read {', '.join(refused[:5])}")
    elif not readable:
        raise Forbidden("Not allowed: this caller may read no resource type")


def plans(session: Session, ctx: FhirContext, request: ExportRequest, page: int) -> list[tuple[str, SearchPlan]]:
    """One search per type to export, in type order, as ``ctx``'s actor: the types asked (or every type of the
    level that holds a resource), those the actor may read, with ``_since`` and the type's ``_typeFilter``."""
    wanted = list(request.types) if request.types is not None else level_types(ctx, request.level)
    present = set(session.execute(select(resource.c.res_type).distinct()
                                  .where(resource.c.deleted.is_(False))).scalars())
    readable = readable_types(ctx.actor, wanted, ctx.policy)
    chosen = [t for t in sorted(wanted) if t in present and (readable is None or t in set(readable))]
    filters = dict(request.type_filters)
    found = []
    for rtype in chosen:
        pairs = parse_qsl(filters.get(rtype, ""), keep_blank_values=True)
        if request.since:
            pairs.append(("_lastUpdated", f"ge{request.since}"))
        pairs.append(("_count", str(page)))
        plan = parse_search(rtype, pairs, ctx.registry, ctx.settings.limits, strict=True)
        found.append((rtype, dataclasses.replace(plan, count=page)))
    return found
