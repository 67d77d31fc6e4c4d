"""Recording, sealing and verifying the audit trail.

``record`` inserts an entry in the caller's transaction: a write and its entry commit together, a
refused or failed act is recorded in a transaction of its own. ``seal`` chains the committed entries:
in entry order, each gets the next position and ``hash = SHA-256(previous hash + canonical content)``;
on PostgreSQL only entries whose transaction ended before every running one began are sealed, so that
an entry committed later can never need a place earlier in the chain. ``verify`` walks the chain and
reports the first position where a content, an order or a link does not hold: an entry changed,
removed or inserted after sealing.

Sealing is a short serialised job: ``dui audit seal`` (cron, every minute) and ``dui audit verify``
run it; entries wait unsealed in between, still protected against updates and deletes by the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Select, bindparam, func, insert, literal_column, select, text, update
from sqlalchemy.orm import Session

from dui.audit.tables import audit_event, audit_event_patient
from dui.auth.actor import Actor
from dui.db import advisory_lock, is_postgresql
from dui.fhir.tables import UtcDateTime

GENESIS = "0" * 64
CONTENT_COLUMNS = ("seq", "recorded", "actor_kind", "actor_id", "roles", "establishment", "client_id", "action",
                   "detail", "resource_type", "resource_id", "outcome", "status", "source", "request_id",
                   "purpose", "count")
_SEAL_BATCH = 5000


@dataclass(frozen=True)
class AuditEntry:
    """One audited act. ``patients``: the ids of the residents whose data it touched."""

    action: str
    outcome: str
    actor: Actor
    resource_type: str | None = None
    resource_id: str | None = None
    detail: str | None = None
    status: int | None = None
    source: str | None = None
    request_id: str | None = None
    purpose: str | None = None
    count: int | None = None
    patients: tuple[str, ...] = ()


def record(session: Session, entry: AuditEntry, now: datetime) -> int:
    """Insert ``entry`` in the session's transaction (or, in an autocommit read on PostgreSQL, as one
    statement of its own); return its sequence number."""
    actor = entry.actor
    values: dict[str, Any] = {
        "recorded": now, "actor_kind": actor.kind, "actor_id": actor.id[:128],
        "roles": ",".join(sorted(actor.roles))[:255], "establishment": actor.establishment,
        "client_id": actor.client_id, "action": entry.action, "detail": _cut(entry.detail, 64),
        "resource_type": entry.resource_type, "resource_id": _cut(entry.resource_id, 64), "outcome": entry.outcome,
        "status": entry.status, "source": _cut(entry.source, 64), "request_id": _cut(entry.request_id, 64),
        "purpose": _cut(entry.purpose, 255), "count": entry.count,
    }
    patients = sorted({p[:64] for p in entry.patients if p})
    if is_postgresql(session):  # one round trip: the entry and its residents together
        return int(session.execute(_PG_RECORD, {**values, "patients": patients}).scalar_one())
    seq = int(session.execute(insert(audit_event).values(**values).returning(audit_event.c.seq)).scalar_one())
    if patients:
        session.execute(insert(audit_event_patient), [{"seq": seq, "patient_id": p} for p in patients])
    return seq


_COLUMNS = ("recorded", "actor_kind", "actor_id", "roles", "establishment", "client_id", "action", "detail",
            "resource_type", "resource_id", "outcome", "status", "source", "request_id", "purpose", "count")
_PG_RECORD = text(
    f"WITH e AS (INSERT INTO audit_event (xid, {', '.join(_COLUMNS)}) "
    f"VALUES (pg_current_xact_id()::text::bigint, {', '.join(':' + c for c in _COLUMNS)}) RETURNING seq), "
    "p AS (INSERT INTO audit_event_patient (seq, patient_id) SELECT e.seq, unnest(CAST(:patients AS text[])) FROM e) "
    "SELECT seq FROM e"
).bindparams(bindparam("recorded", type_=UtcDateTime()))


def seal(session: Session) -> int:
    """Chain the entries that have settled, in entry order; return how many were sealed."""
    advisory_lock(session, "audit:seal")
    position, previous = _head(session)
    stmt = select(audit_event).where(audit_event.c.chain_pos.is_(None)).order_by(audit_event.c.seq)
    if is_postgresql(session):
        horizon = session.execute(select(literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                                                        BigInteger))).scalar_one()
        stmt = stmt.where(audit_event.c.xid < horizon)
    sealed = 0
    rows = session.execute(stmt.limit(_SEAL_BATCH)).mappings().all()
    patients = _patients(session, [r["seq"] for r in rows])
    changes = []
    for row in rows:
        position += 1
        digest = chain_hash(previous, content(row, patients.get(row["seq"], [])))
        changes.append({"s": row["seq"], "pos": position, "prev": previous, "h": digest})
        previous = digest
        sealed += 1
    if changes:
        session.execute(update(audit_event).where(audit_event.c.seq == bindparam("s"))
                        .values(chain_pos=bindparam("pos"), prev_hash=bindparam("prev"), hash=bindparam("h")),
                        changes)
    return sealed


@dataclass(frozen=True)
class Verification:
    sealed: int
    unsealed: int
    problem: str | None  # the first break found, None when the chain holds

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session) -> Verification:
    """Recompute the chain from its start; report the first entry that does not hold."""
    previous, expected, checked = GENESIS, 1, 0
    for rows, patients in _sealed_batches(session):
        for row in rows:
            position = row["chain_pos"]
            if position != expected:
                return Verification(checked, _unsealed(session),
                                    f"entry missing at chain position {expected} (next found: {position})")
            if row["prev_hash"] != previous:
                return Verification(checked, _unsealed(session), f"chain broken at position {position}: "
                                    "its link does not match the entry before it")
            digest = chain_hash(previous, content(row, patients.get(row["seq"], [])))
            if digest != row["hash"]:
                return Verification(checked, _unsealed(session), f"entry at chain position {position} "
                                    f"(seq {row['seq']}) was altered after it was sealed")
            previous, expected, checked = digest, expected + 1, checked + 1
    return Verification(checked, _unsealed(session), None)


def content(row: Any, patients: list[str]) -> bytes:
    """The canonical bytes an entry's hash covers."""
    values = [_plain(row[name]) for name in CONTENT_COLUMNS]
    return json.dumps([*values, sorted(patients)], separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(previous: str, data: bytes) -> str:
    return hashlib.sha256(previous.encode("ascii") + data).hexdigest()


def entries(session: Session, *, patient: str | None = None,
            since: datetime | None = None) -> Iterator[tuple[Any, list[str]]]:
    """Entries in order, with the residents they touched (all, or those touching ``patient``)."""
    stmt: Select[Any] = select(audit_event).order_by(audit_event.c.seq)
    if patient is not None:
        stmt = stmt.where(audit_event.c.seq.in_(
            select(audit_event_patient.c.seq).where(audit_event_patient.c.patient_id == patient)))
    if since is not None:
        stmt = stmt.where(audit_event.c.recorded >= since)
    after = 0
    while True:
        rows = session.execute(stmt.where(audit_event.c.seq > after).limit(1000)).mappings().all()
        if not rows:
            return
        found = _patients(session, [r["seq"] for r in rows])
        for row in rows:
            yield row, found.get(row["seq"], [])
        after = rows[-1]["seq"]


def head(session: Session) -> tuple[int, str]:
    """The chain's last position and hash (0 and the genesis hash when nothing is sealed)."""
    return _head(session)


def _head(session: Session) -> tuple[int, str]:
    row = session.execute(select(audit_event.c.chain_pos, audit_event.c.hash)
                          .where(audit_event.c.chain_pos.is_not(None))
                          .order_by(audit_event.c.chain_pos.desc()).limit(1)).first()
    return (int(row.chain_pos), str(row.hash)) if row else (0, GENESIS)


def _sealed_batches(session: Session) -> Iterator[tuple[list[Any], dict[int, list[str]]]]:
    after = 0
    while True:
        rows = session.execute(select(audit_event).where(audit_event.c.chain_pos > after)
                               .order_by(audit_event.c.chain_pos).limit(2000)).mappings().all()
        if not rows:
            return
        yield list(rows), _patients(session, [r["seq"] for r in rows])
        after = rows[-1]["chain_pos"]


def _patients(session: Session, seqs: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if not seqs:
        return out
    stmt = select(audit_event_patient.c.seq, audit_event_patient.c.patient_id).where(
        audit_event_patient.c.seq.in_(seqs))
    for seq, patient in session.execute(stmt):
        out.setdefault(int(seq), []).append(str(patient))
    return out


def _unsealed(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(audit_event)
                               .where(audit_event.c.chain_pos.is_(None))).scalar_one())


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _cut(value: str | None, size: int) -> str | None:
    return value[:size] if isinstance(value, str) else value
