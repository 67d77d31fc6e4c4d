"""The app as each worker process of ``dui serve`` builds it, under either server: created once, its profiles warmed
up before it takes a request, its ``/metrics`` summing every worker's files in the run's directory.

gunicorn calls ``build`` from its application's ``load`` (``dui.cli.serve``). granian loads a WSGI target by import
string in each worker it spawns: ``dui serve --server granian`` names ``from_environment`` (a factory), which finds
the run's metrics directory in ``PROMETHEUS_MULTIPROC_DIR``, set by ``dui serve`` before any worker starts
(``dui.metrics.exposition.run_directory``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from flask import Flask, current_app, g, request

from dui.audit import trail
from dui.auth.actor import ANONYMOUS
from dui.errors import DuiError
from dui.metrics import exposition
from dui.web import limits
from dui.web.audit import mark_recorded, record_apart

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("dui.profiles")
TARGET = f"{__name__}:from_environment"
# What granian itself writes in every request's environ over its copy of the process environment
_GRANIAN_KEYS = frozenset({"GATEWAY_INTERFACE", "SCRIPT_NAME", "SERVER_SOFTWARE", "REQUEST_METHOD", "PATH_INFO",
                           "QUERY_STRING", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR"})


def preload() -> None:
    """What every worker would load the same, loaded once in the process that forks them (gunicorn's arbiter): the
    app's modules and the R4 definitions they read (pure data: no database connection, thread or metrics file
    exists before the fork). Each worker then only builds the app: start-up to the first answer 3.3 -> 2.6 s with
    two workers on a loaded machine (bench/startup.py, docs/benchmarks.md)."""
    import dui.app  # noqa: F401
    from dui.fhir.definitions import r4
    from fhir_profiles import base

    r4()
    base.structures()


def build(metrics_directory: Path | None) -> Flask:
    from dui.app import create_app

    app = create_app()
    publish_api_base(app)
    app.extensions["dui"].profiles.warm_up()  # in each worker, before it takes requests
    app.extensions["dui.metrics"].directory = metrics_directory  # /metrics sums every worker's
    return app


def publish_api_base(app: Flask) -> None:
    """The served OperationDefinitions and SearchParameters name the api base in force (``Services.publish_api_base``:
    the first worker to start syncs them after a change of ``DUI_BASE_URL`` or ``DUI_CANONICAL_BASE``), in one log
    line. A failure is logged and the worker serves on: the served definitions are then stale, not the data."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        changed = app.extensions["dui"].publish_api_base()
    except (DuiError, SQLAlchemyError) as exc:
        message = exc.message if isinstance(exc, DuiError) else type(exc).__name__
        logger.error("conformance resources not synced with the api base %s: %s; run `dui profiles sync`",
                     app.extensions["dui"].settings.api_canonical_base, message)
        return
    if changed is not None:
        recorded, served = changed
        logger.info("conformance resources served under /fhir: api base %s (was %s): %d added, %d changed, "
                    "%d removed", app.extensions["dui"].settings.api_canonical_base, recorded or "not recorded",
                    served.created, served.updated, served.deleted)


def from_environment() -> WSGIApplication:
    """granian's factory (``--factory``), called once in each worker process it spawns (and respawns).

    granian has no hook in its main process when a worker exits (gunicorn's ``child_exit``): a worker that starts
    removes the per-process gauges of the workers that are gone, so that a respawn leaves none of a dead one's.

    Two gaps of granian's workers closed here, before the app is built: a worker inherits the main process's signal
    handlers until granian sets its own, after this factory returns, so a SIGTERM or Ctrl-C that reached a worker
    still building the app was lost and the worker stayed until killed 30 s later: a worker that has not served yet
    now ends at once (the default action). And a worker outlived a main process that was killed (SIGKILL, the OOM
    killer), serving on: the kernel now sends it SIGTERM then (Linux), a graceful stop."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_DFL)
    _stop_with_parent()
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(named) if named else None
    if directory is not None:
        exposition.forget_exited_workers(directory)
    app = build(directory)
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks.insert(min(1, len(hooks)), check_head)  # after the request id (dui.web.context), before any other work
    return WithoutProcessEnvironment(app, os.environ)


def check_head() -> None:
    """The request line and header fields within ``dui.web.limits``, as gunicorn's parser has them: granian lets
    larger ones through, up to its own limits. The request line is counted as the client sent it, near enough
    (granian hands the path decoded: it is counted quoted again)."""
    environ = request.environ
    target = len(quote(environ.get("PATH_INFO", "").encode("latin-1", "replace"),
                             safe="/;=,:@!$&'()*+~")) + len(request.query_string)
    line = len(request.method) + 1 + target + (1 if request.query_string else 0) + 1 + len(
        environ.get("SERVER_PROTOCOL", ""))
    err: DuiError | None = None
    if line > limits.REQUEST_LINE:
        err, detail = limits.uri_too_long(), "LimitRequestLine"
    elif len(request.headers) > limits.FIELDS or any(
            len(name) + 2 + len(value) > limits.FIELD_SIZE for name, value in request.headers.items()):
        err, detail = limits.headers_too_large(), "LimitRequestHeaders"
    if err is None:
        return
    # the entry gunicorn's path writes (dui.web.worker), whatever the path, before the answer
    record_apart(current_app.extensions["dui"], trail.AuditEntry(
        "request", "failed", ANONYMOUS, detail=detail, status=err.status, source=request.remote_addr,
        request_id=g.get("request_id")))
    mark_recorded()
    raise err


def _stop_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the main process was already gone before the call
        os.kill(os.getpid(), signal.SIGTERM)


class WithoutProcessEnvironment:
    """granian builds each request's WSGI environ from a copy of the process environment (CGI's habit): every
    ``DUI_*`` setting, key material included, would be in each request's environ, where an error reporter may
    copy it, and a variable named ``HTTP_*`` would read as a request header the client never sent
    (``HTTP_AUTHORIZATION``, ``HTTP_X_FORWARDED_FOR``). Those entries are removed before the app sees the request
    (a header sent with the very value of such a variable reads as absent)."""

    def __init__(self, app: WSGIApplication, process: Mapping[str, str]) -> None:
        self.app = app
        self.process = tuple((key, value) for key, value in process.items() if key not in _GRANIAN_KEYS)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        for key, value in self.process:
            if environ.get(key) == value:
                del environ[key]
        return self.app(environ, start_response)
