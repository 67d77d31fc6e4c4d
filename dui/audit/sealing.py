"""Sealing the audit trail: chain what has settled, then publish the new head (the log, DUI_AUDIT_HEADS_FILE).

Run by ``dui audit seal`` and by ``dui worker`` (every ``SEAL_EVERY`` seconds): until an entry is sealed, only the
database's triggers protect it. Two sealers at once are harmless: ``trail.seal`` takes an advisory lock.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy.orm import Session

from dui.audit import heads, trail
from dui.audit.keys import AuditKey
from dui.audit.trail import SEAL_BATCH as BATCH  # fewer sealed than a batch: nothing settled is left

SEAL_EVERY = 60.0  # seconds between two seals by the worker


def seal_settled(unit_of_work: Callable[..., AbstractContextManager[Session]], key: AuditKey, heads_file: str | None,
                 clock: Callable[[], datetime]) -> int:
    """Seal everything that has settled, then publish the head; how many entries were sealed. ``OSError`` when
    the head could not be written to ``heads_file`` (the entries stay sealed)."""
    total = 0
    while True:
        with unit_of_work(write=True) as session:
            sealed = trail.seal(session, key)
        total += sealed
        if sealed < BATCH:
            break
    if total:
        with unit_of_work(write=False) as session:
            position, digest, key_id = trail.head(session)
        heads.publish(heads.make(position, digest, key_id, clock(), total), heads_file)
    return total
