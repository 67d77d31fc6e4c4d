"""Maintenance of the store: rebuilding the search index (``dui reindex``).

Rebuilding is needed after the search parameters change (a new version of the service, a custom
parameter). It runs in batches of row ids, each batch in its own transaction, and records its
position in ``maintenance_state``: interrupted, it resumes where it stopped. Writes that happen
meanwhile index themselves with the current parameters, so the service stays up.

The registry's fingerprint (a hash of every indexed parameter's definition) is recorded when a
rebuild completes; ``index_is_current`` compares it with the running code's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, false, func, insert, select, update
from sqlalchemy.orm import Session

from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.sql import SqlFhirRepository
from dui.fhir.tables import maintenance_state, resource

REINDEX = "reindex"
FINGERPRINT = "index_fingerprint"
# What the full-text row (``search_text``) holds: changed when ``dui.fhir.search.fulltext`` extracts otherwise,
# so that an upgrade asks for ``dui reindex`` (which also fills it for resources stored before it existed).
FULL_TEXT = "search_text 1: narrative, content; folded"


def fingerprint(registry: SearchParameterRegistry) -> str:
    """A hash of what the indexer extracts: every indexed parameter of every type."""
    rows: list[Any] = [FULL_TEXT if registry.full_text else "no full text"]
    for rtype in sorted(registry.resource_types()):
        for param in registry.indexed(rtype):
            rows.append([rtype, param.code, param.type, [e.expression for e in param.extractions],
                         [c.expression for c in param.components]])
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:16]


def read_state(session: Session, key: str) -> dict[str, Any] | None:
    value = session.execute(select(maintenance_state.c.value).where(maintenance_state.c.key == key)).scalar()
    return json.loads(value) if value else None


def write_state(session: Session, key: str, value: dict[str, Any] | None, now: datetime) -> None:
    if value is None:
        session.execute(delete(maintenance_state).where(maintenance_state.c.key == key))
        return
    text = json.dumps(value)
    if read_state(session, key) is None:
        session.execute(insert(maintenance_state).values(key=key, value=text, updated=now))
    else:
        session.execute(update(maintenance_state).where(maintenance_state.c.key == key).values(value=text, updated=now))


def record_fingerprint_if_empty(session: Session, registry: SearchParameterRegistry, now: datetime) -> None:
    """On an empty store the index is trivially current: record so, once."""
    if read_state(session, FINGERPRINT) is None and \
            session.execute(select(func.count()).select_from(resource)).scalar_one() == 0:
        write_state(session, FINGERPRINT, {"fingerprint": fingerprint(registry)}, now)


def index_is_current(session: Session, registry: SearchParameterRegistry) -> bool:
    """True when the index was built with the running code's parameters (or the store is empty)."""
    recorded = read_state(session, FINGERPRINT)
    if recorded is not None:
        return bool(recorded.get("fingerprint") == fingerprint(registry))
    return session.execute(select(func.count()).select_from(resource)).scalar_one() == 0


def count_to_index(session: Session, types: Sequence[str], after: int) -> int:
    return int(session.execute(select(func.count()).select_from(resource).where(*_scope(types, after))).scalar_one())


def reindex_batch(repo: SqlFhirRepository, types: Sequence[str], after: int, size: int) -> list[int]:
    """Rewrite the index rows of the next ``size`` current resources after row ``after``; their row ids."""
    rids = [int(r) for r in repo.session.execute(
        select(resource.c.rid).where(*_scope(types, after)).order_by(resource.c.rid).limit(size)).scalars()]
    for version in repo.fetch(rids):
        repo.reindex(version)
    return rids


def _scope(types: Sequence[str], after: int) -> list[Any]:
    conditions = [resource.c.rid > after, resource.c.deleted == false()]
    if types:
        conditions.append(resource.c.res_type.in_(list(types)))
    return conditions
