"""The DLU kept current: a change the DLU shows marks it stale in the same transaction; ``dui worker`` rebuilds it.

- ``on_change`` is a listener of the FHIR store (``SqlFhirRepository.listeners``, wired by ``Services``): a write
  of a type the documents show (``extract.SOURCE_TYPES``; vital signs and the documents built here left out)
  marks each resident it belongs to (the Patient compartment, as everywhere) in ``resident_document``. The first
  change after a build also tags the DLU in force ``outdated`` (``OUTDATED``), so that a reader of the
  DocumentReference is told, before any rebuild, that the record has changed since.
- ``due`` lists the residents whose DLU is to be rebuilt: quiet for ``quiet`` seconds since their last change
  (a burst of changes gives one rebuild), or stale for ``max_delay`` seconds whatever happens (a resident whose
  record changes all the time still gets a current DLU within that bound).
- ``claim`` takes the row for one rebuild (row lock on PostgreSQL, the write lock on SQLite: a change committed
  meanwhile waits, then marks the new DLU stale again); ``built`` records the new DLU and clears the mark.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dui.direct_sql import DirectQuery
from dui.documents.extract import SOURCE_TYPES, built_here
from dui.documents.tables import resident_document
from dui.fhir.repository import ResourceVersion
from dui.fhir.scope import Residents
from dui.fhir.sql import SqlFhirRepository
from fhir_profiles import CANONICAL

DLU = "DLU"
FRESHNESS_SYSTEM = f"{CANONICAL}/CodeSystem/dui-document-freshness"
OUTDATED = {"system": FRESHNESS_SYSTEM, "code": "outdated",
            "display": "Le dossier a changé depuis ce document : une nouvelle version est en préparation"}
_SOURCES = frozenset(SOURCE_TYPES)


@dataclass(frozen=True)
class Mark:
    """A resident's DLU as ``resident_document`` holds it."""

    patient_id: str
    docref_id: str | None
    record_version: str | None
    built_at: datetime | None
    stale_since: datetime | None
    last_change: datetime | None


def on_change(repo: SqlFhirRepository, version: ResourceVersion) -> None:
    """Mark the DLU of every resident ``version`` belongs to as out of date, when the DLU shows it."""
    if version.type not in _SOURCES:
        return
    body = _body(repo, version)
    if body is None or not shown(version.type, body):
        return
    now = repo.clock()
    for patient_id in sorted(Residents(repo.indexer).of(version.type, body)):
        newly = mark(repo.session, patient_id, now)
        if newly is not None:
            tag_outdated(repo, newly)


def shown(rtype: str, body: dict[str, Any]) -> bool:
    """Whether a DLU shows this resource (it never shows vital signs, nor the documents built here)."""
    if rtype == "DocumentReference":
        return not built_here(body)
    if rtype == "Observation":
        categories = {c.get("code") for concept in body.get("category") or [] for c in concept.get("coding") or []}
        return "vital-signs" not in categories
    return True


def _body(repo: SqlFhirRepository, version: ResourceVersion) -> dict[str, Any] | None:
    if version.body is not None:
        return version.resource()
    if version.version <= 1:
        return None
    before = repo.vread(version.type, version.id, version.version - 1)  # a deletion: what was deleted
    return before.resource() if before is not None and before.body is not None else None


# The two statements of a change to a record (every write of a resource a DLU shows), built once and run on the
# writing unit's own connection (``dui.direct_sql``): the first change since the DLU was built, then the later ones.
_ROW = resident_document.c
_FIRST_CHANGE = DirectQuery(
    update(resident_document)
    .where(_ROW.patient_id == bindparam("patient"), _ROW.kind == bindparam("doc"), _ROW.stale_since.is_(None))
    .values(stale_since=bindparam("now"), last_change=bindparam("now")).returning(_ROW.docref_id))
_LATER_CHANGE = DirectQuery(
    update(resident_document).where(_ROW.patient_id == bindparam("patient"), _ROW.kind == bindparam("doc"))
    .values(last_change=bindparam("now")).returning(_ROW.patient_id))


def mark(session: Session, patient_id: str, now: datetime, kind: str = DLU) -> str | None:
    """Record a change the resident's document does not show. Returns the id of the DocumentReference in force
    when this is the first change since it was built (the caller tags it), else None."""
    params = {"patient": patient_id, "doc": kind, "now": now}
    first = _FIRST_CHANGE.rows_writing(session, params)
    if first:
        return str(first[0][0]) if first[0][0] is not None else None
    if _LATER_CHANGE.rows_writing(session, params):
        return None
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(resident_document).values(
        patient_id=patient_id, kind=kind, stale_since=now, last_change=now)
    session.execute(stmt.on_conflict_do_nothing())
    return None


def tag_outdated(repo: SqlFhirRepository, docref_id: str) -> None:
    """Tag the DocumentReference in force ``outdated`` (a new version of it, in the same transaction)."""
    current = repo.current("DocumentReference", docref_id, for_update=True)
    stored = repo.read("DocumentReference", docref_id)
    if current is None or current.deleted or stored is None or stored.body is None:
        return
    body = copy.deepcopy(stored.resource())
    meta = body.setdefault("meta", {})
    tags = meta.setdefault("tag", [])
    if any(t.get("system") == FRESHNESS_SYSTEM for t in tags):
        return
    tags.append(OUTDATED)
    for key in ("versionId", "lastUpdated"):
        meta.pop(key, None)
    repo.update(current, "DocumentReference", docref_id, body)


def due(session: Session, now: datetime, quiet: float, max_delay: float, limit: int = 100,
        kind: str = DLU) -> list[str]:
    """Residents whose document is to be rebuilt now, the longest waiting first."""
    row = resident_document.c
    stmt = (select(row.patient_id)
            .where(row.kind == kind, row.stale_since.is_not(None),
                   or_(row.last_change <= now - timedelta(seconds=quiet),
                       row.stale_since <= now - timedelta(seconds=max_delay)))
            .order_by(row.stale_since, row.patient_id).limit(limit))
    return list(session.execute(stmt).scalars())


def claim(session: Session, patient_id: str, kind: str = DLU) -> Mark:
    """The resident's row (made if there is none yet), locked until the end of the transaction. Take it before
    reading the record: a change committed meanwhile is then either read, or waits and marks the new DLU stale."""
    row = resident_document.c
    dialect = session.get_bind().dialect.name
    session.execute((pg_insert if dialect == "postgresql" else sqlite_insert)(resident_document)
                    .values(patient_id=patient_id, kind=kind).on_conflict_do_nothing())
    stmt = select(resident_document).where(row.patient_id == patient_id, row.kind == kind)
    if dialect == "postgresql":
        stmt = stmt.with_for_update()
    found = session.execute(stmt).mappings().one()
    return Mark(found["patient_id"], found["docref_id"], found["record_version"], found["built_at"],
                found["stale_since"], found["last_change"])


def built(session: Session, patient_id: str, docref_id: str, record_version: str, now: datetime,
          kind: str = DLU) -> None:
    """The resident's document (its row ``claim``ed) is now ``docref_id``, built from ``record_version``: no
    longer stale."""
    row = resident_document.c
    session.execute(update(resident_document).where(and_(row.patient_id == patient_id, row.kind == kind))
                    .values(docref_id=docref_id, record_version=record_version, built_at=now, stale_since=None,
                            last_change=None))


def forget(session: Session, patient_id: str, kind: str = DLU) -> None:
    """Drop the resident's mark when no document can be built (the resident was deleted)."""
    row = resident_document.c
    session.execute(delete(resident_document).where(row.patient_id == patient_id, row.kind == kind))


def staleness(session: Session, kind: str = DLU) -> dict[str, int]:
    """How many residents have a current document, a stale one, or none yet (``dui documents status``)."""
    row = resident_document.c
    rows = session.execute(select(row.docref_id, row.stale_since).where(row.kind == kind)).all()
    return {"current": sum(1 for d, s in rows if d is not None and s is None),
            "stale": sum(1 for d, s in rows if d is not None and s is not None),
            "never built": sum(1 for d, _ in rows if d is None)}
