"""The export jobs (``bulk_export``): created by the kick-off with the outbox job that runs them, advanced by the
worker, read by the status endpoint, cancelled by ``DELETE``, removed with their files once expired.

Who asked is kept with the job, and only the same actor (same kind and id) may follow it or download its files: to
anybody else the job does not exist (404). The worker runs the export as that actor again (``requester``): an API
client as registered now (disabled, or moved to another establishment: the export fails), with the scopes its token
was granted at the kick-off.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dui.auth.actor import ANONYMOUS, CLI, Actor
from dui.auth.scopes import ScopeSet
from dui.auth.tables import api_client
from dui.bulk.request import ExportRequest
from dui.bulk.tables import TEXT_LENGTH, bulk_export
from dui.db import is_postgresql
from dui.outbox import queue

KIND = "bulk.export"


@dataclass(frozen=True)
class Export:
    id: str
    actor_kind: str
    actor_id: str
    establishment: str | None
    client_id: str | None
    scopes: str
    request: str
    params: ExportRequest
    state: str
    attempt: int
    progress: str | None
    error: str | None
    output: list[dict[str, Any]]
    data_key: int | None
    transaction_time: datetime | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Export:
        values = dict(row)
        values["params"] = ExportRequest.from_json(json.loads(values["params"]))
        values["output"] = json.loads(values["output"]) if values["output"] else []
        return cls(**values)

    def owned_by(self, actor: Actor) -> bool:
        return self.actor_kind == actor.kind and self.actor_id == actor.id

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def folder(directory: str, export_id: str) -> Path:
    """The export's folder (0700), which holds one folder per attempt."""
    return Path(directory) / export_id


def attempt_folder(directory: str, export: Export) -> Path:
    """Where an attempt writes its files: a worker that lost the export (taken over after its lease expired) removes
    its own files only, never those of the attempt that replaced it."""
    return folder(directory, export.id) / f"attempt-{export.attempt}"


def create(session: Session, actor: Actor, url: str, params: ExportRequest, now: datetime) -> Export:
    """A queued export and the outbox job that runs it, in the session's transaction."""
    export_id = secrets.token_hex(16)
    values = {"id": export_id, "actor_kind": actor.kind, "actor_id": actor.id, "establishment": actor.establishment,
              "client_id": actor.client_id, "scopes": str(actor.scopes), "request": url[:4000],
              "params": json.dumps(params.to_json()), "state": "queued", "attempt": 0, "progress": None,
              "error": None, "output": None, "data_key": None, "transaction_time": None, "created_at": now,
              "finished_at": None, "expires_at": None}
    session.execute(bulk_export.insert().values(**values))
    queue.enqueue(session, KIND, f"BulkExport/{export_id}", export_id, now)
    return load(session, export_id) or _missing(export_id)


def _missing(export_id: str) -> Export:
    raise LookupError(f"bulk export {export_id} vanished")


def load(session: Session, export_id: str, *, for_update: bool = False) -> Export | None:
    stmt = select(bulk_export).where(bulk_export.c.id == export_id)
    if for_update and is_postgresql(session):
        stmt = stmt.with_for_update()
    row = session.execute(stmt).mappings().first()
    return Export.from_row(row) if row is not None else None


def start(session: Session, export_id: str, now: datetime) -> Export | None:
    """The export, now running under a new attempt number; None when it is no longer to be run (cancelled,
    finished, removed)."""
    found = load(session, export_id, for_update=True)
    if found is None or found.state not in ("queued", "running"):
        return None
    _set(session, export_id, state="running", attempt=found.attempt + 1, transaction_time=now,
         progress="started", error=None)
    return load(session, export_id)


def report(session: Session, export: Export, progress: str) -> bool:
    """Record the progress; False when the export is no longer this attempt's to run (cancelled, taken over)."""
    c = bulk_export.c
    done = session.execute(update(bulk_export).where(c.id == export.id, c.state == "running",
                                                     c.attempt == export.attempt)
                           .values(progress=progress[:TEXT_LENGTH])).rowcount  # type: ignore[attr-defined]
    return bool(done)


def complete(session: Session, export: Export, files: list[dict[str, Any]], key_id: int | None, now: datetime,
             retention: timedelta) -> bool:
    c = bulk_export.c
    done = session.execute(update(bulk_export).where(c.id == export.id, c.state == "running",
                                                     c.attempt == export.attempt)
                           .values(state="completed", output=json.dumps(files), data_key=key_id, finished_at=now,
                                   expires_at=now + retention, progress="completed")).rowcount  # type: ignore[attr-defined]
    return bool(done)


def fail(session: Session, export: Export, error: str, now: datetime, retention: timedelta) -> None:
    c = bulk_export.c
    session.execute(update(bulk_export).where(c.id == export.id, c.state == "running", c.attempt == export.attempt)
                    .values(state="failed", error=error[:TEXT_LENGTH], finished_at=now, expires_at=now + retention,
                            progress="failed"))


def cancel(session: Session, export: Export, now: datetime) -> None:
    """Cancelled: a running worker stops at its next page; the files go (``remove_files``, after the commit)."""
    _set(session, export.id, state="cancelled", finished_at=now, expires_at=now, progress="cancelled")


def remove_files(directory: str, export_id: str) -> None:
    shutil.rmtree(folder(directory, export_id), ignore_errors=True)


def _set(session: Session, export_id: str, **values: Any) -> None:
    session.execute(update(bulk_export).where(bulk_export.c.id == export_id).values(**values))


def requester(session: Session, export: Export) -> Actor | None:
    """The actor the export runs as: the requester again; None when it may no longer export (an API client
    disabled, or registered for another establishment since the kick-off)."""
    if export.actor_kind == "anonymous":
        return ANONYMOUS
    if export.actor_kind == "cli":
        return CLI
    if export.actor_kind != "client" or export.client_id is None:
        return None
    row = session.execute(select(api_client).where(api_client.c.client_id == export.client_id)).mappings().first()
    if row is None or not row["enabled"] or row["kind"] != "client" or row["establishment"] != export.establishment:
        return None
    return Actor("client", export.actor_id, frozenset(), export.establishment, scopes=ScopeSet.parse(export.scopes),
                 client_id=export.client_id, auth_method="bulk-export")


def expired(session: Session, now: datetime, limit: int = 100) -> list[str]:
    """Ids of exports past their expiry (their files may go)."""
    c = bulk_export.c
    return list(session.execute(select(c.id).where(c.expires_at <= now).order_by(c.expires_at).limit(limit))
                .scalars())


def remove_expired(session: Session, directory: str, now: datetime, limit: int = 100) -> int:
    """Remove the exports past their expiry, rows and files; how many (``dui worker``'s pass, ``dui purge``)."""
    ids = expired(session, now, limit)
    if ids:
        session.execute(bulk_export.delete().where(bulk_export.c.id.in_(ids)))
        for export_id in ids:
            remove_files(directory, export_id)
    return len(ids)
