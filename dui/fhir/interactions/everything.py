"""``Patient/{id}/$everything``: the resident's whole record, paged
(http://hl7.org/fhir/R4/patient-operation-everything.html).

The record is the Patient, every resource of its compartment (the R4 Patient CompartmentDefinition:
the resource types and the references that place them there), then the resources those point at
which are not in the compartment themselves (practitioners, organizations, medications...). Other
residents are never brought in by a reference. Pages follow the row id, compartment first then the
referenced resources, with a cursor: the next page is "after this position", so paging stays right
while the record changes, whatever its size. ``_since`` keeps what changed since an instant,
``_type`` some resource types only.
"""

from __future__ import annotations

from typing import Any

from dui.auth.policy import readable_types
from dui.errors import Gone, Invalid
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse, check_id, not_found
from dui.fhir.interactions.bundles import bundle, link, match_entry
from dui.fhir.search.indexer import date_range
from dui.fhir.search.plan import decode_cursor, encode_cursor

PARAMETERS = ("_since", "_type", "_count", "_cursor", "_format", "_pretty")


def everything(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    current = ctx.repo.current("Patient", check_id(rid))
    if current is None:
        raise not_found("Patient", rid)
    if current.deleted:
        raise Gone(f"Patient/{rid} was deleted")
    options = _options(ctx, req)
    rids, next_cursor = ctx.repo.everything(current.rid, rid, options)
    versions = ctx.repo.fetch(rids)
    path = f"Patient/{rid}/$everything"
    kept = options["kept"]
    current_page = [("_cursor", options["raw_cursor"])] if options["raw_cursor"] else []
    links = [("self", link(ctx.base, path, kept + current_page))]
    if next_cursor is not None:
        links.append(("next", link(ctx.base, path, [*kept, ("_cursor", encode_cursor(next_cursor))])))
    entries = [match_entry(ctx.base, v) for v in versions]
    return FhirResponse(200, bundle("searchset", ctx.clock(), entries, links), touched=versions)


def _options(ctx: FhirContext, req: FhirRequest) -> dict[str, Any]:
    limits = ctx.settings.limits
    out: dict[str, Any] = {"count": limits.default_count, "since": None, "types": None, "cursor": None,
                           "raw_cursor": None, "kept": []}
    for name, value in req.query:
        if name == "_count":
            if not value.isdigit():
                raise Invalid("_count must be a non-negative integer", expression="_count")
            out["count"] = min(int(value), limits.max_count)
            out["kept"].append((name, str(out["count"])))
        elif name == "_since":
            rng = date_range(value, ctx.tz) if "T" in value else None
            if rng is None:
                raise Invalid("_since must be an instant such as 2026-11-01T00:00:00Z", expression="_since")
            out["since"] = rng[0]
            out["kept"].append((name, value))
        elif name == "_type":
            types = [t.strip() for t in value.split(",") if t.strip()]
            unknown = [t for t in types if t not in set(ctx.registry.resource_types())]
            if unknown:
                raise Invalid(f"_type: unknown resource type {unknown[0]}", expression="_type")
            out["types"] = (out["types"] or []) + types
            out["kept"].append((name, value))
        elif name == "_cursor":
            out["cursor"] = decode_cursor(value)
            out["raw_cursor"] = value
        elif name not in PARAMETERS and req.strict:
            raise Invalid(f"'{name}' is not a parameter of $everything here (Prefer: handling=lenient would ignore it)",
                          code="not-supported", expression=name)
    readable = readable_types(ctx.actor, list(ctx.registry.resource_types()), ctx.policy,
                              break_glass=ctx.break_glass)
    if readable is not None:  # only what the actor may read
        out["types"] = [t for t in (out["types"] or readable) if t in set(readable)]
    return out
