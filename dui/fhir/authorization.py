"""Authorization of FHIR requests: what each routed request reads or writes, checked against ``dui.auth.policy``.

The router reads a request once (``dui.fhir.router.Route``: interaction, type, id, operation, the full parameter
set of the query and of a ``_search`` form, the parsed search or conditional criteria) and calls ``authorize``
with it before the interaction runs, for every HTTP request and every entry of a transaction or batch. A request
is refused (403, saying why) unless the actor may do all it asks: the interaction on its type, and the search on
every other type its criteria test or its includes return (``SearchPlan.touched_types``: chains and ``_has`` on
every hop, ``_list``, ``_include``, ``_revinclude``, ``:iterate``). Criteria searched inside an interaction (a
transaction's conditional references and conditional entries) go through ``FhirContext.criteria_plan``, which
applies the same rule before any SQL.

What cannot be known from the request alone is checked where it becomes known, with ``FhirContext.require``: a
``PUT`` to an id that does not exist (or that the actor may not see) creates, so it needs ``c``.
``Patient/$everything`` returns only the types the actor may read. A ``X-Break-Glass`` header (its value is the
reason) lets a health professional read medical data for one request; the audit trail records the reason.
Who may see which resident is the other half of access control: ``dui.fhir.scope``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dui.fhir.interactions.base import FhirContext

if TYPE_CHECKING:
    from dui.fhir.router import Route

BREAK_GLASS = "x-break-glass"
WRITES = {"create": "c", "update": "u", "patch": "u", "delete": "d"}
IDENTITY_OPERATIONS = frozenset({"$ins-fetch", "$ins-verify", "$identity-check", "$identity-withdraw", "$merge",
                                 "$unmerge"})

DOCUMENT_OPERATIONS = frozenset({"$dlu", "$fludt"})
# A bulk export's kick-off checks the types its caller may read and who may export at all; its status and files are
# the requester's own (``dui.bulk.operations``).
BULK_OPERATIONS = frozenset({"$export", "$export-status", "$export-file"})
# Terminology operations read the value sets and code systems in force, never a record (``interactions.terminology``).
TERMINOLOGY_OPERATIONS = frozenset({"$expand", "$lookup", "$validate-code", "$subsumes"})


def authorize(ctx: FhirContext, route: Route) -> None:
    """Raise ``Forbidden`` unless the actor may do everything the routed request asks."""
    if ctx.unrestricted:
        return
    for permission, rtype in needs(route):
        ctx.require(permission, rtype)
    if route.plan is not None:  # a search, or the criteria of a conditional interaction: every type it reaches
        ctx.require_search(route.plan)
    for plan in route.plans:  # a system search: each type's
        ctx.require_search(plan)


def needs(route: Route) -> list[tuple[str, str]]:
    """The (permission, resource type) pairs a routed request needs; permissions are SMART letters (cruds)."""
    interaction, rtype = route.interaction, route.rtype
    if interaction in ("capabilities", "transaction") or route.operation == "$validate":
        return []  # a bundle's entries are authorized one by one; $validate reads and stores nothing
    if interaction == "search-system":
        return []  # each type's plan is authorized as a search (``Route.plans``)
    if interaction == "history-system":
        return []  # the types the actor may search, filtered by the interaction (``history_system``)
    if interaction == "operation" and route.operation in BULK_OPERATIONS:
        return []
    if interaction == "operation" and route.rtype in ("ValueSet", "CodeSystem") and \
            route.operation in TERMINOLOGY_OPERATIONS:
        return []  # the terminology in force (packages, base R4): no record is read
    assert rtype is not None
    if interaction == "operation":
        if route.operation == "$everything":
            return [("r", rtype)]  # the types returned are filtered (``readable_types``)
        if route.operation in IDENTITY_OPERATIONS:
            return [("u", rtype)]
        if route.operation in DOCUMENT_OPERATIONS:
            # The service builds the document from the record: whoever may read the resident and her documents
            # may have it built (the night nurse prints the FLUDT as she calls the ambulance).
            return [("r", rtype), ("r", "DocumentReference"), ("r", "Binary")]
        return [("s" if route.operation == "$match" else "r", rtype)]
    if interaction in ("read", "vread", "history-instance"):
        return [("r", rtype)]
    if interaction in ("search-type", "history-type"):
        return [("s", rtype)]
    return [(WRITES[interaction], rtype)]
