"""Running the jobs due: claim, call the handler, record the outcome; each step in a transaction of its own.

1. Claim (short transaction): the oldest job due (``next_attempt_at`` reached) or whose lease expired (its worker
   died, e.g. kill -9) becomes ``running``, leased to this worker until ``now + lease``, one more attempt counted.
   PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``, so that concurrent workers each take another job;
   SQLite: under ``BEGIN IMMEDIATE`` (one writer at a time).
2. The handler runs outside the claim, in a transaction of its own that it may write in: no row lock of the
   outbox is held during its network call. On SQLite that transaction starts as a reader (a plain BEGIN, not
   BEGIN IMMEDIATE): a network call then blocks no writer; a handler that writes there may find the database
   busy, which is a transient failure like any other.
3. The outcome is recorded in a new transaction, with an audit entry ("outbox-attempt"), only while the job is
   still leased by this worker for this attempt (a worker whose lease expired records nothing).

A handler returns ``delivered(result)``, ``transient(error)`` (tried again after an exponential back-off with
full jitter, dead after ``max_attempts``) or ``permanent(error)`` (dead at once); any exception is transient.
Errors are kept as one short line; for an exception only its class name: its message could quote health data.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Literal, Protocol, TypeVar

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dui.audit import trail
from dui.audit.trail import AuditEntry
from dui.auth.actor import SYSTEM
from dui.db import is_postgresql, unit_of_work
from dui.metrics.counters import count_call
from dui.outbox.queue import Job
from dui.outbox.tables import ERROR_LENGTH, RESULT_LENGTH, outbox_job

logger = logging.getLogger(__name__)

Status = Literal["delivered", "retry", "dead"]


@dataclass(frozen=True)
class Outcome:
    """What a handler made of a job. ``text``: the result when delivered (e.g. the registry's id), else the
    error; one short line, never health data. ``audit``: the entry saying what was told to whom, recorded with the
    job's new state when it is delivered (a handler that only reads and calls out never writes: on SQLite it runs
    in a reading transaction, where a write fails as soon as another writer came first)."""

    status: Literal["delivered", "transient", "permanent"]
    text: str = ""
    audit: AuditEntry | None = None
    # What a delivered job writes (further jobs, rows): run in the transaction that records the job as done, so that
    # it happens once with it, and so that the handler itself only reads
    writes: Callable[[Session, datetime], None] | None = None


def delivered(result: str = "") -> Outcome:
    return Outcome("delivered", result)


def transient(error: str) -> Outcome:
    return Outcome("transient", error)


def permanent(error: str) -> Outcome:
    return Outcome("permanent", error)


Handler = Callable[[Session, Job], Outcome]
C = TypeVar("C")
D = TypeVar("D")


def bind(deliver: Callable[[C, D, Job], Outcome], context_of: Callable[[Session], C], dependency: D) -> Handler:
    """A handler from a delivery use case ``deliver(context, dependency, job)``: the context built on the
    runner's session (the service's, as the system), the dependency (a gateway, a mail sender) given once."""

    def handle(session: Session, job: Job) -> Outcome:
        return deliver(context_of(session), dependency, job)

    return handle


class UnitOfWork(Protocol):
    def __call__(self, write: bool = True) -> AbstractContextManager[Session]: ...


@dataclass(frozen=True)
class Backoff:
    """Full jitter: the n-th failure waits a random time in [0, min(cap, base * 2**(n-1))] seconds."""

    base: float = 30.0
    cap: float = 3600.0
    max_attempts: int = 10
    jitter: Callable[[float], float] = field(default=lambda ceiling: random.uniform(0, ceiling))

    def delay(self, attempts: int) -> timedelta:
        ceiling = min(self.cap, self.base * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=max(0.0, min(ceiling, self.jitter(ceiling))))


@dataclass
class RunReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0  # outcomes not recorded: the lease had expired and the job was taken again

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.dead + self.lost


def run_due(units: UnitOfWork | sessionmaker[Session], handlers: Mapping[str, Handler],
            now: datetime | Callable[[], datetime], worker_id: str, *, limit: int = 100, lease_seconds: float = 300.0,
            backoff: Backoff | None = None, kinds: Collection[str] | None = None) -> RunReport:
    """Run up to ``limit`` jobs due, one at a time, each at most once in this pass. ``now``: a moment (tests), or
    a clock read at each claim and each outcome (``dui worker``: a lease starts when its job is claimed, not when
    the pass began). ``kinds``: only the jobs of these kinds (the worker's fast lane), all of them when None."""
    unit = _as_unit(units)
    clock: Callable[[], datetime] = now if callable(now) else (lambda: now)
    backoff = backoff or Backoff()
    lease = timedelta(seconds=lease_seconds)
    report = RunReport()
    seen: list[int] = []
    while len(seen) < limit:
        with unit(write=True) as session:
            moment = clock()
            job = _claim(session, moment, moment + lease, worker_id, seen, backoff.max_attempts, kinds)
            postgresql = is_postgresql(session)
        if job is None:
            return report
        seen.append(job.id)
        if job.state == "dead":  # its lease expired once too often: the worker died on each of its attempts
            report.dead += 1
            continue
        outcome = _attempt(unit, handlers, job, write=postgresql)
        count_call(job.kind, outcome.status)  # the DMP's, MSSanté's, Subscriptions' deliveries (docs/metrics.md)
        status = _record(unit, job, outcome, clock(), worker_id, backoff)
        if status is None:
            report.lost += 1
        elif status == "delivered":
            report.delivered += 1
        elif status == "retry":
            report.retried += 1
        else:
            report.dead += 1
    return report


def _as_unit(units: UnitOfWork | sessionmaker[Session]) -> UnitOfWork:
    return partial(unit_of_work, units) if isinstance(units, sessionmaker) else units


def _claim(session: Session, now: datetime, lease_until: datetime, worker_id: str, seen: list[int],
           max_attempts: int, kinds: Collection[str] | None = None) -> Job | None:
    c = outbox_job.c
    stmt = (select(outbox_job)
            .where(or_(and_(c.state == "due", c.next_attempt_at <= now),
                       and_(c.state == "running", c.lease_until <= now)))
            .order_by(c.next_attempt_at, c.id).limit(1))
    if kinds is not None:
        stmt = stmt.where(c.kind.in_(sorted(kinds)))
    if seen:
        stmt = stmt.where(c.id.not_in(seen))
    if is_postgresql(session):
        stmt = stmt.with_for_update(skip_locked=True)
    row = session.execute(stmt).mappings().first()
    if row is None:
        return None
    found = Job.from_row(row)
    if found.state == "running" and found.attempts >= max_attempts:
        error = f"lease expired on attempt {found.attempts}: the worker stopped while running it"
        job = _update(session, found.id, state="dead", lease_until=None, leased_by=None, last_error=error,
                      updated_at=now)
        _audit(session, job, "dead", now)
        logger.warning("outbox job dead", extra={"job": job.id, "kind": job.kind, "attempts": job.attempts})
        return job
    return _update(session, found.id, state="running", attempts=found.attempts + 1, lease_until=lease_until,
                   leased_by=worker_id, updated_at=now)


def _attempt(unit: UnitOfWork, handlers: Mapping[str, Handler], job: Job, write: bool) -> Outcome:
    handler = handlers.get(job.kind)
    if handler is None:
        return permanent(f"no handler for the kind {job.kind!r} in this worker")
    try:
        with unit(write=write) as session:  # SQLite: not BEGIN IMMEDIATE, which would stop every writer meanwhile
            outcome = handler(session, job)
        if not isinstance(outcome, Outcome):
            return transient(f"the {job.kind} handler returned {type(outcome).__name__}, not an Outcome")
        return outcome
    except Exception as exc:  # any failure is worth another try; its message is not kept (it may quote data)
        logger.warning("outbox handler failed", extra={"job": job.id, "kind": job.kind, "error": type(exc).__name__})
        return transient(f"{type(exc).__name__} raised by the {job.kind} handler")


def _record(unit: UnitOfWork, job: Job, outcome: Outcome, now: datetime, worker_id: str,
            backoff: Backoff) -> Status | None:
    c = outbox_job.c
    text = _line(outcome.text)
    with unit(write=True) as session:
        still_ours = (c.id == job.id, c.state == "running", c.leased_by == worker_id, c.attempts == job.attempts)
        values: dict[str, object] = {"lease_until": None, "leased_by": None, "updated_at": now}
        status: Status
        if outcome.status == "delivered":
            status = "delivered"
            values.update(state="done", done_at=now, result=text[:RESULT_LENGTH] or None, last_error=None)
        elif outcome.status == "transient" and job.attempts < backoff.max_attempts:
            status = "retry"
            values.update(state="due", next_attempt_at=now + backoff.delay(job.attempts),
                          last_error=text[:ERROR_LENGTH])
        else:
            status = "dead"
            if outcome.status == "transient":
                text = f"{text} (attempt {job.attempts} of {backoff.max_attempts})"
            values.update(state="dead", last_error=text[:ERROR_LENGTH])
        row = session.execute(update(outbox_job).where(*still_ours).values(**values)
                              .returning(*outbox_job.c)).mappings().first()
        if row is None:
            logger.warning("outbox outcome not recorded: the lease was lost", extra={"job": job.id, "kind": job.kind})
            return None
        _audit(session, Job.from_row(row), status, now)
        if status == "delivered" and outcome.writes is not None:
            outcome.writes(session, now)
        if status == "delivered" and outcome.audit is not None:
            trail.record(session, outcome.audit, now)
    if status != "delivered":
        logger.info("outbox job %s", status, extra={"job": job.id, "kind": job.kind, "attempts": job.attempts})
    return status


def _update(session: Session, job_id: int, **values: object) -> Job:
    row = session.execute(update(outbox_job).where(outbox_job.c.id == job_id).values(**values)
                          .returning(*outbox_job.c)).mappings().one()
    return Job.from_row(row)


def _audit(session: Session, job: Job, status: str, now: datetime) -> None:
    rtype, _, rid = job.target.partition("/")
    trail.record(session, AuditEntry(
        "outbox-attempt", "success" if status == "delivered" else "failed", SYSTEM,
        rtype or None, rid or None, detail=f"{job.kind} {status}", count=job.attempts), now)


def _line(text: str) -> str:
    return " ".join(str(text).split())
