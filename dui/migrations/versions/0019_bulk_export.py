"""bulk_export: the FHIR Bulk Data exports ($export) and their files (dui.bulk)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bulk_export",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(128), nullable=False),
        sa.Column("establishment", sa.String(9), nullable=True),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("progress", sa.String(500), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("data_key", sa.Integer(), nullable=True),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
                           name="ck_bulk_export_state"),
        sa.PrimaryKeyConstraint("id", name="pk_bulk_export"),
    )
    op.create_index("ix_bulk_export_expires_at", "bulk_export", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_bulk_export_expires_at", table_name="bulk_export")
    op.drop_table("bulk_export")
