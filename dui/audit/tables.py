"""The audit tables: append-only, hash-chained once sealed.

- ``audit_event``: one row per audited act. Rows are inserted by the transaction of the act (so a write
  and its audit entry commit or roll back together) without their chain fields; ``dui.audit.trail.seal``
  later gives each committed row its position in the chain (``chain_pos``) and ``hash`` =
  SHA-256(previous hash + the row's canonical content). The database refuses to update a sealed row or
  to delete any row (triggers of migration 0009), except in an explicit maintenance session.
- ``audit_event_patient``: the residents an act touched (a search may touch several), for the
  resident's access report.
- ``audit_maintenance``: a flag table; while it holds a row, SQLite's triggers let maintenance (tests,
  retention purge) delete rows. PostgreSQL uses the session setting ``dui.audit_maintenance`` instead.

Nothing here holds health data beyond the resident's id: no names, no search values, no bodies.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table

from dui.db import metadata
from dui.fhir.tables import RowId, UtcDateTime

audit_event = Table(
    "audit_event",
    metadata,
    Column("seq", RowId, primary_key=True, autoincrement=True),
    Column("recorded", UtcDateTime, nullable=False),
    Column("xid", BigInteger, nullable=True),  # PostgreSQL transaction id: seal only what has settled
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(128), nullable=False),
    Column("roles", String(255), nullable=False),
    Column("establishment", String(16), nullable=True),
    Column("client_id", String(64), nullable=True),
    Column("action", String(32), nullable=False),  # read, search, create, update, delete, operation, ...
    Column("detail", String(64), nullable=True),  # the operation ($everything...), the refusal's category
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("outcome", String(16), nullable=False),  # success, denied, error
    Column("status", Integer, nullable=True),  # HTTP status, when over HTTP
    Column("source", String(64), nullable=True),  # remote address, or "cli"
    Column("request_id", String(64), nullable=True),
    Column("purpose", String(255), nullable=True),  # break-the-glass reason
    Column("count", Integer, nullable=True),  # resources returned (search, history, $everything)
    Column("chain_pos", BigInteger, nullable=True, unique=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_event_recorded", "recorded"),
    Index("ix_audit_event_unsealed", "chain_pos", "seq"),
)

audit_event_patient = Table(
    "audit_event_patient",
    metadata,
    Column("seq", RowId, ForeignKey("audit_event.seq"), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Index("ix_audit_event_patient_patient_id", "patient_id", "seq"),
)

audit_maintenance = Table(
    "audit_maintenance",
    metadata,
    Column("id", Integer, primary_key=True),
)
