"""What the HTTP edge records in the audit trail: one entry for every request (but health probes, CORS preflights
and throttled requests, docs/security.md "Audit trail").

A FHIR request is described by its ``Route`` (the same value that routed and authorized it) and the residents of
the data it served or wrote: ``FhirResponse.versions()`` read with ``Residents.of``, the compartment rule that
scoping applies (``dui.fhir.scope``). A request refused anywhere (before or inside the FHIR handler, or outside
/fhir) is recorded with its status; ``ensure_recorded`` runs after every answer and records what nothing else did.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Any

import orjson
from flask import Flask, Response, g, request
from sqlalchemy.orm import Session

from dui.audit import trail
from dui.auth.actor import ANONYMOUS, Actor
from dui.errors import DuiError
from dui.fhir.authorization import BREAK_GLASS
from dui.fhir.interactions.base import FhirRequest, FhirResponse
from dui.fhir.router import Route
from dui.fhir.scope import Residents
from dui.services import Services
from dui.web.context import current_actor

logger = logging.getLogger("dui.audit")
Where = tuple[str | None, str | None]  # remote address, request id
NOT_RECORDED = frozenset({"/healthz", "/readyz", "/metrics"})


def register(app: Flask) -> None:
    svc: Services = app.extensions["dui"]

    @app.after_request
    def recorded(response: Response) -> Response:
        ensure_recorded(svc, response.status_code)
        return response


def mark_recorded() -> None:
    """This request's entry is written (``ensure_recorded`` leaves it alone)."""
    g.audit_recorded = True


def record_fhir(session: Session, svc: Services, now: datetime, actor: Actor, req: FhirRequest, route: Route,
                result: FhirResponse, where: Where) -> int:
    """A FHIR write answered, in the write's transaction. Returns the entry's number, for ``void_lost`` should that
    transaction fail to commit."""
    seq = trail.record(session, fhir_entry(svc, actor, req, route, result, where), now)
    mark_recorded()
    return seq


def record_fhir_read(svc: Services, actor: Actor, req: FhirRequest, route: Route, result: FhirResponse,
                     where: Where) -> None:
    """A FHIR read answered: committed with other threads' entries (``dui.audit.writer``) before the answer is
    sent. Raises if it could not be written: nothing is served unrecorded."""
    svc.audit_writer.record(fhir_entry(svc, actor, req, route, result, where))
    mark_recorded()


def fhir_entry(svc: Services, actor: Actor, req: FhirRequest, route: Route, result: FhirResponse,
               where: Where) -> trail.AuditEntry:
    patients = residents_of(svc.residents, route, result)
    body = result.body
    count = len(body.get("entry") or []) if isinstance(body, dict) and body.get("resourceType") == "Bundle" else None
    rid = result.version.id if route.interaction == "create" and result.version is not None else route.rid
    glass = req.header(BREAK_GLASS)
    return trail.AuditEntry(route.action, "success", actor, route.rtype, rid,
                            route.operation or ("break-the-glass" if glass else None), result.status, where[0],
                            where[1], purpose=glass, count=count, patients=tuple(sorted(patients)))


# How strongly an interaction acts, to name a staff API request after its strongest one.
_WEIGHT = {"create": 4, "update": 4, "patch": 4, "delete": 4, "transaction": 4, "operation": 3, "read": 1,
           "vread": 1, "search": 2, "history": 2}


def record_api(session: Session, svc: Services, now: datetime, actor: Actor, endpoint: str,
               calls: list[tuple[Route, FhirResponse]], status: int, where: Where,
               patients: set[str] | None = None) -> int:
    """A staff API request that wrote, in its transaction (see ``api_entry``)."""
    seq = trail.record(session, api_entry(svc, actor, endpoint, calls, status, where, patients), now)
    mark_recorded()
    return seq


def record_api_read(svc: Services, actor: Actor, endpoint: str, calls: list[tuple[Route, FhirResponse]],
                    status: int, where: Where, patients: set[str] | None = None) -> None:
    """A staff API request that only read, committed before the answer is sent (as ``record_fhir_read``)."""
    svc.audit_writer.record(api_entry(svc, actor, endpoint, calls, status, where, patients))
    mark_recorded()


def api_entry(svc: Services, actor: Actor, endpoint: str, calls: list[tuple[Route, FhirResponse]], status: int,
              where: Where, patients: set[str] | None = None) -> trail.AuditEntry:
    """A staff API request answered (``dui.web.staff``): one entry naming its endpoint, the strongest FHIR
    interaction it ran, and every resident whose data those interactions served or wrote (as ``record_fhir``
    reads them) or the use case read outside FHIR (``patients``)."""
    found = set(patients or ())
    for route, result in calls:
        found |= residents_of(svc.residents, route, result)
    main = max(calls, key=lambda c: _WEIGHT.get(c[0].action, 0))[0] if calls else None
    return trail.AuditEntry(main.action if main else "request", "success", actor, main.rtype if main else None,
                            main.rid if main else None, f"api {endpoint}", status, where[0], where[1],
                            patients=tuple(sorted(found)))


def record_api_refusal(svc: Services, actor: Actor, endpoint: str, route: Route | None, status: int,
                       patients: tuple[str, ...], where: Where) -> None:
    """A staff API request refused or failed (in a transaction of its own: the request's was rolled back)."""
    outcome = "denied" if status in (401, 403) else ("error" if status >= 500 else "failed")
    named = (route.rid,) if route is not None and route.rtype == "Patient" and route.rid else ()
    entry = trail.AuditEntry(route.action if route else "request", outcome, actor, route.rtype if route else None,
                             route.rid if route else None, f"api {endpoint}", status, where[0], where[1],
                             patients=tuple(sorted({*named, *patients})))
    record_apart(svc, entry)
    mark_recorded()


def void_lost(svc: Services, seq: int, request_id: str | None) -> None:
    """The transaction holding entry ``seq`` failed to commit: say so, so that the gap it leaves in the numbering
    is explained (``dui audit verify``). The failure is recorded as a refusal afterwards."""
    try:
        with svc.unit_of_work(write=True) as session:
            trail.void(session, seq, svc.clock(), request_id=request_id)
    except Exception:
        logger.exception("audit void not recorded", extra={"seq": seq})
    g.audit_recorded = False  # the success entry is gone: the refusal takes its place


def record_refusal(svc: Services, actor: Actor, route: Route, status: int, category: str,
                   patients: tuple[str, ...], where: Where) -> None:
    """A refused or failed FHIR request, in a transaction of its own (the request's was rolled back)."""
    outcome = "denied" if status in (401, 403) else ("error" if status >= 500 else "failed")
    named = (route.rid,) if route.rtype == "Patient" and route.rid else ()
    entry = trail.AuditEntry(route.action, outcome, actor, route.rtype, route.rid, route.operation or category,
                             status, where[0], where[1], patients=tuple(sorted({*named, *patients})))
    record_apart(svc, entry)


def refusal_of(exc: BaseException) -> tuple[int, str, tuple[str, ...]]:
    """(status, category, residents the refusal concerns) of an exception that ends a request."""
    if isinstance(exc, DuiError):
        return exc.status, type(exc).__name__, exc.patients
    code = getattr(exc, "code", None)  # werkzeug's HTTPException (413 ...)
    return (code if isinstance(code, int) else 500), type(exc).__name__, ()


def ensure_recorded(svc: Services, status: int) -> None:
    """After every answer: record a request no handler recorded (outside /fhir, or refused before it)."""
    if g.get("audit_recorded") or request.method == "OPTIONS" or status == 429:
        return
    path = request.path.rstrip("/") or "/"
    if path in NOT_RECORDED:
        return
    outcome = "success" if status < 400 else ("denied" if status in (401, 403) else
                                             "error" if status >= 500 else "failed")
    actor = _actor()
    entry = trail.AuditEntry("request", outcome, actor, None, None, f"{request.method} {path}"[:64], status,
                             request.remote_addr, g.get("request_id"))
    record_apart(svc, entry)
    mark_recorded()


def _actor() -> Actor:
    """Who made a request no handler looked at: its token's actor when it has a valid one."""
    if g.get("actor") is None and request.headers.get("Authorization"):
        with contextlib.suppress(DuiError):  # a refused token: the request was anonymous
            current_actor()
    actor: Actor = g.get("actor") or ANONYMOUS
    return actor


def residents_of(residents: Residents, route: Route, result: FhirResponse) -> set[str]:
    """The residents whose data ``result`` served or wrote; the Patient an instance request names."""
    found: set[str] = set()
    versions = result.versions()
    for version in versions:
        if version.body is None:
            continue
        if version.type == "Patient":  # a Patient is its own resident: its stored id, without parsing its body
            found.add(version.id)
        else:
            found |= residents.of(version.type, version.resource())
    if not versions:  # an operation's own answer (Parameters, a Bundle it built)
        payload = orjson.loads(result.body) if isinstance(result.body, bytes) and result.body else result.body
        for resource in _resources(payload):
            rtype = resource.get("resourceType")
            if isinstance(rtype, str):
                found |= residents.of(rtype, resource)
    if route.rtype == "Patient" and route.rid:
        found.add(route.rid)
    return found


def record_apart(svc: Services, entry: trail.AuditEntry) -> None:
    """An entry outside any request transaction (a refusal, an answer no handler recorded), committed before the
    answer is sent (``dui.audit.writer``)."""
    try:
        svc.audit_writer.record(entry)
    except Exception:  # the answer must still reach the client; the log says an entry is missing
        logger.exception("audit entry not recorded", extra={"status": entry.status, "action": entry.action})


def _resources(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        return []
    if payload.get("resourceType") == "Bundle":
        out = []
        for entry in payload.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                out.extend(_resources(entry["resource"]))
        return out
    if payload.get("resourceType") == "Parameters":
        return [p["resource"] for p in payload.get("parameter") or [] if isinstance(p, dict)
                and isinstance(p.get("resource"), dict)]
    return [payload]
