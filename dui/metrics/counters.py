"""The metrics each process records as it works: HTTP requests, calls to external systems, its database pool.

Under ``dui serve`` their values live in files of the run's directory (``dui.metrics.exposition``), one per worker,
summed at scrape time; elsewhere (``flask run``, the tests, ``dui worker``) in this process's memory, in
``REGISTRY``. Every label value comes from a short fixed list: an interaction, a status code, a system, an outcome.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine, event

from ins.errors import InsiFault, InsiUnavailable
from ins.insi.client import CR_FOUND, CR_NONE, CR_SEVERAL, InsiClient, InsiResult, TraitsQuery, VitaleQuery

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds: from a cached read (a few ms) to the request budget (20 s by default) and gunicorn's timeout (60 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)

HTTP_REQUESTS = Counter(
    "dui_http_requests", "HTTP requests answered, by FHIR interaction (or api, auth, websocket, health, metrics, "
    "other) and status code", ["interaction", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram(
    "dui_http_request_duration_seconds", "Time to answer an HTTP request (until the answer is handed to the server), "
    "by interaction", ["interaction"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
EXTERNAL_CALLS = Counter(
    "dui_external_calls", "Calls to external systems by outcome: INSi searches (found, none, several, unavailable, "
    "fault, error), outbox deliveries by job kind (delivered, transient, permanent), MSSanté mail received (filed, "
    "queued, acknowledged, duplicate, error)", ["system", "outcome"], registry=REGISTRY)

DATABASE_READS = Counter(
    "dui_database_reads", "Read-only requests by the database that served them (replica, primary) and why: "
    "replica (caught up), writer (the replica had not replayed the actor's last write yet), lagging (further behind "
    "than DUI_DATABASE_READ_MAX_LAG), unreachable (the replica failed its check), failed (the replica failed the "
    "read, run again on the primary)", ["target", "reason"], registry=REGISTRY)

INSI = "insi"
MSSANTE_RECEIVE = "mssante.receive"
_INSI_CODES = {CR_FOUND: "found", CR_NONE: "none", CR_SEVERAL: "several"}


def record_request(interaction: str, status: int, seconds: float) -> None:
    """One HTTP request answered."""
    HTTP_REQUESTS.labels(interaction, str(status)).inc()
    HTTP_DURATION.labels(interaction).observe(max(0.0, seconds))


def count_read(target: str, reason: str) -> None:
    """One read-only request routed by ``dui.replica``."""
    DATABASE_READS.labels(target, reason).inc()


def count_call(system: str, outcome: str) -> None:
    """One call to an external system (``system``: ``insi``, an outbox job kind, ``mssante.receive``)."""
    EXTERNAL_CALLS.labels(system, outcome).inc()


@cache
def _pool_gauges() -> tuple[Gauge, Gauge]:
    """The pool gauges, made by the first process that has a pool to watch: an unlabelled gauge holds a value from
    its creation, and one created in gunicorn's arbiter (which imports this module with the worker class) would
    report a pool the arbiter does not have. Per process: under dui serve each live worker's, with its pid."""
    return (Gauge("dui_database_pool_size", "Connections the process's database pool keeps open at most (beyond: "
                  "overflow)", registry=REGISTRY, multiprocess_mode="liveall"),
            Gauge("dui_database_pool_checked_out", "Connections of the process's database pool in use",
                  registry=REGISTRY, multiprocess_mode="liveall"))


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges of this process current: its size now, the connections in use at each checkout and
    checkin. A pool without a size (SQLite in memory, a null pool) reports only what it can."""
    pool_size, in_use = _pool_gauges()
    pool = engine.pool
    size = getattr(pool, "size", None)
    if callable(size):
        pool_size.set(size())
    checked_out = getattr(pool, "checkedout", None)
    if not callable(checked_out):
        return

    def taken(*_: Any) -> None:
        in_use.set(checked_out())

    def returned(*_: Any) -> None:  # told before the pool takes the connection back: it still counts it
        in_use.set(max(0, checked_out() - 1))

    event.listen(engine, "checkout", taken)
    event.listen(engine, "checkin", returned)
    taken()


class CountedInsi:
    """An INSi client whose every search is counted by outcome: INSi's return code (found, none, several), or how
    it failed (unavailable, fault, error). Never the traits searched."""

    def __init__(self, client: InsiClient) -> None:
        self.client = client

    def search_by_traits(self, query: TraitsQuery) -> InsiResult:
        return self._counted(lambda: self.client.search_by_traits(query))

    def search_by_vitale(self, query: VitaleQuery) -> InsiResult:
        return self._counted(lambda: self.client.search_by_vitale(query))

    @staticmethod
    def _counted(call: Any) -> InsiResult:
        try:
            result: InsiResult = call()
        except InsiUnavailable:
            count_call(INSI, "unavailable")
            raise
        except InsiFault:
            count_call(INSI, "fault")
            raise
        except Exception:
            count_call(INSI, "error")
            raise
        count_call(INSI, _INSI_CODES.get(result.code, "other"))
        return result
