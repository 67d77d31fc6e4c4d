"""outbox: the jobs that reach an external system after a change (dui.outbox)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "state IN ('due', 'running', 'done')"


def upgrade() -> None:
    op.create_table(
        "outbox_job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("leased_by", sa.String(128), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("result", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('due', 'running', 'done', 'dead', 'cancelled')", name="ck_outbox_job_state"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_job"),
    )
    op.create_index("uq_outbox_job_kind_idempotency_key", "outbox_job", ["kind", "idempotency_key"], unique=True,
                    sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))
    op.create_index("ix_outbox_job_state_next_attempt_at", "outbox_job", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_job_state_next_attempt_at", table_name="outbox_job")
    op.drop_index("uq_outbox_job_kind_idempotency_key", table_name="outbox_job")
    op.drop_table("outbox_job")
