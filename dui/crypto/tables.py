"""``data_key``: the data keys (DEK), stored only wrapped by a master key.

At most one key is ``active`` (new bodies are sealed with it), which a partial unique index guarantees
whatever the interleaving of processes; ``retired`` keys still open the bodies they sealed until
``dui keys reencrypt`` has moved those to the active key. Rows are never deleted: a backup of bodies needs
the keys that sealed them.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, LargeBinary, String, Table, text

from dui.db import UtcDateTime, metadata

ACTIVE = "active"
RETIRED = "retired"


data_key = Table(
    "data_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # random, 1 .. 2**31-1; in every body's header
    Column("wrapped", LargeBinary, nullable=False),  # the key, wrapped by the master key below
    Column("master_key_id", String(64), nullable=False),  # MasterKey.key_id that wrapped it
    Column("state", String(16), nullable=False),  # active | retired
    Column("created", UtcDateTime, nullable=False),
    Column("retired", UtcDateTime, nullable=True),
    Column("rewrapped", UtcDateTime, nullable=True),  # last master-key rotation
    Index("ix_data_key_active", "state", unique=True, postgresql_where=text("state = 'active'"),
          sqlite_where=text("state = 'active'")),
)
