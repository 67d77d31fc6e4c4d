"""data keys for encryption at rest

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Bodies written before this revision stay plaintext JSON and remain readable; `dui keys reencrypt`
encrypts them. Downgrading is refused while an encrypted body exists: dropping the data keys would make
those bodies unreadable for good.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_key",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rewrapped", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_key")),
    )
    # At most one active key, whatever the interleaving of the processes that create it.
    op.create_index("ix_data_key_active", "data_key", ["state"], unique=True,
                    postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))


def downgrade() -> None:
    versions = sa.table("resource_version", sa.column("body", sa.LargeBinary()))
    encrypted = op.get_bind().execute(
        sa.select(sa.func.count()).select_from(versions).where(
            versions.c.body.is_not(None),
            sa.func.substr(versions.c.body, 1, 1) != sa.literal(b"{", sa.LargeBinary()),
        )
    ).scalar_one()
    if encrypted:
        raise RuntimeError(f"{encrypted} stored bodies are encrypted: downgrading below revision 0007 would drop "
                           "the keys that decrypt them")
    op.drop_index("ix_data_key_active", table_name="data_key")
    op.drop_table("data_key")
