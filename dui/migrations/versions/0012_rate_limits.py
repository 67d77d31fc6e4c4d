"""rate limits: the token buckets of the database's rate limiter (PostgreSQL only)

One row per key whose bucket is not full (``dui.ratelimit.postgres``). UNLOGGED: the buckets need no WAL (a
crash empties the table, which gives every key a full bucket) and are not replicated. Only the primary key is
indexed and pages are kept 70 % full, so that the one update each request makes is a heap-only update. On
SQLite nothing is created: there each process counts in its own memory.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE UNLOGGED TABLE rate_limit (
            key text NOT NULL,                  -- the bucket: "auth|addr:203.0.113.7", "api|client:...", ...
            tokens double precision NOT NULL,   -- tokens left when last counted
            counted double precision NOT NULL,  -- when, in seconds since the epoch, by the database's clock
            allowed boolean NOT NULL,           -- whether that request was allowed
            full_at double precision NOT NULL,  -- when the bucket is full again: the row may then be deleted
            CONSTRAINT pk_rate_limit PRIMARY KEY (key)
        ) WITH (fillfactor = 70)
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE rate_limit")
