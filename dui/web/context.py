"""Per-request context: request id, actor, and the unit of work that owns the transaction.

One transaction per request: committed when the handler returns, rolled back when it raises
(nothing half-written survives a failed request).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dui import logs
from dui.auth.actor import ANONYMOUS, Actor
from dui.errors import DuiError
from dui.metrics import counters
from dui.replica import PRIMARY, REPLICA
from dui.services import Services
from dui.web import inflight
from dui.web.headers import stamp
from dui.web.metrics import interaction_of

logger = logging.getLogger("dui.access")
_UNCACHED = (("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))
_REQUEST_ID = re.compile(r"[A-Za-z0-9\-_.]{8,64}")


def services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


def current_actor() -> Actor:
    """Who is acting: the actor of the request's bearer token (``dui.auth.authenticator``), resolved once per
    request. ``Unauthorized`` (401) for a bad token, or for none where anonymous requests are not allowed;
    the CapabilityStatement is served without a token. A refusal is remembered too: the rate limit
    (``dui.web.throttle``) asks first, the handler raises it."""
    actor: Actor | None = g.get("actor")
    if actor is None:
        refused: DuiError | None = g.get("actor_refused")
        if refused is not None:
            raise refused
        public = request.method in ("GET", "HEAD") and request.path.rstrip("/") == "/fhir/metadata"
        try:
            actor = services().authenticator.actor_for(request.headers.get("Authorization"), public=public)
        except DuiError as exc:
            g.actor_refused = exc
            raise
        g.actor = actor
        inflight.identified(actor)
    return actor


@contextmanager
def unit_of_work(write: bool) -> Iterator[Session]:
    """The request's transaction (see ``Services.unit_of_work``), and the one place a request gets its session.

    With a read replica (``DUI_DATABASE_READ_URL``, ``dui.replica``): a writing unit runs on the primary and, once
    committed, marks where the actor's writes end in the WAL; a read-only unit runs on the replica when that has
    replayed the actor's last write and is not lagging, else on the primary. A read that fails on the replica with a
    database error sets ``g.replica_failed``: the caller runs it once more, on the primary."""
    svc = services()
    router = svc.reads
    if router is None:
        with svc.unit_of_work(write) as session:
            yield session
        return
    actor: Actor | None = g.get("actor")
    if write:
        with svc.unit_of_work(True) as session:
            yield session
        if actor is not None:
            router.mark(actor)
        return
    target, reason = router.choose(actor or ANONYMOUS)
    counters.count_read(target, reason)
    session = router.session(target)
    try:
        yield session
        if session.in_transaction():
            session.commit()
    except BaseException as exc:
        session.rollback()
        if target == REPLICA and isinstance(exc, DBAPIError):
            router.failed(exc)
            counters.count_read(PRIMARY, "failed")
            g.replica_failed = True
        raise
    finally:
        session.close()


def retry_on_primary(exc: BaseException) -> bool:
    """Whether a read that raised ``exc`` is to be run once more: its pooled connection died with a database
    restart, or the replica failed it (``unit_of_work``)."""
    if not isinstance(exc, DBAPIError):
        return False
    return bool(exc.connection_invalidated or g.pop("replica_failed", False))


def register(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()
        logs.request_id.set(g.request_id)
        inflight.started(g.request_id, request.method, request.path, request.remote_addr)  # for worker_abort

    @app.teardown_request
    def done(_error: BaseException | None) -> None:
        inflight.finished()

    @app.after_request
    def finish(response: Response) -> Response:
        stamp(response.headers, (("X-Request-Id", g.get("request_id", "-")),), _UNCACHED)
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # The path only: query strings carry search values (names, INS), which never go to logs.
        if logger.isEnabledFor(logging.INFO):
            logger.info("request", extra={"method": request.method, "path": request.path,
                                          "status": response.status_code, "ms": round(elapsed, 1)})
        # The same facts, for /metrics: the path only as the interaction it names, never an id.
        counters.record_request(interaction_of(request.method, request.path), response.status_code, elapsed / 1000)
        return response
