"""Per-request context: request id, actor, and the unit of work that owns the transaction.

One transaction per request: committed when the handler returns, rolled back when it raises
(nothing half-written survives a failed request).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextlib import AbstractContextManager

from flask import Flask, Response, current_app, g, request
from sqlalchemy.orm import Session

from dui import logs
from dui.auth.actor import Actor
from dui.errors import DuiError
from dui.metrics import counters
from dui.services import Services
from dui.web import inflight
from dui.web.metrics import interaction_of

logger = logging.getLogger("dui.access")
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


def unit_of_work(write: bool) -> AbstractContextManager[Session]:
    """The request's transaction (see ``Services.unit_of_work``)."""
    return services().unit_of_work(write)


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
        response.headers["X-Request-Id"] = g.get("request_id", "-")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        # The path only: query strings carry search values (names, INS), which never go to logs.
        logger.info("request", extra={"method": request.method, "path": request.path,
                                      "status": response.status_code, "ms": round(elapsed, 1)})
        # The same facts, for /metrics: the path only as the interaction it names, never an id.
        counters.record_request(interaction_of(request.method, request.path), response.status_code, elapsed / 1000)
        return response
