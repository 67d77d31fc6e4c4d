"""``/metrics``: the service's Prometheus metrics (docs/metrics.md), for the monitoring system only.

Who may read them: with ``DUI_METRICS_TOKEN`` set, a request that presents it (``Authorization: Bearer <token>``,
compared in constant time) and no other (401). Without it: in ``dev``, requests from a loopback address only (the
client's address as ``DUI_TRUSTED_PROXIES`` lets it be read: a request forwarded by a listed proxy is judged by
its client, not by the proxy); in ``prod``, nobody (404): a proxy on the same host would otherwise make every
caller look local. The metrics hold no health data whoever reads them, but they describe the service's load and
failures. Not rate-limited (a scrape must get through when the API is flooded) and not in the audit trail.

``interaction_of`` names what a request asked for the request metrics, from its method and path alone: the FHIR
interaction (``dui.fhir.router.shape``, the audit trail's action names), or the part of the service it called.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.wrappers import Request

from dui.errors import DuiError, Forbidden, NotFound, Unauthorized
from dui.fhir import router
from dui.fhir.interactions.base import FhirRequest
from dui.metrics import counters
from dui.metrics.database import DatabaseCollector
from dui.metrics.exposition import Exposition
from dui.services import Services
from dui.settings import Settings

PATH = "/metrics"
_PARTS = (("/api", "api"), ("/auth", "auth"), ("/.well-known", "auth"), ("/ws", "websocket"))


def register(app: Flask) -> None:
    svc: Services = app.extensions["dui"]
    collector = DatabaseCollector(svc.settings.database_url, svc.clock, kinds=tuple(svc.outbox_handlers))
    exposition = Exposition((collector,))
    app.extensions["dui.metrics"] = exposition  # dui serve names its run directory here (multiprocess mode)
    counters.watch_pool(svc.engine)

    @app.get(PATH)
    def metrics() -> Response:
        check_access(svc.settings, request.headers.get("Authorization"), request.remote_addr)
        body, content_type = exposition.render(request.headers.get("Accept"))
        return Response(body, content_type=content_type)


def standalone(settings: Settings) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """The WSGI app of ``dui worker --metrics-port``: ``/metrics`` alone, under the same rule, with the worker's own
    metrics (its outbox deliveries, its MSSanté polls, its database pool); the database gauges are the web's."""
    exposition = Exposition()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            if (request.path.rstrip("/") or "/") != PATH or request.method not in ("GET", "HEAD"):
                raise NotFound(f"Only GET {PATH} is served here")
            check_access(settings, request.headers.get("Authorization"), request.remote_addr)
            body, content_type = exposition.render(request.headers.get("Accept"))
            response = Response(body, content_type=content_type)
        except DuiError as exc:
            problem = {"type": "about:blank", "title": exc.message, "status": exc.status}
            response = Response(orjson.dumps(problem), status=exc.status, headers=dict(exc.headers or {}),
                                content_type="application/problem+json")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response(environ, start_response)

    return app


def check_access(settings: Settings, authorization: str | None, peer: str | None) -> None:
    """Raise unless the caller may read the metrics (the module's docstring says who may)."""
    token = settings.metrics.token
    if token is not None:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise Unauthorized("The metrics are served to the monitoring system's token only "
                               "(Authorization: Bearer <DUI_METRICS_TOKEN>)",
                               headers={"WWW-Authenticate": 'Bearer realm="dui-metrics"'})
        return
    if settings.is_prod:
        raise NotFound(f"No endpoint at {PATH}")
    if not _loopback(peer):
        raise Forbidden("Without DUI_METRICS_TOKEN, the metrics are served to this machine only")


def interaction_of(method: str, path: str) -> str:
    """The request metrics' name for a request: a FHIR interaction (read, vread, search, history, create, update,
    patch, delete, transaction, operation, capabilities), api, auth, websocket, health, metrics, or other."""
    if path == "/fhir" or path.startswith("/fhir/"):
        action = router.shape(FhirRequest(method, path[len("/fhir"):].lstrip("/"))).action
        return "other" if action == "request" else action
    trimmed = path.rstrip("/") or "/"
    if trimmed in ("/healthz", "/readyz"):
        return "health"
    if trimmed == PATH:
        return "metrics"
    for prefix, name in _PARTS:
        if trimmed == prefix or trimmed.startswith(prefix + "/"):
            return name
    return "other"


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
