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
    criteria_pairs,
    lock_key,
    matching_rids,
    resource_body,
    respond,
)


def create(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    """Store a new resource under a server-assigned id (an id in the body is ignored, per the spec)."""
    content = resource_body(ctx, req, rtype)
    criteria = req.header("if-none-exist")
    if criteria:
        return _conditional(ctx, req, rtype, content, criteria)
    content = ctx.prepare(rtype, content, None)
    version = ctx.repo.create(rtype, content, rid=req.assigned_id)
    return respond(ctx, req, version, 201, location=True)


def _conditional(ctx: FhirContext, req: FhirRequest, rtype: str, content: dict[str, Any],
                 criteria: str) -> FhirResponse:
    pairs = criteria_pairs(criteria)
    ctx.repo.lock(lock_key(rtype, pairs))
    matches = matching_rids(ctx, rtype, pairs)
    if len(matches) > 1:
        raise PreconditionFailed(f"If-None-Exist: several {rtype} resources match '{criteria}'",
                                 code="multiple-matches")
    if matches:
        existing = ctx.repo.fetch(matches)[0]
        return respond(ctx, req, existing, 200, location=True)
    content = ctx.prepare(rtype, content, None)
    version = ctx.repo.create(rtype, content, rid=req.assigned_id)
    if version.rid not in matching_rids(ctx, rtype, pairs, limit=1000):
        # A resource that does not match its own criteria would let the next identical request
        # create a duplicate: refuse it (the transaction is rolled back).
        raise Invalid(f"The {rtype} does not match its own If-None-Exist criteria '{criteria}'")
    return respond(ctx, req, version, 201, location=True)
