"""search index of composite parameters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "search_composite",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("c1_system", sa.String(length=255), nullable=True),
        sa.Column("c1_code", sa.String(length=255), nullable=True),
        sa.Column("c2_system", sa.String(length=255), nullable=True),
        sa.Column("c2_code", sa.String(length=255), nullable=True),
        sa.Column("c2_number", sa.Numeric(precision=36, scale=12), nullable=True),
        sa.Column("c2_low", sa.Numeric(precision=36, scale=12), nullable=True),
        sa.Column("c2_high", sa.Numeric(precision=36, scale=12), nullable=True),
        sa.Column("c2_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("c2_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("c2_text", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_composite_rid_resource")),
    )
    with op.batch_alter_table("search_composite", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_composite_res_type_param_c1_code_c1_system",
            ["res_type", "param", "c1_code", "c1_system"],
            unique=False,
        )
        batch_op.create_index("ix_search_composite_rid", ["rid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("search_composite", schema=None) as batch_op:
        batch_op.drop_index("ix_search_composite_rid")
        batch_op.drop_index("ix_search_composite_res_type_param_c1_code_c1_system")

    op.drop_table("search_composite")
