"""``bulk_export``: one FHIR Bulk Data export (``$export``), from its kick-off to the expiry of its files.

``id``: the job's random id (in the status and file URLs). The requester (``actor_kind``, ``actor_id``,
``establishment``, ``client_id``, ``scopes``) is what the worker needs to run the export as that actor, and what the
status and file endpoints compare the caller with. ``request``: the kick-off URL, ``params``: the parsed kick-off
(JSON: level, group, types, since, type filters). ``state``: queued, running, completed, failed, cancelled.
``progress`` and ``error`` are short texts that never hold health data. ``output``: the files written (JSON list of
type, name, count, bytes, chunks), ``data_key``: the data key that sealed them. ``attempt``: bumped each time a
worker starts the export, so that a worker whose outbox lease expired stops writing.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Index, Integer, String, Table, Text

from dui.db import UtcDateTime, metadata

STATES = ("queued", "running", "completed", "failed", "cancelled")
TEXT_LENGTH = 500

bulk_export = Table(
    "bulk_export",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(128), nullable=False),
    Column("establishment", String(9), nullable=True),
    Column("client_id", String(64), nullable=True),
    Column("scopes", Text, nullable=False),
    Column("request", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("progress", String(TEXT_LENGTH), nullable=True),
    Column("error", String(TEXT_LENGTH), nullable=True),
    Column("output", Text, nullable=True),
    Column("data_key", Integer, nullable=True),
    Column("transaction_time", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    CheckConstraint("state IN ('queued', 'running', 'completed', 'failed', 'cancelled')", name="state"),
    Index("ix_bulk_export_expires_at", "expires_at"),
)
