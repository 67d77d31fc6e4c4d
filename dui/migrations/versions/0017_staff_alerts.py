"""api_client.kind (device clients), staff_alert, staff_alert_event, device_event: fall-sensor alerts
(dui.staff.alerts)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_client") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="client"))
        batch.create_check_constraint("ck_api_client_kind", "kind IN ('client', 'device')")
    op.create_table(
        "staff_alert",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("establishment", sa.String(9), nullable=False),
        sa.Column("unit", sa.String(64), nullable=True),
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("room_name", sa.String(200), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("sensor", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observation_id", sa.String(64), nullable=True),
        sa.Column("flag_id", sa.String(64), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'acknowledged')", name="ck_staff_alert_state"),
        sa.PrimaryKeyConstraint("id", name="pk_staff_alert"),
    )
    op.create_index("ix_staff_alert_open", "staff_alert", ["establishment", "state", "raised_at"])
    op.create_table(
        "staff_alert_event",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("establishment", sa.String(9), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('raised', 'merged', 'acknowledged', 'escalated')",
                           name="ck_staff_alert_event_kind"),
        sa.ForeignKeyConstraint(["alert_id"], ["staff_alert.id"], name="fk_staff_alert_event_alert_id_staff_alert"),
        sa.PrimaryKeyConstraint("seq", name="pk_staff_alert_event"),
    )
    op.create_index("ix_staff_alert_event_establishment", "staff_alert_event", ["establishment", "seq"])
    op.create_table(
        "device_event",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "event_id", name="pk_device_event"),
    )


def downgrade() -> None:
    op.drop_table("device_event")
    op.drop_index("ix_staff_alert_event_establishment", "staff_alert_event")
    op.drop_table("staff_alert_event")
    op.drop_index("ix_staff_alert_open", "staff_alert")
    op.drop_table("staff_alert")
    with op.batch_alter_table("api_client") as batch:
        batch.drop_constraint("ck_api_client_kind", type_="check")
        batch.drop_column("kind")
