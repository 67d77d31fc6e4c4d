"""profile packages: the FHIR IG packages installed with ``dui profiles install``

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "profile_package",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=214), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("fhir_version", sa.String(length=32), nullable=False),
        sa.Column("canonical", sa.String(length=400), nullable=True),
        sa.Column("dependencies", sa.Text(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("installed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("installed_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_package")),
        sa.UniqueConstraint("name", name=op.f("uq_profile_package_name")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("profile_package")
