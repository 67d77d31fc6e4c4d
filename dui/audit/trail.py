"""Recording, sealing and verifying the audit trail.

``record`` inserts an entry in the caller's transaction: a write and its entry commit together, a
refused or failed act is recorded in a transaction of its own. Whatever it is given, the entry is
written: control characters (NUL included) are replaced and every text is cut to its column.

``seal`` chains the committed entries: in entry order, each gets the next position and
``hash = HMAC-SHA256(audit key, previous hash + canonical content)``, with the id of the key. The key is
not in the database, so whoever can write there cannot recompute the chain after changing an entry.
On PostgreSQL only entries whose transaction ended before every running one began are sealed, so that
an entry committed later can never need a place earlier in the chain. Entries sealed before the chain
was keyed (no key id) keep their plain SHA-256 link and are verified with it.

``verify`` walks the chain and reports the first position where a content, an order, a link or a key
does not hold (an entry changed, removed or inserted after sealing, or re-chained), then every head of a
heads file the chain no longer matches or reaches (newest entries removed), then every number missing
from ``seq`` that nothing explains (an entry deleted before it was sealed). Legitimate gaps are
explained in the chain itself: ``void`` (a transaction that took a number and failed to commit) and
``acknowledge_gap`` (an operator, after investigating a database crash).

Sealing is a short serialised job: ``dui audit seal`` (cron, every minute) and ``dui audit verify``
run it; entries wait unsealed in between, protected against updates and deletes by the database.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Select, String, bindparam, func, insert, literal_column, or_, select, text, update
from sqlalchemy.orm import Session

from dui.audit.heads import Head
from dui.audit.keys import AuditKey, AuditKeys
from dui.audit.tables import audit_event, audit_event_patient
from dui.auth.actor import CLI, SYSTEM, Actor
from dui.db import advisory_lock, is_postgresql
from dui.direct_sql import DirectQuery
from dui.fhir.tables import UtcDateTime

GENESIS = "0" * 64
# What the plain SHA-256 of the entries sealed before the chain was keyed covers (migration 0011).
LEGACY_CONTENT_COLUMNS = ("seq", "recorded", "actor_kind", "actor_id", "roles", "establishment", "client_id",
                          "action", "detail", "resource_type", "resource_id", "outcome", "status", "source",
                          "request_id", "purpose", "count")
CONTENT_COLUMNS = (*LEGACY_CONTENT_COLUMNS, "gap_first", "gap_last")
VOID, ACKNOWLEDGE_GAP = "void", "acknowledge-gap"  # the actions that explain missing numbers
SEAL_BATCH = 5000
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
    statement of its own); return its sequence number. Texts are cleaned and cut to fit: an entry is never
    refused for what it holds."""
    return _insert(session, _entry_values(entry, now), entry.patients)


def record_many(session: Session, entries: list[tuple[AuditEntry, datetime]]) -> None:
    """Insert ``entries`` (each with the time it was recorded) in the session's transaction: on PostgreSQL in one
    round trip (psycopg sends the statements as a pipeline), as ``record`` would one by one (``dui.audit.writer``)."""
    if len(entries) > 1 and is_postgresql(session):
        session.execute(_PG_RECORD.statement, [_pg_parameters(_entry_values(e, now), e.patients) for e, now in entries])
        return
    for entry, now in entries:
        _insert(session, _entry_values(entry, now), entry.patients)


def _entry_values(entry: AuditEntry, now: datetime) -> dict[str, Any]:
    actor = entry.actor
    return {
        "recorded": now, "actor_kind": actor.kind, "actor_id": actor.id, "roles": ",".join(sorted(actor.roles)),
        "establishment": actor.establishment, "client_id": actor.client_id, "action": entry.action,
        "detail": entry.detail, "resource_type": entry.resource_type, "resource_id": entry.resource_id,
        "outcome": entry.outcome, "status": entry.status, "source": entry.source, "request_id": entry.request_id,
        "purpose": entry.purpose, "count": entry.count, "gap_first": None, "gap_last": None,
    }


def void(session: Session, seq: int, now: datetime, *, request_id: str | None = None,
         reason: str = "transaction rolled back") -> int:
    """Record that entry number ``seq`` will never appear: the transaction that recorded it failed to commit.

    Call it in a transaction of its own, after the failure, with the number ``record`` returned; return the
    void's own number. Without it ``dui audit verify`` reports the number as missing. A void naming an entry
    that did commit (a commit whose answer was lost) explains nothing and harms nothing."""
    values = _values(SYSTEM, VOID, "failed", now, detail=reason, request_id=request_id, gap=(seq, seq))
    return _insert(session, values, ())


class GapError(ValueError):
    """An acknowledgement that names numbers which are not a gap of the trail."""


def acknowledge_gap(session: Session, first: int, last: int, reason: str, now: datetime) -> int:
    """Record, as a chained entry of the CLI administrator, that numbers ``first``..``last`` are missing for a
    reason an operator established (a database crash skips up to 32 sequence values on PostgreSQL)."""
    reason = " ".join(reason.split())
    if not reason:
        raise GapError("say why the numbers are missing (--reason)")
    if first < 1 or last < first:
        raise GapError(f"{first}-{last} is not a range of entry numbers")
    present = session.execute(select(func.count()).select_from(audit_event).where(
        audit_event.c.seq.between(first, last))).scalar_one()
    if present:
        raise GapError(f"{_numbers(first, last)}: {present} of these entries are in the trail; acknowledge only "
                       "numbers that are missing")
    after = session.execute(select(func.min(audit_event.c.seq)).where(audit_event.c.seq > last)).scalar_one()
    if after is None:
        raise GapError(f"no entry follows {_numbers(first, last)}: these numbers are not a gap (yet)")
    values = _values(CLI, ACKNOWLEDGE_GAP, "success", now, detail=_numbers(first, last), purpose=reason,
                     source="cli", gap=(first, last))
    return _insert(session, values, ())


def _values(actor: Actor, action: str, outcome: str, now: datetime, *, detail: str | None = None,
            purpose: str | None = None, source: str | None = None, request_id: str | None = None,
            gap: tuple[int, int]) -> dict[str, Any]:
    return {"recorded": now, "actor_kind": actor.kind, "actor_id": actor.id, "roles": ",".join(sorted(actor.roles)),
            "establishment": None, "client_id": None, "action": action, "detail": detail, "resource_type": None,
            "resource_id": None, "outcome": outcome, "status": None, "source": source, "request_id": request_id,
            "purpose": purpose, "count": None, "gap_first": gap[0], "gap_last": gap[1]}


def _pg_parameters(values: dict[str, Any], patients: Iterable[str]) -> dict[str, Any]:
    return {**{name: _clean(value, name) for name, value in values.items()}, "patients": _residents(patients)}


def _residents(patients: Iterable[str]) -> list[str]:
    return sorted({p for p in (_clean(p, "patient_id") for p in patients if p) if p})


def _insert(session: Session, values: dict[str, Any], patients: Iterable[str]) -> int:
    if is_postgresql(session):  # one round trip: the entry and its residents together, on psycopg directly
        if values["recorded"].tzinfo is None:  # what the column's type refuses on the session's path
            raise ValueError("naive datetime given to a UTC column")
        return int(_PG_RECORD.rows_writing(session, _pg_parameters(values, patients))[0][0])
    values = {name: _clean(value, name) for name, value in values.items()}
    residents = _residents(patients)
    seq = int(session.execute(insert(audit_event).values(**values).returning(audit_event.c.seq)).scalar_one())
    if residents:
        session.execute(insert(audit_event_patient), [{"seq": seq, "patient_id": p} for p in residents])
    return seq


# Control characters (NUL would stop PostgreSQL's insert) and lone surrogates (not encodable) become U+FFFD.
_UNWRITABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SIZES: dict[str, int] = {
    column.name: column.type.length for column in (*audit_event.c, audit_event_patient.c.patient_id)
    if isinstance(column.type, String) and column.type.length}


def _clean(value: Any, name: str) -> Any:
    if not isinstance(value, str):
        return value
    if value.isascii() and value.isprintable():  # most texts: nothing to replace (ASCII controls are unprintable)
        return value[:_SIZES[name]]
    return _UNWRITABLE.sub("\ufffd", value)[:_SIZES[name]]


# The database gives the entry its number, its transaction id and empty chain columns (migration 0011).
_COLUMNS = ("recorded", "actor_kind", "actor_id", "roles", "establishment", "client_id", "action", "detail",
            "resource_type", "resource_id", "outcome", "status", "source", "request_id", "purpose", "count",
            "gap_first", "gap_last")
# One statement: the entry and its residents. Run through the session for a batch (``record_many``), on the
# writing unit's own connection for one entry (``_insert``), and by the audit writer's connection (``PG_RECORD_SQL``).
_PG_RECORD = DirectQuery(text(
    f"WITH e AS (INSERT INTO audit_event ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _COLUMNS)}) RETURNING seq), "
    "p AS (INSERT INTO audit_event_patient (seq, patient_id) SELECT e.seq, unnest(CAST(:patients AS text[])) FROM e) "
    "SELECT seq FROM e"
).bindparams(bindparam("recorded", type_=UtcDateTime()), bindparam("gap_first", type_=BigInteger()),
             bindparam("gap_last", type_=BigInteger())))
PG_RECORD_SQL = _PG_RECORD.sql  # psycopg's placeholders (%(name)s)


def pg_parameters(entry: AuditEntry, now: datetime) -> dict[str, Any]:
    """The parameters of ``PG_RECORD_SQL`` for ``entry``: cleaned and cut as ``record`` does, the time in UTC."""
    if now.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return _pg_parameters(_entry_values(entry, now.astimezone(UTC)), entry.patients)


def seal(session: Session, key: AuditKey) -> int:
    """Chain the entries that have settled, in entry order, with ``key``; return how many were sealed."""
    advisory_lock(session, "audit:seal")
    position, previous, _ = _head(session)
    stmt = select(audit_event).where(audit_event.c.chain_pos.is_(None)).order_by(audit_event.c.seq)
    if is_postgresql(session):
        horizon = session.execute(select(literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                                                        BigInteger))).scalar_one()
        # No xid: recorded before revision 0011 by other means than the service; long settled. An xid this server
        # has not given yet (at or past the statement's own snapshot's xmax) comes from another server's counter: a
        # dump restored here. It was committed there, and nothing running here can come before it.
        restored = audit_event.c.xid >= literal_column("pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
                                                       BigInteger)
        stmt = stmt.where(or_(audit_event.c.xid < horizon, audit_event.c.xid.is_(None), restored))
    rows = session.execute(stmt.limit(SEAL_BATCH)).mappings().all()
    patients = _patients(session, [r["seq"] for r in rows])
    changes = []
    for row in rows:
        position += 1
        digest = chain_hash(key, previous, content(row, patients.get(row["seq"], [])))
        changes.append({"s": row["seq"], "pos": position, "prev": previous, "h": digest, "k": key.key_id})
        previous = digest
    if changes:
        session.execute(update(audit_event).where(audit_event.c.seq == bindparam("s"))
                        .values(chain_pos=bindparam("pos"), prev_hash=bindparam("prev"), hash=bindparam("h"),
                                key_id=bindparam("k")), changes)
    return len(changes)


@dataclass(frozen=True)
class Verification:
    sealed: int
    unsealed: int
    problem: str | None  # the first break found, None when the trail holds
    unverifiable: bool = False  # the problem is a key this process does not hold (or a forged key id)
    legacy: int = 0  # entries sealed with plain SHA-256, before the chain was keyed
    heads: int = 0  # heads checked
    explained: int = 0  # missing numbers explained by a void or an acknowledgement
    pending: int = 0  # missing numbers too recent to judge (PostgreSQL: a transaction may still end)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session, keys: AuditKeys, *, heads: Iterable[Head] = (), now: datetime | None = None,
           grace: float = 0.0) -> Verification:
    """Recompute the chain from its start; then check the heads and the numbering; report the first problem.

    ``grace`` (PostgreSQL): a missing number is judged once an entry recorded at least that many seconds before
    ``now`` follows it in the chain, so that a transaction which took it has ended and recorded its void."""
    by_position: dict[int, list[Head]] = {}
    for head in heads:
        by_position.setdefault(head.position, []).append(head)
    previous, expected, checked, legacy = GENESIS, 1, 0, 0
    segments: list[str] = []  # the keys met along the chain, in order: a rotation never goes back

    def stop(problem: str, unverifiable: bool = False) -> Verification:
        return Verification(checked, _unsealed(session), problem, unverifiable, legacy, 0)

    for rows, patients in _sealed_batches(session):
        for row in rows:
            position, seq, key_id = row["chain_pos"], row["seq"], row["key_id"]
            if position != expected:
                return stop(f"entry missing at chain position {expected} (next found: {position})")
            if row["prev_hash"] != previous:
                return stop(f"chain broken at position {position}: its link does not match the entry before it")
            if key_id is None:
                if segments:
                    return stop(f"entry at chain position {position} (seq {seq}) carries no audit key id after "
                                "entries sealed with the audit key: the chain was recomputed without the key")
                digest = legacy_hash(previous, legacy_content(row, patients.get(seq, [])))
                legacy += 1
            else:
                if not segments or segments[-1] != key_id:
                    if key_id in segments:
                        return stop(f"entry at chain position {position} (seq {seq}) goes back to audit key "
                                    f"{key_id} after {segments[-1]}: the chain was recomputed with a replaced key")
                    segments.append(key_id)
                key = keys.find(key_id)
                if key is None:
                    return stop(f"entry at chain position {position} (seq {seq}) names audit key {key_id}, which "
                                f"this process does not hold (it holds {', '.join(keys.ids)}): after a rotation "
                                "set DUI_AUDIT_KEY_PREVIOUS_FILE; otherwise the entry was re-chained with another "
                                "key", unverifiable=True)
                digest = chain_hash(key, previous, content(row, patients.get(seq, [])))
            if digest != row["hash"]:
                return stop(f"entry at chain position {position} (seq {seq}) was altered after it was sealed")
            for head in by_position.get(position, ()):
                if head.hash != digest or (head.key_id or None) != key_id:
                    return stop(f"chain position {position} does not match the head sealed at {head.time} (heads "
                                f"line {head.line}): the chain was recomputed after that seal")
            previous, expected, checked = digest, expected + 1, checked + 1
    if by_position:
        top = max(by_position)
        if top > checked:
            head = by_position[top][0]
            return stop(f"the chain ends at position {checked}, but the head sealed at {head.time} (heads line "
                        f"{head.line}) names position {top}: sealed entries were removed from the end")
    numbering = _check_numbering(session, now, grace)
    return Verification(checked, _unsealed(session), numbering.problem, False, legacy,
                        sum(len(v) for v in by_position.values()), numbering.explained, numbering.pending)


@dataclass(frozen=True)
class _Numbering:
    problem: str | None
    explained: int
    pending: int


def _check_numbering(session: Session, now: datetime | None, grace: float) -> _Numbering:
    """Every number of ``seq`` below the last judged sealed entry must be an entry, or be explained by a void or an
    acknowledgement recorded after it."""
    judged = select(func.max(audit_event.c.seq)).where(audit_event.c.chain_pos.is_not(None))
    if is_postgresql(session) and grace > 0 and now is not None:
        judged = judged.where(audit_event.c.recorded <= now - timedelta(seconds=grace))
    upto = session.execute(judged).scalar_one() or 0
    previous = func.lag(audit_event.c.seq).over(order_by=audit_event.c.seq)
    numbered = select(audit_event.c.seq.label("seq"), previous.label("prev")).subquery()
    missing = session.execute(select(func.coalesce(numbered.c.prev, 0), numbered.c.seq)
                              .where(numbered.c.seq - func.coalesce(numbered.c.prev, 0) > 1)
                              .order_by(numbered.c.seq)).all()
    explanations = session.execute(
        select(audit_event.c.seq, audit_event.c.gap_first, audit_event.c.gap_last)
        .where(audit_event.c.gap_first.is_not(None), audit_event.c.action.in_((VOID, ACKNOWLEDGE_GAP)))).all()
    explained = pending = 0
    for before, after in missing:
        first, last = int(before) + 1, int(after) - 1
        if after > upto:
            pending += last - first + 1
            continue
        # Only an explanation recorded after a number explains it: nobody can excuse the future in advance.
        covers = sorted((max(first, int(a)), min(last, int(b), int(seq) - 1)) for seq, a, b in explanations)
        covers = [(low, high) for low, high in covers if low <= high]
        cursor = first
        for low, high in covers:
            if high < cursor:
                continue
            if low > cursor:
                break
            explained += high - cursor + 1
            cursor = high + 1
        if cursor <= last:
            end = min(last, min((low - 1 for low, _ in covers if low > cursor), default=last))
            where = f"between seq {before} and {after}" if before else f"before seq {after}"
            return _Numbering(f"{_numbers(cursor, end)} missing from the trail ({where}): deleted before being "
                              "sealed, or lost without a void; after investigating, `dui audit acknowledge-gap "
                              f"{_numbers(cursor, end, bare=True)} --reason TEXT`", explained, pending)
    return _Numbering(None, explained, pending)


def _numbers(first: int, last: int, *, bare: bool = False) -> str:
    span = str(first) if first == last else f"{first}-{last}"
    return span if bare else ("seq " if first == last else "seqs ") + span


def content(row: Any, patients: list[str]) -> bytes:
    """The canonical bytes a keyed entry's hash covers."""
    return _canonical(row, CONTENT_COLUMNS, patients)


def legacy_content(row: Any, patients: list[str]) -> bytes:
    """The canonical bytes of an entry sealed before the chain was keyed."""
    return _canonical(row, LEGACY_CONTENT_COLUMNS, patients)


def _canonical(row: Any, columns: tuple[str, ...], patients: list[str]) -> bytes:
    values = [_plain(row[name]) for name in columns]
    return json.dumps([*values, sorted(patients)], separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(key: AuditKey, previous: str, data: bytes) -> str:
    return key.mac(previous.encode("ascii") + data)


def legacy_hash(previous: str, data: bytes) -> str:
    """The unkeyed link of entries sealed before migration 0011: anyone can recompute it."""
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


def head(session: Session) -> tuple[int, str, str | None]:
    """The chain's last position, hash and key id (0 and the genesis hash when nothing is sealed)."""
    return _head(session)


def _head(session: Session) -> tuple[int, str, str | None]:
    row = session.execute(select(audit_event.c.chain_pos, audit_event.c.hash, audit_event.c.key_id)
                          .where(audit_event.c.chain_pos.is_not(None))
                          .order_by(audit_event.c.chain_pos.desc()).limit(1)).first()
    return (int(row.chain_pos), str(row.hash), row.key_id) if row else (0, GENESIS, None)


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

