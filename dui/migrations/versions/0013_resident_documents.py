"""resident documents: the DLU in force for each resident and whether the record changed since

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resident_document",
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("docref_id", sa.String(64), nullable=True),
        sa.Column("record_version", sa.String(64), nullable=True),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stale_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_change", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("patient_id", "kind", name="pk_resident_document"),
    )
    op.create_index("ix_resident_document_stale", "resident_document", ["kind", "stale_since"])


def downgrade() -> None:
    op.drop_index("ix_resident_document_stale", table_name="resident_document")
    op.drop_table("resident_document")
