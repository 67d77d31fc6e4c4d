"""mssante_mailbox, mssante_received, mssante_inbox: MSSanté mail received, once, and the reconciliation queue
(dui.messaging.receiving, dui.messaging.inbox)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mssante_mailbox",
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("folder", name="pk_mssante_mailbox"),
    )
    op.create_table(
        "mssante_received",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=True),
        sa.Column("docref_ids", sa.Text(), nullable=True),
        sa.Column("mdn_state", sa.String(16), nullable=True),
        sa.Column("mdn_detail", sa.String(200), nullable=True),
        sa.Column("mdn", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint("outcome IN ('filed', 'queued', 'acknowledged')", name="ck_mssante_received_outcome"),
        sa.PrimaryKeyConstraint("id", name="pk_mssante_received"),
        sa.UniqueConstraint("message_id", name="uq_mssante_received_message_id"),
    )
    op.create_table(
        "mssante_inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sender_domain", sa.String(255), nullable=False),
        sa.Column("code", sa.String(8), nullable=True),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("docref_ids", sa.Text(), nullable=True),
        sa.Column("note", sa.String(300), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'assigned', 'rejected')", name="ck_mssante_inbox_state"),
        sa.PrimaryKeyConstraint("id", name="pk_mssante_inbox"),
        sa.UniqueConstraint("message_id", name="uq_mssante_inbox_message_id"),
    )
    op.create_index("ix_mssante_inbox_state_received_at", "mssante_inbox", ["state", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_mssante_inbox_state_received_at", table_name="mssante_inbox")
    op.drop_table("mssante_inbox")
    op.drop_table("mssante_received")
    op.drop_table("mssante_mailbox")
