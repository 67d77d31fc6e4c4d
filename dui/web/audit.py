"""What the FHIR edge records in the audit trail for each request: the act read from the method and
path, the outcome, and the residents the response touched (``dui.audit.subjects``)."""

from __future__ import annotations

import logging
from datetime import datetime

import orjson

from dui.audit import trail
from dui.audit.subjects import patients_in
from dui.auth.actor import Actor
from dui.fhir.interactions.base import FhirRequest, FhirResponse
from dui.services import Services

logger = logging.getLogger("dui.audit")
Where = tuple[str | None, str | None]  # remote address, request id


def act(req: FhirRequest) -> tuple[str, str | None, str | None, str | None]:
    """(action, detail, resource type, resource id) of a FHIR request."""
    parts = [p for p in req.path.split("/") if p]
    method = "GET" if req.method == "HEAD" else req.method
    operation = next((p for p in parts if p.startswith("$")), None)
    rtype = parts[0] if parts and not parts[0].startswith(("$", "_")) else None
    rid = parts[1] if len(parts) > 1 and not parts[1].startswith(("$", "_")) else None
    if operation:
        return "operation", operation, rtype, rid
    if not parts:
        return ("transaction" if method == "POST" else "search"), None, None, None
    if "_history" in parts:
        return ("vread" if len(parts) == 4 else "history"), None, rtype, rid
    if method == "GET":
        return ("read" if rid else "search"), None, rtype, rid
    if parts[-1] == "_search":
        return "search", None, rtype, None
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method], None, rtype, rid


def record_fhir(session: object, now: datetime, actor: Actor, req: FhirRequest, result: FhirResponse,
                where: Where) -> None:
    action, detail, rtype, rid = act(req)
    body = result.body  # bytes: the web edge encodes the response once (dui.web.fhir)
    payload = orjson.loads(body) if isinstance(body, bytes) and body else None
    patients = patients_in(payload)
    if rtype == "Patient" and rid:
        patients = [rid, *patients]
    if action == "create" and result.version is not None:
        rid = result.version.id
    count = len(payload.get("entry") or []) if isinstance(payload, dict) and payload.get(
        "resourceType") == "Bundle" else None
    glass = req.header("x-break-glass")
    entry = trail.AuditEntry(action, "success", actor, rtype, rid, detail or ("break-the-glass" if glass else None),
                             result.status, where[0], where[1], purpose=glass, count=count, patients=tuple(patients))
    trail.record(session, entry, now)  # type: ignore[arg-type]


def record_refusal(svc: Services, actor: Actor, req: FhirRequest, status: int, category: str, where: Where) -> None:
    """Record a refused or failed request in a transaction of its own (the request's was rolled back)."""
    action, detail, rtype, rid = act(req)
    outcome = "denied" if status in (401, 403) else ("error" if status >= 500 else "failed")
    patients = (rid,) if rtype == "Patient" and rid else ()
    entry = trail.AuditEntry(action, outcome, actor, rtype, rid, detail or category, status, where[0], where[1],
                             patients=patients)
    try:
        with svc.unit_of_work(write=True) as session:
            trail.record(session, entry, svc.clock())
    except Exception:  # the refusal itself must still reach the client
        logger.exception("audit entry of a refused request not recorded", extra={"status": status})
