"""create, and conditional create: http://hl7.org/fhir/R4/http.html#create, #ccreate.

Conditional create is race-free: the criteria are locked for the rest of the transaction before
they are searched (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so concurrent
identical requests run one after the other and all but the first find the resource the first one
created.
"""

from __future__ import annotations

from typing import Any

from dui.errors import Invalid, PreconditionFailed
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    lock_key,
    matching_rids,
    resource_body,
    respond,
)
from dui.fhir.search.plan import SearchPlan


def create(ctx: FhirContext, req: FhirRequest, rtype: str, criteria: SearchPlan | None = None) -> FhirResponse:
    """Store a new resource under a server-assigned id (an id in the body is ignored, per the spec).
    ``criteria``: those of ``If-None-Exist``, parsed and authorized by the router."""
    content = resource_body(ctx, req, rtype)
    if criteria is not None:
        return _conditional(ctx, req, rtype, content, criteria)
    # A document POSTed on its own is filed; the entries of a transaction (a TDDUI transfer) keep their form.
    filer = ctx.filers.get(rtype) if req.resource is None else None
    filed = filer(ctx, content) if filer is not None else None
    if filed is not None:
        return respond(ctx, req, filed[0], 201 if filed[1] else 200, location=True)
    content = ctx.prepare(rtype, content, None)
    version = ctx.repo.create(rtype, content, rid=req.assigned_id)
    return respond(ctx, req, version, 201, location=True)


def _conditional(ctx: FhirContext, req: FhirRequest, rtype: str, content: dict[str, Any],
                 criteria: SearchPlan) -> FhirResponse:
    ctx.repo.lock(lock_key(rtype, criteria.kept))
    matches = matching_rids(ctx, criteria)
    if len(matches) > 1:
        raise PreconditionFailed(f"If-None-Exist: several {rtype} resources match the criteria",
                                 code="multiple-matches")
    if matches:
        existing = ctx.repo.fetch(matches)[0]
        return respond(ctx, req, existing, 200, location=True)
    content = ctx.prepare(rtype, content, None)
    version = ctx.repo.create(rtype, content, rid=req.assigned_id)
    if version.rid not in matching_rids(ctx, criteria, limit=1000):
        # A resource that does not match its own criteria would let the next identical request
        # create a duplicate: refuse it (the transaction is rolled back).
        raise Invalid(f"The {rtype} does not match its own If-None-Exist criteria")
    return respond(ctx, req, version, 201, location=True)
