"""The app as each worker process of ``dui serve`` builds it, under either server: created once, its profiles warmed
up before it takes a request, its ``/metrics`` summing every worker's files in the run's directory.

gunicorn calls ``build`` from its application's ``load`` (``dui.cli.serve``). granian loads a WSGI target by import
string in each worker it spawns: ``dui serve --server granian`` names ``from_environment`` (a factory), which finds
the run's metrics directory in ``PROMETHEUS_MULTIPROC_DIR``, set by ``dui serve`` before any worker starts
(``dui.metrics.exposition.run_directory``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

from dui.metrics import exposition

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

TARGET = f"{__name__}:from_environment"
# What granian itself writes in every request's environ over its copy of the process environment
_GRANIAN_KEYS = frozenset({"GATEWAY_INTERFACE", "SCRIPT_NAME", "SERVER_SOFTWARE", "REQUEST_METHOD", "PATH_INFO",
                           "QUERY_STRING", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR"})


def build(metrics_directory: Path | None) -> Flask:
    from dui.app import create_app

    app = create_app()
    app.extensions["dui"].profiles.warm_up()  # in each worker, before it takes requests
    app.extensions["dui.metrics"].directory = metrics_directory  # /metrics sums every worker's
    return app


def from_environment() -> WSGIApplication:
    """granian's factory (``--factory``), called once in each worker process it spawns (and respawns).

    granian has no hook in its main process when a worker exits (gunicorn's ``child_exit``): a worker that starts
    removes the per-process gauges of the workers that are gone, so that a respawn leaves none of a dead one's."""
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(named) if named else None
    if directory is not None:
        exposition.forget_exited_workers(directory)
    return WithoutProcessEnvironment(build(directory), os.environ)


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
