"""The audit tables: append-only, chained with a key once sealed.

- ``audit_event``: one row per audited act. Rows are inserted by the transaction of the act (so a write
  and its audit entry commit or roll back together); the database gives each its number (``seq``), its
  transaction id (``xid``, PostgreSQL) and empty chain columns, whatever the insert says.
  ``dui.audit.trail.seal`` later gives each committed row its position in the chain (``chain_pos``), the
  previous hash, ``hash`` = HMAC-SHA256(audit key, previous hash + the row's canonical content) and the id
  of the key (``key_id``; NULL on entries sealed before the chain was keyed, with plain SHA-256). The
  database refuses to update a row, except that one seal of an unsealed row's chain columns, and to delete
  or truncate anything, whatever the session's settings (triggers of migration 0011).
- ``gap_first``, ``gap_last``: on a void (an entry whose transaction failed after taking its number, recorded
  by the service) or an acknowledged gap (``dui audit acknowledge-gap``), the numbers it explains.
- ``audit_event_patient``: the residents an act touched (a search may touch several), for the
  resident's access report.

Nothing here holds health data beyond the resident's id: no names, no search values, no bodies.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table

from dui.db import metadata
from dui.fhir.tables import RowId, UtcDateTime

CHAIN_COLUMNS = ("chain_pos", "prev_hash", "hash", "key_id")  # what a seal writes, once

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
    Column("action", String(32), nullable=False),  # read, search, create, update, delete, operation, void, ...
    Column("detail", String(64), nullable=True),  # the operation ($everything...), the refusal's category
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("outcome", String(16), nullable=False),  # success, denied, error
    Column("status", Integer, nullable=True),  # HTTP status, when over HTTP
    Column("source", String(64), nullable=True),  # remote address, or "cli"
    Column("request_id", String(64), nullable=True),
    Column("purpose", String(255), nullable=True),  # break-the-glass reason; why a gap was acknowledged
    Column("count", Integer, nullable=True),  # resources returned (search, history, $everything)
    Column("gap_first", BigInteger, nullable=True),  # void / acknowledged gap: the numbers it explains
    Column("gap_last", BigInteger, nullable=True),
    Column("chain_pos", BigInteger, nullable=True, unique=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Column("key_id", String(64), nullable=True),  # the audit key that sealed it (NULL: plain SHA-256, before 0011)
    Index("ix_audit_event_recorded", "recorded"),
    Index("ix_audit_event_unsealed", "chain_pos", "seq"),
    sqlite_autoincrement=True,  # SQLite never reuses a number, so a deleted newest entry leaves a gap too
)

audit_event_patient = Table(
    "audit_event_patient",
    metadata,
    Column("seq", RowId, ForeignKey("audit_event.seq"), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Index("ix_audit_event_patient_patient_id", "patient_id", "seq"),
)
