"""subscription_ping: the notifications of the Subscriptions' websocket channel (dui.subscriptions.websocket)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscription_ping",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_subscription_ping"),
        sqlite_autoincrement=True,  # a number is never given twice (sockets resume after the last one they sent)
    )
    op.create_index("ix_subscription_ping_subscription", "subscription_ping", ["subscription_id", "seq"])
    op.create_index("ix_subscription_ping_at", "subscription_ping", ["at"])


def downgrade() -> None:
    op.drop_index("ix_subscription_ping_at", table_name="subscription_ping")
    op.drop_index("ix_subscription_ping_subscription", table_name="subscription_ping")
    op.drop_table("subscription_ping")
