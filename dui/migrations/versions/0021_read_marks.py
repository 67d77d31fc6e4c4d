"""read marks: where each actor's last write ended in the primary's WAL (PostgreSQL only)

Read-your-writes with a read replica (``dui.replica``, docs/scaling.md): after a unit of work of an actor commits,
the primary's WAL position is kept here under the actor's key; a read of that actor goes to the replica only once
the replica has replayed that far. UNLOGGED: a mark needs no WAL and is only ever read on the primary (a crash of
the primary empties the table; the replica has then to catch up with the recovered primary anyway, which the lag
check sees). Only the primary key is indexed and pages are kept 70 % full: the one update a write makes is a
heap-only update. On SQLite nothing is created: there is no replica.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE UNLOGGED TABLE read_mark (
            actor text NOT NULL,                   -- "staff:<id>", "client:<client id>", ...
            lsn numeric NOT NULL,                  -- pg_current_wal_lsn() - '0/0' after its last write committed
            marked timestamptz NOT NULL,           -- when (one row per actor that ever wrote: no purge needed)
            CONSTRAINT pk_read_mark PRIMARY KEY (actor)
        ) WITH (fillfactor = 70)
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE read_mark")
