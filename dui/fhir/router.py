"""FHIR REST routing: (method, path) -> interaction. Framework-free.

The tables below are the single list of what the API implements; the CapabilityStatement is
generated from them (``dui.fhir.interactions.capability``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dui.errors import DuiError, MethodNotAllowed, NotFound
from dui.fhir.authorization import authorize
from dui.fhir.definitions import r4
from dui.fhir.interactions import (
    capability,
    create,
    delete,
    everything,
    history,
    patch,
    read,
    search,
    search_system,
    terminology,
    transaction,
    update,
    validate,
)
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    Operation,
    check_id,
    criteria_pairs,
    not_found,
)
from dui.fhir.search.plan import SearchPlan, parse_search

Handler = Callable[..., FhirResponse]

# Resource types that exist only to carry operation parameters are not stored.
NOT_STORED = frozenset({"Parameters"})

# method -> (CapabilityStatement interaction code, handler)
INSTANCE: dict[str, tuple[str, Handler]] = {
    "GET": ("read", read.read),
    "PUT": ("update", update.update),
    "PATCH": ("patch", patch.patch),
    "DELETE": ("delete", delete.delete),
}
TYPE: dict[str, tuple[str, Handler]] = {
    "GET": ("search-type", search.search_type),
    "POST": ("create", create.create),
    "PUT": ("update", update.conditional_update),
    "PATCH": ("patch", patch.conditional_patch),
    "DELETE": ("delete", delete.conditional_delete),
}
INSTANCE_HISTORY = ("history-instance", history.history_instance)
TYPE_HISTORY = ("history-type", history.history_type)
VREAD = ("vread", read.vread)
SYSTEM = ("transaction", "batch", "history-system", "search-system")
# (resource type, operation) -> the operation; use-case packages add theirs through ``FhirContext.operations``
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("Patient", "$everything"): Operation("http://hl7.org/fhir/OperationDefinition/Patient-everything", ("GET",),
                                          "instance", everything.everything),
    **terminology.operations(),
}
# Operations that write whatever their method: a bulk export's kick-off creates its job (``dui.bulk``).
WRITING_OPERATIONS = frozenset({"$export"})


def storable_types() -> list[str]:
    return sorted(r4().resource_types - NOT_STORED)


# The audit trail's name for each interaction (``audit_event.action``).
ACTIONS = {"read": "read", "vread": "vread", "search-type": "search", "search-system": "search",
           "history-instance": "history",
           "history-type": "history", "history-system": "history", "create": "create", "update": "update",
           "patch": "patch", "delete": "delete", "operation": "operation", "transaction": "transaction",
           "capabilities": "capabilities"}


@dataclass(frozen=True)
class Route:
    """What a request asks, read once from its method, path, query, headers and form: routing, authorization
    (``dui.fhir.authorization``) and the audit trail all work from this one value.

    ``interaction`` is the CapabilityStatement code (``read``, ``search-type``, ``update``...), or
    ``capabilities``, ``transaction`` (a Bundle POSTed at the base), ``operation``, or ``unknown`` when the path
    names no endpoint. ``plan`` is the parsed search (its whole parameter set: the query, and a ``_search``
    form), or the parsed criteria of a conditional interaction (the query of a conditional update, patch or
    delete, ``If-None-Exist`` of a create). ``error`` is what routing refused (unknown endpoint, method not
    allowed, malformed parameters): the request fails with it, and the audit still knows what was asked.
    """

    method: str  # HEAD is a GET
    interaction: str
    rtype: str | None = None
    rid: str | None = None
    vid: str | None = None
    operation: str | None = None
    plan: SearchPlan | None = None
    plans: tuple[SearchPlan, ...] = ()  # a system search: one plan per type of ``_type``
    handler: Callable[[FhirContext, FhirRequest], FhirResponse] | None = None
    error: DuiError | None = None
    posted_search: bool = False  # ``POST [type]/_search``

    @property
    def action(self) -> str:
        return ACTIONS.get(self.interaction, "request")

    @property
    def writes(self) -> bool:
        """Whether the request may write (a writing unit of work: ``BEGIN IMMEDIATE`` on SQLite)."""
        if self.interaction == "operation" and self.operation in WRITING_OPERATIONS:
            return True
        return self.method in ("POST", "PUT", "PATCH", "DELETE") and self.interaction != "search-type"


def route(ctx: FhirContext, req: FhirRequest, asked: Route | None = None) -> Route:
    """Read ``req`` into a ``Route``; never raises (what routing refuses is in ``Route.error``). ``asked``: its
    ``shape``, when the caller has it already."""
    asked = asked or shape(req)
    if asked.error is not None:
        return asked
    try:
        return _resolve(ctx, req, asked)
    except DuiError as err:
        return dataclasses.replace(asked, error=err)


def shape(req: FhirRequest) -> Route:
    """What ``req`` asks, from its method and path alone: no check of types, ids, methods or parameters, no
    handler. Enough for the audit trail when a request is refused before it is routed (a bad token)."""
    method = "GET" if req.method == "HEAD" else req.method
    return _shape(method, [s for s in req.path.split("/") if s])


def handle(ctx: FhirContext, req: FhirRequest, routed: Route | None = None) -> FhirResponse:
    """Route one request (unless the caller already did), authorize it, run it. Raises ``DuiError`` subclasses
    for every client mistake and refusal."""
    routed = _authorized(ctx, req, routed)
    assert routed.handler is not None
    return routed.handler(ctx, req)


def preflight(ctx: FhirContext, req: FhirRequest) -> None:
    """Route and authorize ``req`` without running it (the entries of a transaction, before any runs)."""
    _authorized(ctx, req)


def _authorized(ctx: FhirContext, req: FhirRequest, routed: Route | None = None) -> Route:
    routed = routed or route(ctx, req)
    if routed.error is not None:
        raise routed.error
    authorize(ctx, routed)
    return routed


def _shape(method: str, segments: list[str]) -> Route:
    """What the path asks, from its segments alone (no check of types, ids or methods)."""
    if not segments:
        if method == "POST":
            return Route(method, "transaction")
        if method == "GET":
            return Route(method, "search-system")
        return Route(method, "unknown", error=_not_allowed(method, "the FHIR base", ("GET", "POST")))
    head = segments[0]
    if head.startswith("$") or any(s.startswith("$") for s in segments[1:]):
        name = next(s for s in segments if s.startswith("$"))
        rtype = None if head.startswith("$") else head
        rid = segments[1] if len(segments) == 3 and rtype else None
        return Route(method, "operation", rtype, rid, operation=name)
    if segments == ["metadata"]:
        return Route(method, "capabilities")
    if segments == ["_history"]:
        return Route(method, "history-system")
    if len(segments) == 1:
        return Route(method, {"GET": "search-type", "POST": "create", "PUT": "update", "PATCH": "patch",
                              "DELETE": "delete"}.get(method, "unknown"), head)
    second = segments[1]
    if len(segments) == 2 and second == "_search":
        return Route(method, "search-type", head, posted_search=True)
    if len(segments) == 2 and second == "_history":
        return Route(method, "history-type", head)
    if len(segments) == 2:
        return Route(method, {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, "unknown"), head, second)
    if segments[2] == "_history" and len(segments) == 3:
        return Route(method, "history-instance", head, second)
    if segments[2] == "_history" and len(segments) == 4:
        return Route(method, "vread", head, second, segments[3])
    return Route(method, "unknown", head, error=NotFound(f"No FHIR endpoint at /{'/'.join(segments)}"))


def _resolve(ctx: FhirContext, req: FhirRequest, shape: Route) -> Route:
    """The handler of ``shape``, with its checks: types, ids, methods, parameters."""
    method, interaction = shape.method, shape.interaction
    if interaction == "transaction":
        return dataclasses.replace(shape, handler=lambda c, r: transaction.process_bundle(c, r, handle, preflight))
    if interaction == "capabilities":
        _allow(method, ("GET",), "metadata")
        return dataclasses.replace(shape, handler=capability.capabilities)
    if interaction == "history-system":
        _allow(method, ("GET",), "_history")
        return dataclasses.replace(shape, handler=history.history_system)
    if interaction == "search-system":
        planned = search_system.plans(ctx, req, storable_types())
        return dataclasses.replace(shape, plans=planned,
                                   handler=lambda c, r: search_system.search_system(c, r, planned))
    if interaction == "operation":
        return _operation(ctx, req, shape)
    rtype = _resource_type(shape.rtype or "")
    if interaction == "search-type":
        if shape.posted_search:
            _allow(method, ("POST",), f"{rtype}/_search")
        params = (*req.query, *(search.form(req) if method == "POST" else ()))
        plan = parse_search(rtype, list(params), ctx.registry, ctx.settings.limits, req.strict, ctx.code_sets(),
                            ignore_empty=req.ignores_empty)
        return dataclasses.replace(shape, plan=plan,
                                   handler=lambda c, r: search.search_type(c, r, plan))
    if shape.rid is not None:
        return _instance(shape, rtype, check_id(shape.rid))
    if interaction == "history-type":
        _allow(method, ("GET",), f"{rtype}/_history")
        return dataclasses.replace(shape, handler=lambda c, r: history.history_type(c, r, rtype))
    if interaction == "unknown":
        raise _not_allowed(method, rtype, tuple(TYPE))
    if interaction == "create":
        criteria = req.header("if-none-exist")
        wanted = ctx.criteria_plan(rtype, criteria_pairs(criteria)) if criteria else None
        return dataclasses.replace(shape, plan=wanted, handler=lambda c, r: create.create(c, r, rtype, wanted))
    if not req.query:  # conditional update, patch, delete
        raise _not_allowed(method, rtype, ("GET", "POST"), hint=f"{method} needs an id, or search criteria")
    found = parse_search(rtype, list(req.query), ctx.registry, ctx.settings.limits, strict=True,
                         code_sets=ctx.code_sets())
    conditional = TYPE[method][1]
    return dataclasses.replace(shape, plan=found,
                               handler=lambda c, r: conditional(c, r, rtype, found))


def _instance(shape: Route, rtype: str, rid: str) -> Route:
    """Read, update, patch, delete, history and vread of one resource."""
    method, interaction = shape.method, shape.interaction
    if interaction == "history-instance":
        _allow(method, ("GET",), "_history")
        return dataclasses.replace(shape, handler=lambda c, r: history.history_instance(c, r, rtype, rid))
    if interaction == "vread":
        _allow(method, ("GET",), "_history")
        vid = shape.vid or ""
        return dataclasses.replace(shape, handler=lambda c, r: read.vread(c, r, rtype, rid, vid))
    if interaction == "unknown":
        raise _not_allowed(method, f"{rtype}/{rid}", tuple(INSTANCE))
    handler = INSTANCE[method][1]
    return dataclasses.replace(shape, handler=lambda c, r: handler(c, r, rtype, rid))


def _operation(ctx: FhirContext, req: FhirRequest, shape: Route) -> Route:
    method, name = shape.method, shape.operation or ""
    segments = [s for s in req.path.split("/") if s]
    if name == "$validate" and len(segments) <= 2 and segments[-1] == name:  # [base]/$validate, [base]/Type/$validate
        _allow(method, ("POST",), "/".join(segments))
        rtype = _resource_type(segments[0]) if len(segments) == 2 else None
        return dataclasses.replace(shape, handler=lambda c, r: validate.validate(c, r, rtype))
    if segments[0] == name:  # $op, $op/{argument}...
        system = OPERATIONS.get(("", name)) or ctx.operations.get(("", name))
        if system is not None and system.level == "system" and len(segments) == 1 + system.arguments:
            _allow(method, system.methods, name)
            arguments = tuple(check_id(s) for s in segments[1:])
            return dataclasses.replace(shape, handler=lambda c, r: system.handler(c, r, *arguments))
    if len(segments) in (2, 3) and segments[-1] == name:  # Type/$op or Type/id/$op
        rtype = _resource_type(segments[0])
        found = OPERATIONS.get((rtype, name)) or ctx.operations.get((rtype, name))
        level = "type" if len(segments) == 2 else "instance"
        if found is not None and found.level != level and found.also is not None:
            found = found.also
        if found is not None and found.level == level:
            where = f"{rtype}/{name}" if level == "type" else f"{rtype}/{{id}}/{name}"
            _allow(method, found.methods, where)
            if level == "type":
                return dataclasses.replace(shape, handler=lambda c, r: found.handler(c, r, rtype))
            rid = check_id(segments[1])
            return dataclasses.replace(shape, handler=lambda c, r: _instance_operation(c, r, found, rtype, rid))
    raise NotFound(f"Operation {name} is not supported at /{req.path} by this server", code="not-supported")


def _instance_operation(ctx: FhirContext, req: FhirRequest, found: Operation, rtype: str, rid: str) -> FhirResponse:
    # unknown, or not among the records the actor may see: the same answer
    if found.stored and ctx.repo.current(rtype, rid) is None:
        raise not_found(rtype, rid)
    return found.handler(ctx, req, rtype, rid)


def _resource_type(name: str) -> str:
    if name not in r4().resource_types:
        raise NotFound(f"'{name}' is not a FHIR R4 resource type (names are case-sensitive, e.g. Patient)",
                       code="not-supported")
    if name in NOT_STORED:
        raise NotFound(f"{name} resources are not stored; they only carry operation parameters",
                       code="not-supported")
    return name


def _allow(method: str, allowed: tuple[str, ...], where: str) -> None:
    if method not in allowed:
        raise _not_allowed(method, where, allowed)


def _not_allowed(method: str, where: str, allowed: tuple[str, ...], hint: str = "") -> MethodNotAllowed:
    message = f"{method} is not allowed on {where}; allowed: {', '.join(allowed)}"
    return MethodNotAllowed(message + (f" ({hint})" if hint else ""), headers={"Allow": ", ".join(allowed)})


def describe(extra: Mapping[tuple[str, str], Operation] | None = None) -> dict[str, Any]:
    """The routing tables, for the CapabilityStatement (``extra``: the operations of use-case packages)."""
    return {
        "instance": [code for code, _ in INSTANCE.values()],
        "type": sorted({code for code, _ in TYPE.values()}),
        "history": [INSTANCE_HISTORY[0], TYPE_HISTORY[0], VREAD[0]],
        "system": list(SYSTEM),
        "operations": {key: value.canonical for key, value in {**OPERATIONS, **(extra or {})}.items()
                       if value.canonical},
    }
