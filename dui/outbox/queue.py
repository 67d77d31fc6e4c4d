"""Putting a job in the outbox, and what an operator does with it (``dui outbox``).

``enqueue`` inserts in the caller's transaction: the job commits with the change that causes it, or not at all.
The database decides whether the delivery is already asked for (ON CONFLICT on the live jobs' unique index,
never a check then an insert): a second enqueue of the same kind and key returns the job in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dui.db import is_postgresql
from dui.errors import Conflict, Invalid, NotFound
from dui.outbox.tables import LIVE_PREDICATE, LIVE_STATES, STATES, outbox_job

_LIVE = outbox_job.c.state.in_(LIVE_STATES)
# The predicate of the partial unique index, as literal SQL: PostgreSQL infers the index from it only when it is
# written with constants (bound values would fail once psycopg prepares the statement).
_LIVE_INDEX = text(LIVE_PREDICATE)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    target: str
    idempotency_key: str
    state: str
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    leased_by: str | None
    last_error: str | None
    result: str | None
    created_at: datetime
    updated_at: datetime
    done_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def enqueue(session: Session, kind: str, target: str, key: str, now: datetime) -> Job:
    """The job delivering ``kind`` for ``key`` (on ``target``): a new one, due now, in the session's transaction;
    or the one already due, running or done for this kind and key."""
    if not kind or not target or not key:
        raise Invalid("an outbox job needs a kind, a target and an idempotency key")
    values = {"kind": kind, "target": target, "idempotency_key": key, "state": "due", "attempts": 0,
              "next_attempt_at": now, "created_at": now, "updated_at": now}
    insert = pg_insert if is_postgresql(session) else sqlite_insert
    for _ in range(3):  # the job in place may turn dead or cancelled between the two statements: ask again
        stmt = (insert(outbox_job).values(**values)
                .on_conflict_do_nothing(index_elements=["kind", "idempotency_key"], index_where=_LIVE_INDEX)
                .returning(*outbox_job.c))
        row = session.execute(stmt).mappings().first()
        if row is None:
            row = session.execute(select(outbox_job).where(
                outbox_job.c.kind == kind, outbox_job.c.idempotency_key == key, _LIVE)).mappings().first()
        if row is not None:
            return Job.from_row(row)
    raise Conflict(f"outbox: the {kind} job for this key keeps changing; try again")


def live(session: Session, kind: str, key: str) -> Job | None:
    """The job due or running for ``kind`` and ``key``, if there is one (not yet delivered)."""
    row = session.execute(select(outbox_job).where(
        outbox_job.c.kind == kind, outbox_job.c.idempotency_key == key,
        outbox_job.c.state.in_(("due", "running")))).mappings().first()
    return Job.from_row(row) if row is not None else None


def get(session: Session, job_id: int) -> Job | None:
    row = session.execute(select(outbox_job).where(outbox_job.c.id == job_id)).mappings().first()
    return Job.from_row(row) if row is not None else None


def list_jobs(session: Session, state: str | None = None, limit: int = 100) -> list[Job]:
    """The jobs in ``state`` (all of them when None), the oldest first."""
    stmt = select(outbox_job).order_by(outbox_job.c.id).limit(limit)
    if state is not None:
        if state not in STATES:
            raise Invalid(f"unknown outbox state {state!r} (one of: {', '.join(STATES)})")
        stmt = stmt.where(outbox_job.c.state == state)
    return [Job.from_row(row) for row in session.execute(stmt).mappings()]


def retry(session: Session, job_id: int, now: datetime) -> Job:
    """A dead job due again now, with a fresh count of attempts."""
    job = _locked(session, job_id)
    if job.state != "dead":
        raise Conflict(f"outbox job {job_id} is {job.state}: only a dead job can be retried")
    live = session.execute(select(outbox_job.c.id).where(
        outbox_job.c.kind == job.kind, outbox_job.c.idempotency_key == job.idempotency_key, _LIVE)).first()
    if live is not None:
        raise Conflict(f"outbox job {job_id}: job {live[0]} already delivers the same {job.kind}")
    return _set(session, job_id, now, state="due", attempts=0, next_attempt_at=now, lease_until=None,
                leased_by=None)


def cancel(session: Session, job_id: int, now: datetime) -> Job:
    """A due or dead job that will not run (a running one is refused: its worker holds it)."""
    job = _locked(session, job_id)
    if job.state not in ("due", "dead"):
        raise Conflict(f"outbox job {job_id} is {job.state}: only a due or dead job can be cancelled")
    return _set(session, job_id, now, state="cancelled", lease_until=None, leased_by=None)


def renew(session: Session, job: Job, until: datetime) -> bool:
    """Extend the lease of a running job its handler is still working on (a long bulk export), so that no other
    worker takes it over meanwhile; False when the lease was already lost."""
    c = outbox_job.c
    done = session.execute(update(outbox_job).where(c.id == job.id, c.state == "running", c.leased_by == job.leased_by,
                                                    c.attempts == job.attempts)
                           .values(lease_until=until)).rowcount  # type: ignore[attr-defined]
    return bool(done)


def _locked(session: Session, job_id: int) -> Job:
    stmt = select(outbox_job).where(outbox_job.c.id == job_id)
    if is_postgresql(session):
        stmt = stmt.with_for_update()
    row = session.execute(stmt).mappings().first()
    if row is None:
        raise NotFound(f"no outbox job {job_id}")
    return Job.from_row(row)


def _set(session: Session, job_id: int, now: datetime, **values: Any) -> Job:
    row = session.execute(update(outbox_job).where(outbox_job.c.id == job_id)
                          .values(updated_at=now, **values).returning(*outbox_job.c)).mappings().one()
    return Job.from_row(row)
