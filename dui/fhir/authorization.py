"""Authorization of FHIR requests: what each request reads or writes, checked against ``dui.auth.policy``.

The router calls ``authorize`` for every request and for every entry of a transaction or batch. A
request is refused (403, saying why) unless the actor may do all it asks: the interaction on its type,
and the search on every other type its query reaches (``_include``, ``_revinclude``, chains, ``_has``).
``Patient/$everything`` returns only the types the actor may read. A ``X-Break-Glass`` header (its value
is the reason) lets a health professional read medical data for one request; the audit trail records
the reason.
"""

from __future__ import annotations

from dui.auth.policy import Decision, may
from dui.errors import Forbidden
from dui.fhir.interactions.base import FhirContext, FhirRequest

BREAK_GLASS = "x-break-glass"
WRITES = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
IDENTITY_OPERATIONS = frozenset({"$ins-fetch", "$ins-verify", "$identity-check", "$identity-withdraw", "$merge",
                                 "$unmerge"})


def authorize(ctx: FhirContext, req: FhirRequest) -> None:
    """Raise ``Forbidden`` unless the actor may do everything the request asks."""
    if ctx.actor.kind in ("cli", "system", "anonymous"):
        return
    for permission, rtype in needs(ctx, req):
        decision = check(ctx, req, permission, rtype)
        if not decision:
            raise Forbidden(f"Not allowed: {decision.reason}")


def check(ctx: FhirContext, req: FhirRequest, permission: str, rtype: str) -> Decision:
    return may(ctx.actor, permission, rtype, ctx.policy, break_glass=req.header(BREAK_GLASS))


def needs(ctx: FhirContext, req: FhirRequest) -> list[tuple[str, str]]:
    """The (permission, resource type) pairs a request needs; permissions are SMART letters (cruds)."""
    parts = [p for p in req.path.split("/") if p]
    method = "GET" if req.method == "HEAD" else req.method
    if not parts or parts == ["metadata"]:
        return []  # a bundle's entries are authorized one by one; the CapabilityStatement is public
    if parts[0] == "_history":
        raise Forbidden("Not allowed: the history of the whole server spans every resource type; ask for the "
                        "history of a type or a resource")
    rtype = parts[0]
    operation = next((p for p in parts if p.startswith("$")), None)
    if operation == "$validate":
        return []  # checks the body it is given; reads and stores nothing
    if operation == "$everything":
        return [("r", rtype)]  # the types returned are filtered (``readable_types``)
    if operation in IDENTITY_OPERATIONS:
        return [("u", rtype)]
    if operation == "$match":
        return [("s", rtype)]
    if operation:
        return [("r", rtype)]
    out: list[tuple[str, str]] = []
    if method == "GET" or parts[-1] == "_search":
        instance = len(parts) >= 2 and parts[1] not in ("_history", "_search")
        out.append(("r" if instance else "s", rtype))
    else:
        out.append((WRITES[method], rtype))
        if len(parts) == 1 and req.query:
            out.append(("s", rtype))  # conditional interactions search first
    out += [("s", other) for other in reached_types(ctx, rtype, req)]
    return out


def reached_types(ctx: FhirContext, rtype: str, req: FhirRequest) -> list[str]:
    """Other resource types a search's parameters read: includes, chains and ``_has``."""
    found: list[str] = []
    for name, value in req.query:
        base = name.split(":", 1)[0]
        if base in ("_include", "_revinclude"):
            found += _include_types(ctx, rtype, base == "_revinclude", value)
        elif base == "_has":
            found += [p for p in name.split(":")[1::3] if p]  # _has:Type:param:...
        elif "." in name:  # a chain: param[:Type].child
            head = name.split(".", 1)[0]
            code, _, target = head.partition(":")
            param = ctx.registry.get(rtype, code)
            found += [target] if target else list(param.targets if param else ())
    return [t for t in dict.fromkeys(found) if t and t != rtype]


def _include_types(ctx: FhirContext, rtype: str, reverse: bool, value: str) -> list[str]:
    if value == "*":
        raise Forbidden("Not allowed: name the types to include (a wildcard _include can reach any type)")
    source, _, rest = value.partition(":")
    code, _, target = rest.partition(":")
    if reverse:
        return [source]
    param = ctx.registry.get(source or rtype, code)
    return [target] if target else list(param.targets if param else ())
