"""``dui worker``: the service's background work: rebuilding the DLUs the record left out of date
(``dui.documents.freshness``), polling the MSSanté inbox when a mailbox is configured (``dui.messaging.receiving``),
removing the bulk exports past their expiry (``dui.bulk``), and running the outbox jobs due (``dui.outbox.runner``)
with the handlers the app was built with (``Services.outbox_handlers``: bulk exports among them). The inbox is polled
before the outbox runs, so that the acknowledgements (MDN) a poll queues leave in the same pass. Beside the passes, a
fast lane (a thread of its own) runs the FHIR Subscription jobs only (``dui.subscriptions``: matching, rest-hook
calls, websocket pings) every ``--notify-interval`` seconds and escalates the fall alerts every second, so that a
notification leaves within about a second and an escalation is on time even while a pass rebuilds a batch of DLUs.

Each resident's DLU is rebuilt in a transaction of its own, by the system, with an audit entry naming the
resident; a failure is logged (the resident's id, never health data) and the resident stays due.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import click
from flask import current_app
from werkzeug.serving import BaseWSGIServer, make_server

from dui import subscriptions
from dui.audit import sealing, trail
from dui.audit.keys import audit_keys
from dui.audit.trail import AuditEntry
from dui.auth.actor import SYSTEM
from dui.bulk import jobs as bulk_jobs
from dui.documents import freshness, operations
from dui.errors import DuiError
from dui.messaging import receiving
from dui.outbox.runner import Backoff, RunReport, run_due
from dui.services import Services
from dui.settings import SettingsError
from dui.staff import alerts
from dui.web import metrics as metrics_endpoint
from mssante import Permanent, TransportError

logger = logging.getLogger(__name__)


def rebuild_due_dlus(svc: Services, limit: int = 100) -> tuple[int, int]:
    """Rebuild the DLUs due now; (rebuilt, failed)."""
    conf = svc.settings.documents
    with svc.unit_of_work(write=False) as session:
        patients = freshness.due(session, svc.clock(), conf.dlu_quiet, conf.dlu_max_delay, limit)
    rebuilt = failed = 0
    for patient_id in patients:
        try:
            with svc.unit_of_work(write=True) as session:
                ctx = svc.fhir_context(session, SYSTEM)
                built = operations.refresh_dlu(ctx, patient_id)
                trail.record(session, AuditEntry(
                    "dlu-rebuild", "success", SYSTEM, "DocumentReference", built.reference.id,
                    detail="record changed" if built.created else "already current", patients=(patient_id,)),
                    svc.clock())
            rebuilt += 1
        except DuiError as exc:  # e.g. the resident was deleted: nothing to build, the mark is dropped
            failed += 1
            logger.warning("DLU not rebuilt", extra={"patient": patient_id, "error": type(exc).__name__})
            with svc.unit_of_work(write=True) as session:
                freshness.forget(session, patient_id)
        except Exception:
            failed += 1
            logger.exception("DLU rebuild failed", extra={"patient": patient_id})
        if svc.engine.dialect.name == "sqlite":
            # SQLite has one writer, and a rebuild holds the write lock while it builds: the writers that waited
            # (a sensor's event, the fast lane's notifications) get it before the next rebuild takes it again
            time.sleep(SQLITE_YIELD)
    return rebuilt, failed


SQLITE_YIELD = 0.15  # seconds; longer than SQLite's busy handler sleeps between two tries (at most 100 ms)


@click.command("worker")
@click.option("--once", is_flag=True, help="Do what is due now, then exit (cron, tests).")
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds between two passes.")
@click.option("--notify-interval", default=0.25, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds between two runs of the fast lane beside the passes: the FHIR Subscription jobs only "
                   "(matching, rest-hook calls, websocket pings), so that a notification leaves within about a "
                   "second; 0: none (and the alerts are escalated by the passes only).")
@click.option("--metrics-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Serve this worker's metrics (outbox deliveries, MSSanté polls) at /metrics on this port, under "
                   "the rule of the service's /metrics (docs/metrics.md); 0: not served.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Interface of --metrics-port.")
def worker(once: bool, interval: float, notify_interval: float, metrics_port: int, metrics_host: str) -> None:
    """Run the background work until stopped (SIGTERM or Ctrl-C).

    Each pass escalates the fall alerts nobody acknowledged within DUI_ALERT_ESCALATION seconds, removes the bulk
    exports past their expiry with their files, rebuilds the out-of-date DLUs (after DUI_DLU_QUIET seconds without
    a change to the resident's record, at the latest DUI_DLU_MAX_DELAY seconds after the first one), polls the
    MSSanté mailbox when it is configured, and runs the outbox jobs due (`dui outbox list`); every minute it seals
    the audit trail (as `dui audit seal` does). Beside the passes, a fast lane runs the FHIR Subscription jobs every
    --notify-interval seconds and escalates alerts every second, whatever a pass is doing. With --metrics-port, its
    metrics are served on that port."""
    svc: Services = current_app.extensions["dui"]
    stop = threading.Event()
    if not once:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    metrics = serve_metrics(svc, metrics_host, metrics_port) if metrics_port and not once else None
    try:
        _work(svc, stop, once, interval, notify_interval)
    finally:
        if metrics is not None:
            metrics.shutdown()


def serve_metrics(svc: Services, host: str, port: int) -> BaseWSGIServer:
    """Serve this process's metrics on ``host:port`` (``dui.web.metrics.standalone``) from a thread of its own."""
    if svc.settings.is_prod and not svc.settings.metrics.token:
        raise SettingsError("dui worker --metrics-port needs DUI_METRICS_TOKEN when DUI_ENV=prod")
    server = make_server(host, port, metrics_endpoint.standalone(svc.settings), threaded=True)
    threading.Thread(target=server.serve_forever, name="dui-worker-metrics", daemon=True).start()
    logger.info("worker metrics served", extra={"host": host, "port": server.server_port})
    return server


def _work(svc: Services, stop: threading.Event, once: bool, interval: float, notify_interval: float) -> None:
    """The passes, until ``stop`` is set; one pass and its report with ``once``. Beside them, unless ``once``, the
    fast lane runs in a thread of its own, so that a long pass (a batch of DLU rebuilds) never holds it up."""
    lane = None
    if not once and notify_interval > 0:
        lane = threading.Thread(target=_fast_lane, args=(svc, stop, notify_interval), name="dui-worker-fast-lane",
                                daemon=True)
        lane.start()
    try:
        _passes(svc, stop, once, interval)
    finally:
        if lane is not None:
            stop.set()  # the worker is leaving: the lane ends after its current run
            lane.join(30)


def _passes(svc: Services, stop: threading.Event, once: bool, interval: float) -> None:
    last_seal = float("-inf")
    while True:
        total = _pass(svc)
        sealed = None
        if once or time.monotonic() - last_seal >= sealing.SEAL_EVERY:
            sealed = seal_audit(svc)
            last_seal = time.monotonic()
        if once:
            click.echo(f"dui worker: {total['rebuilt']} DLU rebuilt, {total['failed']} failed")
            if total["escalated"]:
                click.echo(f"dui worker: {total['escalated']} fall alert(s) escalated (not acknowledged in "
                           f"{svc.settings.alerts.escalation:g} s)")
            click.echo(f"dui worker: audit trail: {sealed} entries sealed" if sealed is not None
                       else "dui worker: audit trail: the seal failed (see the log)")
            outbox: RunReport = total["outbox"]
            click.echo(f"dui worker: {outbox.delivered} outbox job(s) delivered, {outbox.retried} to retry, "
                       f"{outbox.dead} dead")
            inbox: receiving.PollReport | None = total["inbox"]
            if inbox is not None:
                click.echo(f"dui worker: MSSanté inbox: {inbox.line()}")
            if total["failed"] or (inbox is not None and inbox.permanent):
                raise SystemExit(1)
            return
        if stop.wait(interval):
            return


FAST_KINDS = (subscriptions.MATCH_KIND, subscriptions.NOTIFY_KIND)
ESCALATE_EVERY = 1.0  # seconds: the fast lane's check for fall alerts nobody acknowledged in time


def _fast_lane(svc: Services, stop: threading.Event, every: float) -> None:
    """Until ``stop``: the Subscription jobs every ``every`` seconds, and the escalation of fall alerts every
    ``ESCALATE_EVERY`` seconds, whatever the passes are doing."""
    escalated_at = float("-inf")
    while not stop.wait(every):
        try:
            run_outbox(svc, kinds=FAST_KINDS)
        except Exception:  # the database is unreachable, say: the next run tries again
            logger.exception("outbox fast lane failed")
        if time.monotonic() - escalated_at >= ESCALATE_EVERY:
            escalate_alerts(svc)  # logs its own failures
            escalated_at = time.monotonic()


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def run_outbox(svc: Services, limit: int = 100, kinds: tuple[str, ...] | None = None) -> RunReport:
    """Run the outbox jobs due now (each at most once in this pass; ``kinds``: only those); a failure stays in the
    job, not here."""
    conf = svc.settings.outbox
    backoff = Backoff(base=conf.backoff_base, cap=conf.backoff_cap, max_attempts=conf.max_attempts)
    return run_due(svc.unit_of_work, svc.outbox_handlers, svc.clock, WORKER_ID, limit=limit, lease_seconds=conf.lease,
                   backoff=backoff, kinds=kinds)


def poll_inbox(svc: Services) -> receiving.PollReport | None:
    """Take the new mail of the MSSanté mailbox (None when no mailbox is configured). A server that cannot be
    reached is in the report, not raised: the rest of the pass goes on."""
    try:
        receiver = svc.mail_receiver()
    except TransportError as exc:  # a malformed URL, certificate files that cannot be read
        return receiving.PollReport(failure=f"the mailbox cannot be used: {exc}", permanent=isinstance(exc, Permanent))
    if receiver is None:
        return None
    return receiving.poll(receiver, svc.unit_of_work, lambda session: svc.fhir_context(session, SYSTEM), svc.clock)


def escalate_alerts(svc: Services) -> int | None:
    """Escalate the fall alerts nobody acknowledged in time (``dui.staff.alerts.escalate``); None on failure."""
    try:
        with svc.unit_of_work(write=True) as session:
            return alerts.escalate(session, svc.clock(), svc.settings.alerts.escalation)
    except Exception:
        logger.exception("alert escalation failed")
        return None


def remove_expired_exports(svc: Services) -> int | None:
    """Remove the bulk exports past their expiry with their files (``dui.bulk.jobs``); None on failure."""
    try:
        with svc.unit_of_work(write=True) as session:
            return bulk_jobs.remove_expired(session, svc.settings.export.directory, svc.clock())
    except Exception:
        logger.exception("expired exports not removed")
        return None


def _pass(svc: Services) -> dict[str, Any]:
    escalated = escalate_alerts(svc)  # first: an alert must not wait behind a batch of DLU rebuilds
    remove_expired_exports(svc)
    rebuilt = failed = 0
    while True:  # until nothing is due (a pass takes at most 100 residents at a time)
        done, bad = rebuild_due_dlus(svc)
        rebuilt, failed = rebuilt + done, failed + bad
        if done + bad < 100 or bad:
            break
    try:
        inbox = poll_inbox(svc)
    except Exception:  # the database is unreachable, say: the outbox is tried all the same
        logger.exception("mssante inbox pass failed")
        inbox = receiving.PollReport(errors=1, failure="the inbox pass failed (see the log)")
    try:
        outbox = run_outbox(svc)
    except Exception:  # the database is unreachable, say: the next pass tries again
        logger.exception("outbox pass failed")
        outbox = RunReport()
    return {"rebuilt": rebuilt, "failed": failed, "outbox": outbox, "inbox": inbox, "escalated": escalated,
            "at": time.time()}


def seal_audit(svc: Services) -> int | None:
    """Seal the audit trail (``dui audit seal``); None when it failed (logged: the next pass tries again)."""
    try:
        return sealing.seal_settled(svc.unit_of_work, audit_keys(svc.settings).current,
                                    svc.settings.audit.heads_file, svc.clock)
    except Exception:
        logger.exception("audit seal failed")
        return None
