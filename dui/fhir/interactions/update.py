"""update (with update-as-create, If-Match) and conditional update.

http://hl7.org/fhir/R4/http.html#update, #concurrency, #cond-update. A PUT that changes nothing but
``meta.versionId``/``meta.lastUpdated`` writes no new version.
"""

from __future__ import annotations

from typing import Any

from dui.errors import Invalid, PreconditionFailed
from dui.fhir import jsontext
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    check_id,
    check_if_match,
    lock_key,
    matching_rids,
    resource_body,
    respond,
)
from dui.fhir.repository import Current, ResourceVersion
from dui.fhir.search.plan import SearchPlan


def update(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    """Store the next version of ``rtype/rid``; create it (201) if it does not exist."""
    check_id(rid)
    content = resource_body(ctx, req, rtype)
    body_id = content.get("id")
    if body_id is None:
        raise Invalid(f"The {rtype} in the body has no id; it must be '{rid}' as in the URL", expression="id")
    if body_id != rid:
        raise Invalid(f"The id in the body ('{body_id}') differs from the id in the URL ('{rid}')", expression="id")
    return _store(ctx, req, rtype, rid, content)


def conditional_update(ctx: FhirContext, req: FhirRequest, rtype: str, criteria: SearchPlan) -> FhirResponse:
    """PUT ``rtype?criteria``: update the one match, create if none, 412 if several."""
    content = resource_body(ctx, req, rtype)
    ctx.repo.lock(lock_key(rtype, criteria.kept))
    matches = matching_rids(ctx, criteria)
    if len(matches) > 1:
        raise PreconditionFailed(f"Conditional update: several {rtype} resources match the criteria",
                                 code="multiple-matches")
    body_id = content.get("id")
    if matches:
        existing = ctx.repo.fetch(matches)[0]
        if body_id is not None and body_id != existing.id:
            raise Invalid(f"The id in the body ('{body_id}') is not the id of the matching {rtype} "
                          f"('{existing.id}')", expression="id")
        return _store(ctx, req, rtype, existing.id, content)
    if req.header("if-match"):
        raise PreconditionFailed("If-Match: no resource matches the criteria")
    if body_id is not None:
        check_id(body_id)
        return _store(ctx, req, rtype, body_id, content)
    ctx.require("c", rtype)  # no match: a create
    content = ctx.prepare(rtype, content, None)
    version = ctx.repo.create(rtype, content, rid=req.assigned_id, method="PUT")
    return respond(ctx, req, version, 201, location=True)


def _store(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str, content: dict[str, Any]) -> FhirResponse:
    current = ctx.repo.current(rtype, rid, for_update=True)  # None too for what the actor may not see
    check_if_match(req, current.version if current else None)
    created = current is None or current.deleted
    if created:
        ctx.require("c", rtype)  # update as create: a create, whatever the method
    content = ctx.prepare(rtype, content, current)
    stored = None
    if current is not None and not created:
        stored = ctx.internal.read(current.type, current.id)
        unchanged = _unchanged(ctx, current, stored, content)
        if unchanged is not None:
            return respond(ctx, req, unchanged, 200)
    version = ctx.repo.update(current, rtype, rid, content)
    return respond(ctx, req, version, 201 if created else 200, location=created, replaced=stored)


def _unchanged(ctx: FhirContext, current: Current, stored: ResourceVersion | None, content: dict[str, Any]) -> Any:
    if stored is None or stored.body is None:
        return None
    before = stored.resource()
    meta = dict(content.get("meta") or {})
    meta["versionId"] = before["meta"]["versionId"]
    meta["lastUpdated"] = before["meta"]["lastUpdated"]
    after = {"resourceType": current.type, "id": current.id, "meta": meta}
    after.update((k, v) for k, v in content.items() if k not in after)
    return ctx.repo.read(current.type, current.id) if jsontext.dump(after) == stored.body else None
