"""The requests a worker process is serving, so that a worker killed by gunicorn's timeout still leaves an audit
entry for each (``record_aborted``, called by the ``worker_abort`` hook of ``dui serve``).

Each entry holds what an audit entry needs and nothing else: the request id, the actor (once known), the method,
the path without its query string (which may carry search values) and the client's address.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import text

from dui.audit import trail
from dui.auth.actor import ANONYMOUS, Actor
from dui.db import is_postgresql
from dui.fhir.interactions.base import FhirRequest
from dui.services import Services

logger = logging.getLogger("dui.security")
ABORTED_STATUS = 503  # what the client would have got; it gets a reset connection instead
_SQLITE_WAIT_MS = 500  # the hook has about a second before gunicorn kills the process


@dataclass
class InFlight:
    request_id: str
    method: str
    path: str
    remote: str | None
    actor: Actor = ANONYMOUS


_lock = threading.Lock()
_serving: dict[int, InFlight] = {}  # by thread


def started(request_id: str, method: str, path: str, remote: str | None) -> None:
    with _lock:
        _serving[threading.get_ident()] = InFlight(request_id, method, path, remote)


def identified(actor: Actor) -> None:
    entry = _serving.get(threading.get_ident())
    if entry is not None:
        entry.actor = actor


def finished() -> None:
    with _lock:
        _serving.pop(threading.get_ident(), None)


def serving() -> list[InFlight]:
    with _lock:
        return list(_serving.values())


def _take() -> list[InFlight]:
    """Every request in flight, forgotten at once: a second abort does not record them again."""
    with _lock:
        entries = list(_serving.values())
        _serving.clear()
        return entries


def _act(entry: InFlight) -> tuple[str, str | None, str | None]:
    """(action, resource type, resource id), as the FHIR edge records them."""
    if entry.path == "/fhir" or entry.path.startswith("/fhir/"):
        from dui.fhir.router import shape

        asked = shape(FhirRequest(method=entry.method, path=entry.path[5:].strip("/")))
        return asked.action, asked.rtype, asked.rid
    return "request", None, None


def record_aborted(svc: Services, reason: str = "worker-timeout") -> int:
    """Log, then write an audit entry (outcome ``error``) for each request still in flight; return how many."""
    entries = _take()
    if not entries:
        return 0
    now = svc.clock()
    for entry in entries:
        logger.warning("request aborted with its worker", extra={
            "reason": reason, "method": entry.method, "path": entry.path, "aborted_request": entry.request_id,
            "actor": entry.actor.id, "remote": entry.remote})
    session = svc.session_factory()
    try:
        if not is_postgresql(session):  # a request in flight may hold SQLite's write lock: do not wait for long
            session.execute(text(f"PRAGMA busy_timeout={_SQLITE_WAIT_MS}"))
        for entry in entries:
            action, rtype, rid = _act(entry)
            trail.record(session, trail.AuditEntry(
                action, "error", entry.actor, rtype, rid, reason, ABORTED_STATUS, entry.remote, entry.request_id,
                patients=(rid,) if rtype == "Patient" and rid else ()), now)
        session.commit()
    except Exception:
        session.rollback()
        logger.exception("audit entries of aborted requests not recorded", extra={"count": len(entries)})
        return 0
    finally:
        session.close()
    return len(entries)
