"""What ``dui purge`` removes once its retention is over (docs/retention.md), and how.

Five categories, each a ``Purger`` that can say what it would remove (``survey``) and remove it a batch at a time
(``step``), each batch in the caller's transaction (one unit of work per batch: bounded, safe to interrupt and to run
again, concurrent with a running service):

- ``outbox``: outbox jobs ``done`` or ``cancelled`` (``dead`` ones only when asked) whose last change is older than
  the retention; never a ``due`` or ``running`` one. The ``done`` jobs of the kinds that send a document
  (``SENT_RECORDS``) are kept: they are what makes a second request of the same delivery answer with the job done
  instead of sending the document again.
- ``alerts``: fall-sensor events (``device_event``) and alert events (``staff_alert_event``, but those of an alert
  still open) older than the retention. The alerts (``staff_alert``) and the record (the fall's Observation) stay.
- ``mssante``: rows of the MSSanté reconciliation queue decided (assigned or rejected) before the retention. Their
  Task stays in the record; ``mssante_received`` (the "each message once" guard) stays.
- ``expired``: rows nobody can need whatever the retention: websocket pings older than ``KEEP_SECONDS``, client
  assertion ids past their expiry, full rate-limit buckets (PostgreSQL), and bulk exports past their expiry
  (``DUI_EXPORT_RETENTION_HOURS`` after they completed or failed, at once when cancelled) with their files.
- ``tombstones``: deleted FHIR resources (``TombstonePurger``), only when named.

Rows are deleted ``WHERE key IN (SELECT key ... ORDER BY key LIMIT n) AND <the same conditions>``: PostgreSQL checks
the conditions again on a row changed meanwhile (a dead job retried is kept). The row holding the greatest integer
key of a table is never deleted: SQLite would give its number to the next row, and readers resume after a number
(the SSE stream, websocket pings, ``dui outbox show``). The audit trail is never touched here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    MetaData,
    Table,
    Text,
    and_,
    delete,
    extract,
    func,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.orm import Session

from dui.auth.tables import used_jti
from dui.auth.tokens import LEEWAY
from dui.bulk import jobs as bulk_jobs
from dui.bulk.tables import bulk_export
from dui.crypto.keyring import Keyring
from dui.db import is_postgresql
from dui.documents.tables import resident_document
from dui.fhir.bodies import Bodies
from dui.fhir.tables import (
    INDEX_TABLES,
    resource,
    resource_version,
    search_reference,
    search_text,
    unique_identifier,
)
from dui.messaging.tables import mssante_inbox
from dui.outbox.tables import outbox_job
from dui.settings import ExportSettings
from dui.staff.tables import device_event, staff_alert, staff_alert_event
from dui.subscriptions.tables import subscription_ping
from dui.subscriptions.websocket import KEEP_SECONDS

CATEGORIES = ("outbox", "alerts", "mssante", "expired", "tombstones")
# What a plain `dui purge` does: everything but the record itself, which goes only when named
DEFAULT_CATEGORIES = ("outbox", "alerts", "mssante", "expired")
# Done jobs kept whatever their age: the record that a document was sent there (docs/retention.md)
SENT_RECORDS = ("dmp.send", "mssante.send")

# The rate limiter's buckets (PostgreSQL only, created by migration 0012 outside the service's metadata)
rate_limit = Table("rate_limit", MetaData(), Column("key", Text, primary_key=True), Column("full_at", Float))
_FHIR_TABLES = (*dict.fromkeys(INDEX_TABLES.values()), search_text, unique_identifier)


@dataclass(frozen=True)
class Survey:
    """What a category would remove now: ``rows`` (tombstones: resources, with their ``versions``), the oldest
    moment among them, the rows per table, and what is past the retention but kept (tombstones)."""

    category: str
    rows: int
    oldest: datetime | None
    tables: dict[str, int] = field(default_factory=dict)
    versions: int = 0
    kept: int = 0  # tombstones past the retention that something live refers to
    newest: int = 0  # tombstones past the retention holding the greatest row or version id: kept for now


@dataclass(frozen=True)
class Step:
    """One batch: rows looked at (for progress), rows removed (tombstones: resources, and their versions)."""

    examined: int
    removed: int
    done: bool
    versions: int = 0


class Purger(Protocol):
    category: str

    def survey(self, session: Session) -> Survey: ...

    def step(self, session: Session, limit: int) -> Step: ...


# -- operational tables ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRule:
    """The rows of ``table`` that may go: ``where``, ``when`` their age (``epoch``: seconds since the epoch),
    ``keep_newest`` for an integer key, ``applies`` whether the table is there (``rate_limit``: PostgreSQL)."""

    table: Table
    where: Callable[[], ColumnElement[bool]]
    when: Callable[[], ColumnElement[Any]]
    keep_newest: bool = False
    epoch: bool = False
    applies: Callable[[Session], bool] = lambda session: True
    removed: Callable[[list[Any]], None] | None = None  # told the keys of each batch deleted (files to remove)

    def condition(self) -> ColumnElement[bool]:
        condition = self.where()
        if self.keep_newest:
            (key,) = self.table.primary_key.columns
            condition = and_(condition, key < select(func.max(key)).scalar_subquery())
        return condition

    def survey(self, session: Session) -> tuple[int, datetime | None]:
        if not self.applies(session):
            return 0, None
        count, oldest = session.execute(select(func.count(), func.min(self.when()))
                                        .where(self.condition())).one()
        if oldest is not None and self.epoch:
            oldest = datetime.fromtimestamp(float(oldest), UTC)
        return int(count), oldest

    def delete_batch(self, session: Session, limit: int) -> int:
        if not self.applies(session):
            return 0
        keys = list(self.table.primary_key.columns)
        condition = self.condition()
        pick = select(*keys).where(condition).order_by(*keys).limit(limit)
        chosen = keys[0].in_(pick) if len(keys) == 1 else tuple_(*keys).in_(pick)
        if self.removed is not None:
            gone = list(session.execute(delete(self.table).where(chosen, condition).returning(*keys)).scalars())
            self.removed(gone)
            return len(gone)
        return int(session.execute(delete(self.table).where(chosen, condition)).rowcount)  # type: ignore[attr-defined]


class TablesPurger:
    """A category made of table rules, purged one table after the other."""

    def __init__(self, category: str, rules: Sequence[TableRule]) -> None:
        self.category = category
        self.rules = tuple(rules)
        self._current = 0

    def survey(self, session: Session) -> Survey:
        tables: dict[str, int] = {}
        oldest: datetime | None = None
        for rule in self.rules:
            count, first = rule.survey(session)
            tables[rule.table.name] = tables.get(rule.table.name, 0) + count
            if first is not None and (oldest is None or first < oldest):
                oldest = first
        return Survey(self.category, sum(tables.values()), oldest, tables)

    def step(self, session: Session, limit: int) -> Step:
        while self._current < len(self.rules):
            removed = self.rules[self._current].delete_batch(session, limit)
            if removed:
                return Step(removed, removed, False)
            self._current += 1
        return Step(0, 0, True)


def outbox_purger(cutoff: datetime, *, dead: bool = False) -> TablesPurger:
    c = outbox_job.c
    states = ("done", "cancelled", "dead") if dead else ("done", "cancelled")
    changed = func.coalesce(c.done_at, c.updated_at)
    rule = TableRule(outbox_job, lambda: and_(
        c.state.in_(states), changed < cutoff, or_(c.state != "done", c.kind.not_in(SENT_RECORDS))),
        lambda: changed, keep_newest=True)
    return TablesPurger("outbox", [rule])


def alerts_purger(cutoff: datetime) -> TablesPurger:
    open_alerts = select(staff_alert.c.id).where(staff_alert.c.state == "open")
    return TablesPurger("alerts", [
        TableRule(device_event, lambda: device_event.c.received_at < cutoff,
                  lambda: device_event.c.received_at),
        TableRule(staff_alert_event, lambda: and_(staff_alert_event.c.at < cutoff,
                                                  staff_alert_event.c.alert_id.not_in(open_alerts)),
                  lambda: staff_alert_event.c.at, keep_newest=True),
    ])


def mssante_purger(cutoff: datetime) -> TablesPurger:
    c = mssante_inbox.c
    return TablesPurger("mssante", [TableRule(
        mssante_inbox, lambda: and_(c.state.in_(("assigned", "rejected")), c.decided_at < cutoff),
        lambda: c.decided_at, keep_newest=True)])


def expired_purger(now: datetime, export_dir: str = ExportSettings.directory) -> TablesPurger:
    """Rows past their own use, whatever the retention settings; bulk exports with their files (in ``export_dir``)."""
    database_now = extract("epoch", func.clock_timestamp())  # the rate limiter counts by the database's clock
    return TablesPurger("expired", [
        TableRule(subscription_ping, lambda: subscription_ping.c.at < now - timedelta(seconds=KEEP_SECONDS),
                  lambda: subscription_ping.c.at, keep_newest=True),
        TableRule(used_jti, lambda: used_jti.c.expires_at < int(now.timestamp()) - LEEWAY,
                  lambda: used_jti.c.expires_at, epoch=True),
        TableRule(rate_limit, lambda: rate_limit.c.full_at < database_now, lambda: rate_limit.c.full_at,
                  epoch=True, applies=_has_rate_limit_table),
        TableRule(bulk_export, lambda: bulk_export.c.expires_at <= now, lambda: bulk_export.c.expires_at,
                  removed=partial(_remove_export_files, export_dir)),
    ])


def _remove_export_files(export_dir: str, export_ids: list[Any]) -> None:
    for export_id in export_ids:
        bulk_jobs.remove_files(export_dir, str(export_id))


def _has_rate_limit_table(session: Session) -> bool:
    return is_postgresql(session) and session.execute(text("SELECT to_regclass('rate_limit')")).scalar() is not None


# -- tombstones -----------------------------------------------------------------------------------------------------

_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")


@dataclass
class _Examined:
    last: int | None  # the greatest row id looked at
    count: int
    eligible: list[Any]
    kept: int
    newest: int


class TombstonePurger:
    """Deleted resources whose deletion is older than ``cutoff``, removed whole: every version (the encrypted bodies,
    Binaries' content included), index rows, unique identifiers, the resource row, and the DLU bookkeeping of a
    resident removed. A tombstone is kept (``Survey.kept``) while

    - a live resource refers to it (the search index's references, which every current version has), or
    - the last version it had before its deletion refers to a Patient that is live, or deleted after the cutoff, or
      referred to by a live resource: a deleted entry of a resident's record goes only with the whole record, and
    - it holds the greatest row id or version id of the store (SQLite would reuse the number).

    Row ids are walked in order from a cursor kept between batches; on PostgreSQL the candidates of a batch are
    locked (``FOR UPDATE``), and the Patients they refer to share-locked: a concurrent write bringing one back to
    life waits for the batch, and one that won the race is no longer a candidate (PostgreSQL checks ``deleted`` again
    on the locked row) or keeps the entries of its record."""

    category = "tombstones"

    def __init__(self, cutoff: datetime, keyring: Keyring, batch: int = 500) -> None:
        self.cutoff = cutoff
        self.keyring = keyring
        self.batch = batch
        self._after = 0

    def survey(self, session: Session) -> Survey:
        after, rows, versions, kept, newest, oldest = 0, 0, 0, 0, 0, None
        while True:
            examined = self._examine(session, after, self.batch, lock=False)
            if examined.last is None:
                break
            after = examined.last
            rows += len(examined.eligible)
            kept += examined.kept
            newest += examined.newest
            versions += self._versions(session, [r.rid for r in examined.eligible])
            for row in examined.eligible:
                if oldest is None or row.last_updated < oldest:
                    oldest = row.last_updated
        return Survey(self.category, rows, oldest, {"resource": rows, "resource_version": versions},
                      versions=versions, kept=kept, newest=newest)

    def step(self, session: Session, limit: int) -> Step:
        examined = self._examine(session, self._after, limit, lock=True)
        if examined.last is None:
            return Step(0, 0, True)
        versions = self._remove(session, examined.eligible)
        self._after = examined.last  # a batch that fails is looked at again
        return Step(examined.count, len(examined.eligible), False, versions)

    def _examine(self, session: Session, after: int, limit: int, *, lock: bool) -> _Examined:
        r = resource.c
        stmt = (select(r.rid, r.res_type, r.res_id, r.last_updated)
                .where(r.deleted == true(), r.last_updated < self.cutoff, r.rid > after).order_by(r.rid).limit(limit))
        if lock and is_postgresql(session):
            stmt = stmt.with_for_update(of=resource)
        rows = session.execute(stmt).all()
        if not rows:
            return _Examined(None, 0, [], 0, 0)
        newest = {session.execute(select(func.max(r.rid))).scalar(),
                  session.execute(select(resource_version.c.rid).order_by(resource_version.c.vid.desc())
                                  .limit(1)).scalar()}
        referred = _referred(session, [(row.res_type, row.res_id) for row in rows])
        patients_of = self._patients_of(session, rows)
        purgeable = _purgeable_patients(session, set().union(*patients_of.values()), self.cutoff,
                                        lock=lock and is_postgresql(session))
        eligible, kept, held = [], 0, 0
        for row in rows:
            others = patients_of[row.rid] - ({row.res_id} if row.res_type == "Patient" else set())
            if (row.res_type, row.res_id) in referred or not others <= purgeable:
                kept += 1
            elif row.rid in newest:
                held += 1
            else:
                eligible.append(row)
        return _Examined(rows[-1].rid, len(rows), eligible, kept, held)

    def _patients_of(self, session: Session, rows: Sequence[Any]) -> dict[int, set[str]]:
        """The Patients each resource's last version before its deletion refers to (any element)."""
        v = resource_version.c
        rids = [row.rid for row in rows]
        last = (select(v.rid, func.max(v.version).label("version"))
                .where(v.rid.in_(rids), v.body.is_not(None)).group_by(v.rid).subquery())
        found: dict[int, set[str]] = {rid: set() for rid in rids}
        bodies = Bodies(session, self.keyring)
        for rid, rtype, version, body in session.execute(
                select(v.rid, v.res_type, v.version, v.body)
                .join(last, and_(v.rid == last.c.rid, v.version == last.c.version))):
            opened = bodies.open(rtype, rid, version, body)
            if opened is not None:
                found[rid] = set(_patient_references(json.loads(opened)))
        return found

    def _versions(self, session: Session, rids: Sequence[int]) -> int:
        if not rids:
            return 0
        return int(session.execute(select(func.count()).select_from(resource_version)
                                   .where(resource_version.c.rid.in_(rids))).scalar_one())

    def _remove(self, session: Session, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        rids = [row.rid for row in rows]
        versions = self._versions(session, rids)
        for table in (*_FHIR_TABLES, resource_version):
            session.execute(delete(table).where(table.c.rid.in_(rids)))
        session.execute(delete(resource).where(resource.c.rid.in_(rids), resource.c.deleted == true()))
        patients = [row.res_id for row in rows if row.res_type == "Patient"]
        if patients:  # the DLU bookkeeping of a resident whose record is gone
            session.execute(delete(resident_document).where(resident_document.c.patient_id.in_(patients)))
        return versions


def _referred(session: Session, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (type, id) among ``keys`` that a live resource refers to (only live resources have index rows), looked
    up by type and id (the reference index's order)."""
    by_type: dict[str, set[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, set()).add(rid)
    if not by_type:
        return set()
    sr = search_reference.c
    wanted = or_(*(and_(sr.target_type == rtype, sr.target_id.in_(sorted(ids))) for rtype, ids in by_type.items()))
    return {(t, i) for t, i in session.execute(select(sr.target_type, sr.target_id).distinct().where(wanted))}


def _purgeable_patients(session: Session, ids: set[str], cutoff: datetime, *, lock: bool) -> set[str]:
    """The Patients among ``ids`` whose record may go: absent, or deleted before ``cutoff`` and referred to by no
    live resource. ``lock``: their rows are share-locked until the batch ends (a writer bringing one back waits)."""
    if not ids:
        return set()
    r = resource.c
    stmt = select(r.res_id, r.deleted, r.last_updated).where(r.res_type == "Patient", r.res_id.in_(sorted(ids)))
    if lock:
        stmt = stmt.order_by(r.rid).with_for_update(read=True)
    rows = {res_id: (deleted, last_updated) for res_id, deleted, last_updated in session.execute(stmt)}
    referred = {i for _, i in _referred(session, (("Patient", i) for i in ids))}
    return {i for i in ids if i not in rows
            or (rows[i][0] and rows[i][1] < cutoff and i not in referred)}


def _patient_references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found = _PATIENT_REFERENCE.search(value)
                if found:
                    yield found.group(1)
            else:
                yield from _patient_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patient_references(item)


# -- the categories, as the command builds them ---------------------------------------------------------------------


def purgers(categories: Iterable[str], *, now: datetime, cutoffs: dict[str, datetime], keyring: Keyring,
            dead: bool = False, batch: int = 500, export_dir: str = ExportSettings.directory) -> list[Purger]:
    """The purgers of ``categories``, in the order of ``CATEGORIES``; ``cutoffs``: the moment before which each
    category's rows may go (``expired`` needs none)."""
    built: dict[str, Callable[[], Purger]] = {
        "outbox": lambda: outbox_purger(cutoffs["outbox"], dead=dead),
        "alerts": lambda: alerts_purger(cutoffs["alerts"]),
        "mssante": lambda: mssante_purger(cutoffs["mssante"]),
        "expired": lambda: expired_purger(now, export_dir),
        "tombstones": lambda: TombstonePurger(cutoffs["tombstones"], keyring, batch),
    }
    wanted = set(categories)
    return [built[name]() for name in CATEGORIES if name in wanted]

