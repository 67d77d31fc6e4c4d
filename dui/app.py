"""The composition root: ``create_app(settings)`` builds the Flask app and everything it runs on."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from alembic.runtime.migration import MigrationContext
from flask import Flask, Response, jsonify

from dui import __version__, logs, migrations
from dui.clock import Clock, utc_now
from dui.services import Services
from dui.settings import Settings
from ins.insi.client import InsiClient


class DuiFlask(Flask):
    """Flask, deciding once per function whether it is a coroutine function: Flask asks ``inspect`` again for every
    hook and view of every request (7 times a read), and none here is one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        sync = self._sync.get(func)
        if sync is None:
            sync = self._sync[func] = self.async_to_sync(func) if inspect.iscoroutinefunction(func) else func
        return sync


def create_app(settings: Settings | None = None, clock: Clock = utc_now,
               insi: Callable[[], InsiClient] | None = None) -> Flask:
    """Build the app. Tests pass ``Settings(...)`` (and may pass an INSi client); otherwise the environment
    is read once, here."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, settings.log_json)
    app = DuiFlask("dui")
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["dui"] = Services.build(settings, clock, insi)

    from dui import cli
    from dui.web import audit, auth, context, errors, fhir, headers, params, proxies, staff, throttle, websocket
    from dui.web import metrics as metrics_endpoint

    if settings.http.trusted_proxies:  # the client's address, as the listed reverse proxies in front of us saw it
        app.wsgi_app = proxies.ClientAddress(app.wsgi_app, settings.http.trusted_proxies)  # type: ignore[method-assign]
    cli.register(app)
    context.register(app)  # first: the request id, on every answer and log line
    errors.register(app)
    headers.register(app)  # security headers; CORS preflights, answered before authentication
    params.register(app)  # the parameter-count limit, before any work
    throttle.register(app)  # rate limits, after authentication and before the handler
    audit.register(app)  # an audit entry for every answer no handler recorded (refused before it, or outside /fhir)
    app.register_blueprint(fhir.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(websocket.bp)  # the Subscriptions' websocket channel
    staff.register(app)
    metrics_endpoint.register(app)  # /metrics: Prometheus, for the monitoring system only

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", version=__version__)

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        """Ready when the database answers and its schema is at the code's migration head."""
        svc: Services = app.extensions["dui"]
        try:
            with svc.engine.connect() as conn:
                revision = MigrationContext.configure(conn).get_current_revision()
        except Exception:
            return jsonify(status="unavailable", database="unreachable"), 503
        if revision != migrations.head():
            return jsonify(status="unavailable", database="migrations pending; run `dui db upgrade`"), 503
        problem = svc.authenticator.problem()  # no usable token-signing key (production)
        if problem is not None:
            return jsonify(status="unavailable", database="ok", authentication=problem), 503
        return jsonify(status="ok", database="ok"), 200

    return app
