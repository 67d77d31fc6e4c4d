"""delete and conditional delete: http://hl7.org/fhir/R4/http.html#delete, #cdelete.

A delete writes a tombstone version: history keeps everything, a read answers 410. Deleting what is
already deleted changes nothing (204). Conditional delete acts on a single match (412 on several).
"""

from __future__ import annotations

from dui.errors import PreconditionFailed
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    check_id,
    check_if_match,
    lock_key,
    matching_rids,
    not_found,
    version_headers,
)
from dui.fhir.outcomes import information
from dui.fhir.repository import Current, ResourceVersion
from dui.fhir.search.plan import SearchPlan


def delete(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    current = ctx.repo.current(rtype, check_id(rid), for_update=True)
    if current is None:
        raise not_found(rtype, rid)
    return _delete(ctx, req, current)


def conditional_delete(ctx: FhirContext, req: FhirRequest, rtype: str, criteria: SearchPlan) -> FhirResponse:
    ctx.repo.lock(lock_key(rtype, criteria.kept))
    matches = matching_rids(ctx, criteria)
    if len(matches) > 1:
        raise PreconditionFailed(f"Conditional delete: several {rtype} resources match; this server "
                                 "deletes one resource at a time", code="multiple-matches")
    if not matches:
        return _answer(req, 204, f"No {rtype} matches the criteria; nothing was deleted", {})
    found = ctx.repo.fetch(matches)[0]
    current = ctx.repo.current(rtype, found.id, for_update=True)
    assert current is not None
    return _delete(ctx, req, current)


def _delete(ctx: FhirContext, req: FhirRequest, current: Current) -> FhirResponse:
    check_if_match(req, current.version)
    if current.deleted:
        return _answer(req, 204, f"{current.type}/{current.id} was already deleted", {"ETag": f'W/"{current.version}"'})
    ended = ctx.internal.read(current.type, current.id)  # the version deleted: whose record the delete touched
    tombstone = ctx.repo.delete(current)
    return _answer(req, 204, f"{current.type}/{current.id} deleted (version {tombstone.version})",
                   version_headers(tombstone), [ended] if ended is not None else [])


def _answer(req: FhirRequest, status: int, message: str, headers: dict[str, str],
            touched: list[ResourceVersion] | None = None) -> FhirResponse:
    if req.prefer.get("return") in ("operationoutcome", "representation"):
        return FhirResponse(200, information(message), headers, touched=touched or [])
    return FhirResponse(status, None, headers, touched=touched or [])
