"""search at type level, by GET and by POST ``_search``: http://hl7.org/fhir/R4/http.html#search."""

from __future__ import annotations

from urllib.parse import parse_qsl

from dui.errors import Invalid, Issue, UnsupportedMediaType
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse
from dui.fhir.interactions.bundles import bundle, link, match_entry
from dui.fhir.outcomes import operation_outcome
from dui.fhir.search.query import parse_search


def search_type(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    params = list(req.query)
    if req.method == "POST":
        params.extend(_form(req))
    plan = parse_search(rtype, params, ctx.registry, ctx.settings.limits, req.strict)
    result = ctx.repo.search(plan, total=True)
    versions = ctx.repo.fetch(result.rids)
    links = [("self", link(ctx.base, rtype, plan.kept))]
    if result.has_more and versions:
        links.append(("next", link(ctx.base, rtype, [*plan.kept, ("_cursor", str(versions[-1].rid))])))
    entries = [match_entry(ctx.base, v) for v in versions]
    if plan.ignored:
        warning = operation_outcome([Issue(
            f"Ignored search parameters: {', '.join(plan.ignored)} (unknown or not supported; send "
            "Prefer: handling=strict to have them refused)", "not-supported", severity="warning")])
        entries.append({"resource": warning, "search": {"mode": "outcome"}})
    return FhirResponse(200, bundle("searchset", ctx.clock(), entries, links, result.total))


def _form(req: FhirRequest) -> list[tuple[str, str]]:
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if not req.body:
        return []
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    try:
        return parse_qsl(req.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Invalid("The _search form is not valid UTF-8") from None
