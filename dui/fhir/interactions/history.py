"""history at instance, type and system level: http://hl7.org/fhir/R4/http.html#history.

Newest first. Pages follow a cursor on the global version sequence, so a page never shifts while
others write; ``_since`` and ``_count`` are supported.
"""

from __future__ import annotations

from dui.auth.policy import readable_types
from dui.errors import Forbidden, Invalid
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse, check_id, not_found
from dui.fhir.interactions.bundles import bundle, history_entry, link
from dui.fhir.search.indexer import date_range

PARAMETERS = ("_count", "_since", "_cursor", "_format", "_pretty")


def history_instance(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    if ctx.repo.current(rtype, check_id(rid)) is None:
        raise not_found(rtype, rid)
    return _history(ctx, req, f"{rtype}/{rid}/_history", rtype=rtype, rid=rid)


def history_type(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    return _history(ctx, req, f"{rtype}/_history", rtype=rtype)


def history_system(ctx: FhirContext, req: FhirRequest) -> FhirResponse:
    """Every type's history for an actor that may search every type; otherwise the history of the types it may
    search (as many ``history-type`` in one), the establishment's scope applied as for a type's history."""
    types = readable_types(ctx.actor, list(ctx.registry.resource_types()), ctx.policy, permission="s")
    if types is not None and not types:
        raise Forbidden("Not allowed: the token or the roles grant no search on any resource type")
    return _history(ctx, req, "_history", types=types)


def _history(ctx: FhirContext, req: FhirRequest, path: str, rtype: str | None = None,
             rid: str | None = None, types: list[str] | None = None) -> FhirResponse:
    limits = ctx.settings.limits
    count, since, cursor = limits.default_count, None, None
    kept: list[tuple[str, str]] = []
    for name, value in req.query:
        if name == "_count":
            count = _integer(name, value)
            count = min(count, limits.max_count)
            kept.append((name, str(count)))
        elif name == "_since":
            rng = date_range(value, ctx.tz) if "T" in value else None
            if rng is None:
                raise Invalid(f"_since must be an instant such as 2026-01-31T08:00:00Z, not {value[:40]!r}",
                              expression="_since")
            since = rng[0]
            kept.append((name, value))
        elif name == "_cursor":
            cursor = _integer(name, value)
        elif name not in PARAMETERS and req.strict:
            raise Invalid(f"'{name}' is not a history parameter of this server "
                          "(Prefer: handling=lenient would ignore it)",
                          code="not-supported", expression=name)
    page = ctx.repo.history(rtype=rtype, rid=rid, since=since, before_vid=cursor, count=count, types=types)
    links = [("self", link(ctx.base, path, kept + ([("_cursor", str(cursor))] if cursor else [])))]
    if page.next_cursor is not None:
        links.append(("next", link(ctx.base, path, [*kept, ("_cursor", str(page.next_cursor))])))
    entries = [history_entry(ctx.base, v) for v in page.versions]
    return FhirResponse(200, bundle("history", ctx.clock(), entries, links, page.total), touched=page.versions)


def _integer(name: str, value: str) -> int:
    if not value.isdigit():
        raise Invalid(f"{name} must be a non-negative integer, not {value[:40]!r}", expression=name)
    return int(value)
