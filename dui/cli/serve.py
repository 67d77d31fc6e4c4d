"""``dui serve``: the production WSGI server, gunicorn (threaded workers, the default) or granian (``--server
granian``: Rust's HTTP stack, the same app in each worker, no websocket channel and no worker timeout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from dui.audit.keys import check_configured as check_audit_keys
from dui.auth.keys import SigningKeyError, load_signing_key
from dui.crypto.master import configured_keys
from dui.metrics import exposition
from dui.settings import Settings, SettingsError
from dui.web import limits


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], metrics_directory: Path | None = None) -> None:
        self.options = options
        self.metrics_directory = metrics_directory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from dui.web import worker_app

        return worker_app.build(self.metrics_directory)


def worker_abort(worker: Any) -> None:
    """gunicorn's ``worker_abort`` hook (SIGABRT: the worker timeout): an audit entry for every request the worker
    was still serving, since none of them will reach its own."""
    from dui.web import inflight

    inflight.record_aborted(worker.wsgi.extensions["dui"])


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook (in the arbiter): a worker is gone, and its per-process metrics with it."""
    directory = server.app.metrics_directory
    if directory is not None:
        exposition.worker_exited(worker.pid, directory)


def on_exit(server: Any) -> None:
    """gunicorn's ``on_exit`` hook: the run's metric files are removed with the server."""
    directory = server.app.metrics_directory
    if directory is not None:
        exposition.remove_run_directory(directory)


def base_url_for(host: str, port: int) -> str:
    """The service's own URL when it is served on ``host:port`` directly (a wildcard address: this machine)."""
    name = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    name = f"[{name}]" if ":" in name else name
    return f"http://{name}:{port}"


def startup_checks(settings: Settings) -> None:
    """Refuse now, with one ``dui: configuration error:`` line, what would otherwise fail in every worker: an
    unreadable or development master key; in ``prod``, a missing or development token-signing key (without one,
    workers would start and answer 503 to every token), and an audit key that is missing, a development one or
    readable by others (``dui audit seal`` would otherwise find out at its next run)."""
    configured_keys(settings.encryption, prod=settings.is_prod)
    check_audit_keys(settings)
    if settings.is_prod:
        try:
            load_signing_key(settings.auth.signing_key, settings.auth.dev_key_dir, prod=True)
        except SigningKeyError as exc:
            raise SettingsError(str(exc)) from None


SERVERS = ("gunicorn", "granian")
GRACEFUL_SECONDS = 30  # on SIGTERM, what a worker is given to finish its requests (deploy/systemd: TimeoutStopSec)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (granian: its blocking threads, those that run the app).")
@click.option("--timeout", default=60, show_default=True, type=int,
              help="Seconds before a stuck worker restarts (gunicorn; granian has no such watchdog).")
@click.option("--server", default="gunicorn", show_default=True, type=click.Choice(SERVERS),
              help="The HTTP server. granian: a faster HTTP stack, without the websocket channel "
                   "(/ws/subscriptions) and without the worker timeout (docs/scaling.md).")
def serve(host: str, port: int, workers: int, threads: int, timeout: int, server: str) -> None:
    """Serve the API (FHIR at /fhir) with gunicorn or granian.

    Run `dui db upgrade` first. Each worker opens its own database pool. The access log is the
    service's own (path without query string, so no search value reaches the logs); the server's
    is off for that reason. Without DUI_BASE_URL, the links the service writes (fullUrl, Location, paging, the SMART
    configuration, the token audience) name the host and port it serves on. The workers' metrics are kept in a
    fresh directory of this run (under DUI_METRICS_DIR, or the temporary folder), summed at /metrics, removed at
    exit.
    """
    metrics_directory = prepare(host, port, timeout, server)
    if server == "granian":
        serve_granian(host, port, workers, threads, metrics_directory)
    else:
        serve_gunicorn(host, port, workers, threads, timeout, metrics_directory)


def prepare(host: str, port: int, timeout: int, server: str) -> Path:
    """What either server needs before its workers start: DUI_BASE_URL (the workers inherit it), the configuration
    and keys checked (one line on a bad one), the request budget below the timeout, and the run's metrics
    directory."""
    if not os.environ.get("DUI_BASE_URL"):  # the workers inherit it
        os.environ["DUI_BASE_URL"] = base_url_for(host, port)
    settings = Settings.from_env()  # fail now, with one line, on a bad configuration
    startup_checks(settings)
    if settings.request_budget and timeout <= settings.request_budget:
        why = ("a request must be stopped before gunicorn kills its worker" if server == "gunicorn" else
               "checked for either server, so that the configuration stays valid under gunicorn, which kills a "
               "worker stuck past --timeout")
        raise SettingsError(f"DUI_REQUEST_BUDGET ({settings.request_budget:g} s) must be below dui serve --timeout "
                            f"({timeout} s): {why}")
    # Each worker's metrics in files of a fresh directory, summed at each scrape (docs/metrics.md)
    return exposition.run_directory(settings.metrics.directory)


def serve_gunicorn(host: str, port: int, workers: int, threads: int, timeout: int, metrics_directory: Path) -> None:
    from dui.web import worker_app

    worker_app.preload()  # once here: gunicorn forks its workers from this process
    _Server({
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "dui.web.worker.DuiWorker",  # gthread; size limits answered as FHIR, audited
        "worker_abort": worker_abort,
        "child_exit": child_exit,
        "on_exit": on_exit,
        "timeout": timeout,
        "graceful_timeout": GRACEFUL_SECONDS,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "limit_request_line": limits.REQUEST_LINE,  # 414 beyond (dui.web.worker)
        "limit_request_fields": limits.FIELDS,  # 431 beyond, as for a field of more than limit_request_field_size
        "limit_request_field_size": limits.FIELD_SIZE,
        "proc_name": "dui",
    }, metrics_directory).run()


def serve_granian(host: str, port: int, workers: int, threads: int, metrics_directory: Path) -> None:
    """granian's WSGI interface: each worker process loads ``dui.web.worker_app:from_environment`` (the app, built
    once), runs it on ``threads`` blocking threads; a worker that dies is respawned. SIGTERM (or Ctrl-C): the
    workers stop taking connections and finish their requests, killed after ``GRACEFUL_SECONDS``. No worker
    timeout (granian has none: ``DUI_REQUEST_BUDGET`` stops a long request), no exit hooks: the run's metrics
    directory is removed here once granian returns."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels

    from dui.web import worker_app

    try:
        Granian(
            worker_app.TARGET,
            address=host,
            port=port,
            interface=Interfaces.WSGI,
            factory=True,
            workers=workers,
            blocking_threads=threads,
            http=HTTPModes.http1,  # as gunicorn: HTTP/1.1 (the reverse proxy speaks it)
            websockets=False,  # granian serves none to a WSGI app
            log_level=LogLevels.warning,
            log_access=False,  # the service's own access log (dui.access) is kept
            respawn_failed_workers=True,
            workers_kill_timeout=GRACEFUL_SECONDS,
        ).serve()
    finally:
        exposition.remove_run_directory(metrics_directory)
