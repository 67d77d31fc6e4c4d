"""``outbox_job``: one delivery to an external system, from the change that caused it to its outcome.

``state``: due (waiting for ``next_attempt_at``), running (leased by ``leased_by`` until ``lease_until``), done,
dead (failed for good, or too many attempts: a dead letter an operator retries or cancels), cancelled.
At most one live job (due, running or done) per kind and idempotency key: a partial unique index the database
enforces, so that two enqueues of the same delivery give one job whatever their interleaving. A dead or
cancelled job does not count: the same delivery may then be asked for again.
``last_error`` and ``result`` are short, one-line texts that never hold health data.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Index, Integer, String, Table, text

from dui.db import UtcDateTime, metadata

STATES = ("due", "running", "done", "dead", "cancelled")
LIVE_STATES = ("due", "running", "done")
LIVE_PREDICATE = "state IN ('due', 'running', 'done')"
ERROR_LENGTH = 500
RESULT_LENGTH = 200

outbox_job = Table(
    "outbox_job",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),  # "dmp.send"
    Column("target", String(128), nullable=False),  # "DocumentReference/123"
    Column("idempotency_key", String(256), nullable=False),  # e.g. the document's uniqueId
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("leased_by", String(128), nullable=True),
    Column("last_error", String(ERROR_LENGTH), nullable=True),
    Column("result", String(RESULT_LENGTH), nullable=True),  # e.g. the registry's id
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("done_at", UtcDateTime, nullable=True),
    CheckConstraint("state IN ('due', 'running', 'done', 'dead', 'cancelled')", name="state"),
    Index("uq_outbox_job_kind_idempotency_key", "kind", "idempotency_key", unique=True,
          sqlite_where=text(LIVE_PREDICATE), postgresql_where=text(LIVE_PREDICATE)),
    Index("ix_outbox_job_state_next_attempt_at", "state", "next_attempt_at"),
)
