"""The data keys of a process: unwrapped once, kept in memory, looked up by the id a body names.

One ``Keyring`` per process (``dui.services.Services``), shared by its threads. It reads ``data_key``
through the caller's session, so a key is looked up in the caller's transaction and never needs a second
connection (SQLite's single writer would otherwise wait on itself).

- ``data_key(session, id)``: the key a stored body names; unwrapped by the master key whose id its row
  records (the current one, or the previous one during a rotation), then cached for the life of the process.
- ``write_key(session)``: the active key, for new bodies. The answer is cached for ``active_ttl`` seconds, so
  servers follow ``dui keys rotate --data-key`` within that delay without a restart. When no key exists
  yet (first write to a new database), one is created in the caller's transaction; a unique index lets
  only one concurrent creator win, the others take the winner's key.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dui.crypto.envelope import DataKey
from dui.crypto.errors import KeyUnavailable
from dui.crypto.master import KEY_BYTES, MasterKey, MasterKeys, configured_keys, development_keys
from dui.crypto.tables import ACTIVE, data_key
from dui.settings import Settings

ACTIVE_TTL = 60.0  # seconds a process keeps using the active key before looking again
MAX_KEY_ID = 2**31 - 1


def wrap_context(key_id: int) -> bytes:
    """What a wrapped data key is bound to: its own id (a wrapped key copied onto another row fails)."""
    return key_id.to_bytes(4, "big")


def new_key_id() -> int:
    return secrets.randbelow(MAX_KEY_ID) + 1


def keyring_for(settings: Settings) -> Keyring:
    """The process's keyring. Configured master keys are read and checked now (a bad one stops start-up);
    without any, the development key is made or read on first use (refused in ``prod``)."""
    conf = settings.encryption
    masters = configured_keys(conf, prod=settings.is_prod)
    if masters is not None:
        return Keyring(masters)
    return Keyring(lambda: development_keys(conf.dev_key_dir, prod=settings.is_prod))


def _now() -> datetime:
    return datetime.now(UTC)


class Keyring:
    def __init__(self, masters: MasterKeys | Callable[[], MasterKeys], *, active_ttl: float = ACTIVE_TTL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``masters``: the master keys, or a function giving them on first use (the development key)."""
        self._masters = masters if isinstance(masters, MasterKeys) else None
        self._provider = None if isinstance(masters, MasterKeys) else masters
        self.active_ttl = active_ttl
        self._monotonic = monotonic
        self._keys: dict[int, DataKey] = {}
        self._active: tuple[int, float] | None = None  # id, when it was read
        self._lock = threading.Lock()

    # -- master keys ------------------------------------------------------------------------------

    def masters(self) -> MasterKeys:
        if self._masters is None:
            with self._lock:
                if self._masters is None:
                    assert self._provider is not None
                    self._masters = self._provider()
        return self._masters

    def unwrap(self, row: Any) -> DataKey:
        """The data key of a ``data_key`` row (``id``, ``wrapped``, ``master_key_id``), unwrapped."""
        masters = self.masters()
        master = masters.find(row.master_key_id)
        if master is None:
            raise KeyUnavailable(
                f"data key {row.id} is wrapped by master key {row.master_key_id}, which this process does not "
                f"hold (it holds {', '.join(masters.ids)}): check DUI_MASTER_KEY_FILE, and during a rotation "
                "DUI_MASTER_KEY_PREVIOUS_FILE")
        try:
            secret = master.unwrap(bytes(row.wrapped), wrap_context(row.id))
        except KeyUnavailable as exc:
            raise KeyUnavailable(f"data key {row.id}: {exc}") from None
        return DataKey(int(row.id), secret)

    # -- data keys --------------------------------------------------------------------------------

    def data_key(self, session: Session, key_id: int) -> DataKey:
        """The data key ``key_id``; ``KeyUnavailable`` if it does not exist or cannot be unwrapped."""
        key = self._keys.get(key_id)
        if key is not None:
            return key
        row = session.execute(select(data_key.c.id, data_key.c.wrapped, data_key.c.master_key_id)
                              .where(data_key.c.id == key_id)).first()
        if row is None:
            raise KeyUnavailable(f"data key {key_id} does not exist: the database and its data keys do not "
                                 "come from the same backup")
        key = self.unwrap(row)
        self._keys[key_id] = key
        return key

    def write_key(self, session: Session) -> DataKey:
        """The active data key, for new bodies; created (in the caller's transaction) if there is none."""
        active = self._active
        now = self._monotonic()
        if active is not None and now - active[1] < self.active_ttl and active[0] in self._keys:
            return self._keys[active[0]]
        key = self._read_active(session)
        if key is None:
            return self.create(session)  # not cached as active: the caller's transaction may still roll back
        self._active = (key.id, now)
        return key

    def _read_active(self, session: Session) -> DataKey | None:
        row = session.execute(select(data_key.c.id, data_key.c.wrapped, data_key.c.master_key_id)
                              .where(data_key.c.state == ACTIVE)).first()
        if row is None:
            return None
        key = self._keys.get(int(row.id))
        if key is None:
            key = self._keys[int(row.id)] = self.unwrap(row)
        return key

    def create(self, session: Session, master: MasterKey | None = None) -> DataKey:
        """Insert a new active data key, wrapped by ``master`` (the current master key by default).

        Another process may be creating one at the same moment: the unique index on the active state makes
        the second insert fail once the first commits, and the second caller then uses the first one's key.
        Callers that replace the active key (``dui keys rotate --data-key``) retire it first.
        """
        master = master or self.masters().current
        for _attempt in range(5):
            secret = os.urandom(KEY_BYTES)
            key_id = new_key_id()
            try:
                with session.begin_nested():
                    session.execute(insert(data_key).values(
                        id=key_id, wrapped=master.wrap(secret, wrap_context(key_id)), master_key_id=master.key_id,
                        state=ACTIVE, created=_now()))
            except IntegrityError:
                existing = self._read_active(session)
                if existing is not None:
                    return existing
                continue  # the random id was taken: draw another
            return DataKey(key_id, secret)
        raise KeyUnavailable("could not create a data key (five id clashes in a row)")

    def forget(self) -> None:
        """Drop the cached active key (after a rotation in this process); unwrapped keys stay cached."""
        self._active = None

    def clear(self) -> None:
        """Drop every cached key (tests; after restoring a database from another backup)."""
        self._active = None
        self._keys.clear()
