"""``data_key``: the data keys (DEK), stored only wrapped by a master key.

At most one key is ``active`` (new bodies are sealed with it), which a partial unique index guarantees
whatever the interleaving of processes; ``retired`` keys still open the bodies they sealed until
``dui keys reencrypt`` has moved those to the active key. Rows are never deleted: a backup of bodies needs
the keys that sealed them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, Index, Integer, LargeBinary, String, Table, text
from sqlalchemy.types import TypeDecorator

from dui.db import metadata

ACTIVE = "active"
RETIRED = "retired"


class _Utc(TypeDecorator[datetime]):
    """A UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


data_key = Table(
    "data_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # random, 1 .. 2**31-1; in every body's header
    Column("wrapped", LargeBinary, nullable=False),  # the key, wrapped by the master key below
    Column("master_key_id", String(64), nullable=False),  # MasterKey.key_id that wrapped it
    Column("state", String(16), nullable=False),  # active | retired
    Column("created", _Utc, nullable=False),
    Column("retired", _Utc, nullable=True),
    Column("rewrapped", _Utc, nullable=True),  # last master-key rotation
    Index("ix_data_key_active", "state", unique=True, postgresql_where=text("state = 'active'"),
          sqlite_where=text("state = 'active'")),
)
