"""What ``dui keys`` does to the data keys: list them, rotate the master key, start a new data key.

Each function works in the caller's transaction (the CLI commits). On PostgreSQL the rotations lock
``data_key`` in EXCLUSIVE mode: running servers keep reading keys, and a key created meanwhile by a server
cannot escape the rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from dui.crypto.envelope import DataKey
from dui.crypto.errors import CryptoError, KeyUnavailable
from dui.crypto.keyring import Keyring, wrap_context
from dui.crypto.master import MasterKey
from dui.crypto.tables import ACTIVE, RETIRED, data_key


@dataclass(frozen=True)
class KeyInfo:
    id: int
    state: str
    master_key_id: str
    created: datetime
    retired: datetime | None
    rewrapped: datetime | None
    problem: str | None  # why this process cannot unwrap it, None if it can


@dataclass(frozen=True)
class Rewrapped:
    rewrapped: int  # data keys now wrapped by the new master key
    unchanged: int  # already wrapped by it


def list_keys(session: Session, keyring: Keyring) -> list[KeyInfo]:
    """Every data key, oldest first, each checked against the master keys this process holds."""
    infos = []
    for row in session.execute(select(data_key).order_by(data_key.c.created, data_key.c.id)):
        try:
            keyring.unwrap(row)
            problem = None
        except CryptoError as exc:
            problem = str(exc)
        infos.append(KeyInfo(int(row.id), row.state, row.master_key_id, row.created, row.retired, row.rewrapped,
                             problem))
    return infos


def rotate_data_key(session: Session, keyring: Keyring) -> tuple[DataKey, int | None]:
    """Retire the active data key and create a new one; the new key and the retired one's id.

    Bodies are untouched: the retired key keeps opening what it sealed until ``dui keys reencrypt``.
    """
    _lock(session)
    retired = session.execute(select(data_key.c.id).where(data_key.c.state == ACTIVE)).scalar()
    if retired is not None:
        session.execute(update(data_key).where(data_key.c.id == retired).values(state=RETIRED, retired=_now()))
    key = keyring.create(session)
    keyring.forget()
    return key, None if retired is None else int(retired)


def rotate_master(session: Session, keyring: Keyring, new: MasterKey) -> Rewrapped:
    """Wrap every data key by ``new``; ``KeyUnavailable`` (nothing changed) if one cannot be unwrapped.

    Only the ``data_key`` rows change, in the caller's transaction: all of them or none.
    """
    _lock(session)
    rows = session.execute(select(data_key.c.id, data_key.c.wrapped, data_key.c.master_key_id)
                           .order_by(data_key.c.id)).all()
    done = unchanged = 0
    now = _now()
    for row in rows:
        if row.master_key_id == new.key_id:
            unchanged += 1
            continue
        key = keyring.unwrap(row)
        wrapped = new.wrap(key.secret, wrap_context(key.id))
        if new.unwrap(wrapped, wrap_context(key.id)) != key.secret:  # a master key that cannot read back
            raise KeyUnavailable(f"master key {new.key_id} does not give back data key {key.id}")
        session.execute(update(data_key).where(data_key.c.id == key.id)
                        .values(wrapped=wrapped, master_key_id=new.key_id, rewrapped=now))
        done += 1
    return Rewrapped(done, unchanged)


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE data_key IN EXCLUSIVE MODE"))


def _now() -> datetime:
    return datetime.now(UTC)
