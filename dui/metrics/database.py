"""What ``/metrics`` reads from the database at each scrape: the outbox's depth and the age of its oldest due job,
how far the audit trail's sealing lags behind.

Cheap indexed queries (``outbox_job`` by state, ``audit_event`` by chain position) on a connection of their own,
outside the requests' pool (a busy pool must not stall a scrape, nor a scrape take a request's connection), under a
short timeout (PostgreSQL: connection and statements). A database that cannot be read gives
``dui_metrics_database_up 0`` and none of these gauges, never a failed scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.pool import NullPool

from dui.audit.tables import audit_event
from dui.db import make_engine
from dui.outbox.tables import outbox_job

logger = logging.getLogger("dui.metrics")
DEPTH_STATES = ("due", "running", "dead")  # waiting, being delivered, failed for good (done and cancelled: history)


class DatabaseCollector(Collector):
    """The database gauges, computed when collected. ``kinds``: the outbox job kinds this service handles, each
    reported (0 when it has no job) so that a series does not vanish when its queue empties."""

    def __init__(self, url: str, clock: Callable[[], datetime], kinds: Collection[str] = (),
                 timeout: float = 2.0) -> None:
        self._url = url
        self._clock = clock
        self._kinds = tuple(sorted(kinds))
        self._timeout = timeout
        self._engine: Engine | None = None

    def describe(self) -> list[Metric]:
        return []  # registered without a query; the gauges are known when collected

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dui_metrics_database_up", "1 when the database gauges could be read at this scrape, "
                                                          "else 0 (and they are left out)")
        try:
            with self._connect() as conn:
                families = self._read(conn, self._clock())
        except Exception as exc:  # unreachable, too slow, a missing table: the scrape still answers
            logger.warning("metrics: the database gauges could not be read", extra={"error": type(exc).__name__})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _connect(self) -> Connection:
        if self._engine is None:
            postgresql = self._url.startswith(("postgresql", "postgres"))
            connect_args = {"connect_timeout": max(1, round(self._timeout))} if postgresql else {}
            self._engine = make_engine(self._url, statement_timeout=self._timeout, poolclass=NullPool,
                                       hide_parameters=True, **({"connect_args": connect_args} if postgresql else {}))
        return self._engine.connect()

    def _read(self, conn: Connection, now: datetime) -> list[Metric]:
        c, a = outbox_job.c, audit_event.c
        depth = GaugeMetricFamily("dui_outbox_jobs", "Outbox jobs by kind and state: due (waiting for their time or a "
                                  "worker), running (leased to a worker), dead (failed for good: dui outbox list "
                                  "--failed)", labels=["kind", "state"])
        counts = {(kind, state): 0 for kind in self._kinds for state in DEPTH_STATES}
        for kind, state, n in conn.execute(select(c.kind, c.state, func.count()).where(c.state.in_(DEPTH_STATES))
                                           .group_by(c.kind, c.state)):
            counts[(kind, state)] = int(n)
        for (kind, state), n in sorted(counts.items()):
            depth.add_metric([kind, state], n)
        oldest = GaugeMetricFamily("dui_outbox_oldest_due_seconds", "Seconds the oldest job due now has waited since "
                                   "its time came, by kind (0: none waiting)", labels=["kind"])
        since = {kind: 0.0 for kind in self._kinds}
        for kind, first in conn.execute(select(c.kind, func.min(c.next_attempt_at))
                                        .where(c.state == "due", c.next_attempt_at <= now).group_by(c.kind)):
            since[kind] = _age(now, first)
        for kind, seconds in sorted(since.items()):
            oldest.add_metric([kind], seconds)
        unsealed = conn.execute(select(func.count()).select_from(audit_event).where(a.chain_pos.is_(None))).scalar_one()
        first_unsealed = conn.execute(select(a.recorded).where(a.chain_pos.is_(None)).order_by(a.seq).limit(1)).first()
        last_sealed = conn.execute(select(a.recorded).where(a.chain_pos.is_not(None))
                                   .order_by(a.chain_pos.desc()).limit(1)).first()
        waiting = GaugeMetricFamily("dui_audit_unsealed_entries", "Audit entries not yet chained by a seal (dui "
                                    "worker seals every minute)", value=int(unsealed))
        lag = GaugeMetricFamily("dui_audit_seal_lag_seconds", "Seconds the oldest unsealed audit entry has waited "
                                "for its seal (0: everything sealed)",
                                value=_age(now, _moment(first_unsealed[0])) if first_unsealed else 0.0)
        families: list[Metric] = [depth, oldest, waiting, lag]
        if last_sealed is not None:
            families.append(GaugeMetricFamily("dui_audit_last_sealed_entry_timestamp_seconds", "When the newest "
                                              "sealed audit entry was recorded (Unix time)",
                                              value=_moment(last_sealed[0]).timestamp()))
        return families


def _moment(value: datetime | str) -> datetime:
    """A stored time (``UtcDateTime`` when selected as a column; text or naive from an aggregate on SQLite)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _age(now: datetime, then: datetime | str | None) -> float:
    return 0.0 if then is None else max(0.0, (now - _moment(then)).total_seconds())
