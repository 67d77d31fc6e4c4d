"""FHIR REST routing: (method, path) -> interaction. Framework-free.

The tables below are the single list of what the API implements; the CapabilityStatement is
generated from them (``dui.fhir.interactions.capability``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dui.errors import MethodNotAllowed, NotFound
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
    transaction,
    update,
    validate,
)
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse, Operation, check_id

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
SYSTEM = ("transaction", "batch", "history-system")
# (resource type, operation) -> the operation; use-case packages add theirs through ``FhirContext.operations``
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("Patient", "$everything"): Operation("http://hl7.org/fhir/OperationDefinition/Patient-everything", ("GET",),
                                          "instance", everything.everything),
}


def storable_types() -> list[str]:
    return sorted(r4().resource_types - NOT_STORED)


def handle(ctx: FhirContext, req: FhirRequest) -> FhirResponse:
    """Route one request (after authorizing it). Raises ``DuiError`` subclasses for every client mistake."""
    authorize(ctx, req)
    method = "GET" if req.method == "HEAD" else req.method
    segments = [s for s in req.path.split("/") if s]
    if not segments:
        if method == "POST":
            return transaction.process_bundle(ctx, req, handle)
        raise _not_allowed(method, "the FHIR base", ("POST",), hint="search a resource type, e.g. GET /fhir/Patient")
    head = segments[0]
    if head == "metadata" and len(segments) == 1:
        _allow(method, ("GET",), "metadata")
        return capability.capabilities(ctx, req)
    if head == "_history" and len(segments) == 1:
        _allow(method, ("GET",), "_history")
        return history.history_system(ctx, req)
    if head.startswith("$") or any(s.startswith("$") for s in segments[1:]):
        return _operation(ctx, req, method, segments)
    rtype = _resource_type(head)
    if len(segments) == 1:
        if method not in TYPE:
            raise _not_allowed(method, rtype, tuple(TYPE))
        if method in ("PUT", "PATCH", "DELETE") and not req.query:
            raise _not_allowed(method, rtype, ("GET", "POST"), hint=f"{method} needs an id, or search criteria")
        return TYPE[method][1](ctx, req, rtype)
    second = segments[1]
    if len(segments) == 2 and second == "_search":
        _allow(method, ("POST",), f"{rtype}/_search")
        return search.search_type(ctx, req, rtype)
    if len(segments) == 2 and second == "_history":
        _allow(method, ("GET",), f"{rtype}/_history")
        return TYPE_HISTORY[1](ctx, req, rtype)
    if len(segments) == 2:
        if method not in INSTANCE:
            raise _not_allowed(method, f"{rtype}/{second}", tuple(INSTANCE))
        return INSTANCE[method][1](ctx, req, rtype, second)
    if segments[2] == "_history" and len(segments) == 3:
        _allow(method, ("GET",), "_history")
        return INSTANCE_HISTORY[1](ctx, req, rtype, second)
    if segments[2] == "_history" and len(segments) == 4:
        _allow(method, ("GET",), "_history")
        return VREAD[1](ctx, req, rtype, second, segments[3])
    raise NotFound(f"No FHIR endpoint at /{req.path}")


def _operation(ctx: FhirContext, req: FhirRequest, method: str, segments: list[str]) -> FhirResponse:
    name = next(s for s in segments if s.startswith("$"))
    if name == "$validate" and len(segments) <= 2 and segments[-1] == name:  # [base]/$validate, [base]/Type/$validate
        _allow(method, ("POST",), "/".join(segments))
        return validate.validate(ctx, req, _resource_type(segments[0]) if len(segments) == 2 else None)
    if len(segments) in (2, 3) and segments[-1] == name:  # Type/$op or Type/id/$op
        rtype = _resource_type(segments[0])
        found = OPERATIONS.get((rtype, name)) or ctx.operations.get((rtype, name))
        level = "type" if len(segments) == 2 else "instance"
        if found is not None and found.level == level:
            where = f"{rtype}/{name}" if level == "type" else f"{rtype}/{{id}}/{name}"
            _allow(method, found.methods, where)
            if level == "type":
                return found.handler(ctx, req, rtype)
            rid = check_id(segments[1])
            if ctx.repo.current(rtype, rid) is None:  # unknown (a scoped repository refuses what the actor may not see)
                raise NotFound(f"{rtype}/{rid} does not exist")
            return found.handler(ctx, req, rtype, rid)
    raise NotFound(f"Operation {name} is not supported at /{req.path} by this server", code="not-supported")


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
        "operations": {key: value.canonical for key, value in {**OPERATIONS, **(extra or {})}.items()},
    }
