"""Re-encryption of stored bodies under the active data key (``dui keys reencrypt``), and body counts.

After ``dui keys rotate --data-key``, and once after upgrading a database whose bodies predate encryption,
the bodies sealed with a retired key (or still plaintext) are opened and sealed again with the active key.
This is the one change ever made to a ``resource_version`` row, and it leaves its content as it was.

It runs in batches of versions in ``vid`` order, one transaction each, recording its position in
``maintenance_state``: interrupted, it resumes where it stopped. The service keeps running meanwhile: a
version is never written by anyone else, and readers see either form of it, both valid. A run whose active
key has since changed starts over from the first version.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.types import LargeBinary

from dui.crypto import envelope
from dui.crypto.keyring import Keyring
from dui.db import advisory_lock
from dui.fhir.bodies import Bodies
from dui.fhir.tables import resource_version

REENCRYPT = "reencrypt"
_UPDATE = (update(resource_version).where(resource_version.c.vid == bindparam("b_vid"))
           .values(body=bindparam("b_body")))


@dataclass(frozen=True)
class Batch:
    last_vid: int | None  # None: nothing left after the position given
    reencrypted: int


def count_by_key(session: Session) -> Counter[int | None]:
    """Stored bodies per data key id (None: plaintext). Reads every version's first bytes: a full scan."""
    head = func.substr(resource_version.c.body, 1, envelope.HEADER_BYTES)
    counts: Counter[int | None] = Counter()
    for prefix, count in session.execute(select(head, func.count()).where(resource_version.c.body.is_not(None))
                                         .group_by(head)):
        first = bytes(prefix)[:1]
        counts[None if first == b"{" else envelope.HEADER.unpack(bytes(prefix))[2]] += int(count)
    return counts


def count_to_reencrypt(session: Session, header: bytes, after: int) -> int:
    return int(session.execute(select(func.count()).select_from(resource_version)
                               .where(*_scope(header, after))).scalar_one())


def reencrypt_batch(session: Session, keyring: Keyring, after: int, size: int) -> Batch:
    """Seal again with the active key the next ``size`` bodies after version ``after`` that are not sealed
    with it. One unit of work at a time: runs of this command are serialised (PostgreSQL advisory lock)."""
    advisory_lock(session, "dui keys reencrypt")
    bodies = Bodies(session, keyring)
    key = keyring.write_key(session)
    rows = session.execute(
        select(resource_version.c.vid, resource_version.c.rid, resource_version.c.version,
               resource_version.c.res_type, resource_version.c.body)
        .where(*_scope(key.header, after)).order_by(resource_version.c.vid).limit(size)).all()
    if not rows:
        return Batch(None, 0)
    changes: list[dict[str, Any]] = []
    for row in rows:
        plain = bodies.open(row.res_type, row.rid, row.version, row.body)
        assert plain is not None
        changes.append({"b_vid": row.vid, "b_body": envelope.seal(key, plain, row.res_type, row.rid, row.version)})
    session.execute(_UPDATE, changes)
    return Batch(int(rows[-1].vid), len(changes))


def _scope(header: bytes, after: int) -> list[ColumnElement[bool]]:
    return [resource_version.c.vid > after, resource_version.c.body.is_not(None),
            func.substr(resource_version.c.body, 1, len(header)) != literal(header, LargeBinary())]
