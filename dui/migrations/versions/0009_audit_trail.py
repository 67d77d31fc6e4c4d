"""audit trail: append-only, hash-chained once sealed

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns a seal may not change (every column but the chain's).
_CONTENT = ("seq", "recorded", "xid", "actor_kind", "actor_id", "roles", "establishment", "client_id", "action",
            "detail", "resource_type", "resource_id", "outcome", "status", "source", "request_id", "purpose",
            "count")


def upgrade() -> None:
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "audit_event",
        sa.Column("seq", row_id, autoincrement=True, nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("xid", sa.BigInteger(), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=False),
        sa.Column("roles", sa.String(length=255), nullable=False),
        sa.Column("establishment", sa.String(length=16), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=255), nullable=True),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("chain_pos", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("chain_pos", name=op.f("uq_audit_event_chain_pos")),
    )
    op.create_index("ix_audit_event_recorded", "audit_event", ["recorded"])
    op.create_index("ix_audit_event_unsealed", "audit_event", ["chain_pos", "seq"])
    op.create_table(
        "audit_event_patient",
        sa.Column("seq", row_id, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["seq"], ["audit_event.seq"], name=op.f("fk_audit_event_patient_seq_audit_event")),
        sa.PrimaryKeyConstraint("seq", "patient_id", name=op.f("pk_audit_event_patient")),
    )
    op.create_index("ix_audit_event_patient_patient_id", "audit_event_patient", ["patient_id", "seq"])
    op.create_table("audit_maintenance", sa.Column("id", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_maintenance")))
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guards()
    else:
        _sqlite_guards()


def _postgresql_guards() -> None:
    same = " AND ".join(f"OLD.{c} IS NOT DISTINCT FROM NEW.{c}" for c in _CONTENT)
    refuse = """
            IF current_setting('dui.audit_maintenance', true) = 'on' THEN
                RETURN COALESCE(NEW, OLD);
            END IF;
            RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;"""
    # A seal may fill in the chain fields of an entry, once; nothing else may change or go.
    op.execute(f"""
        CREATE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF OLD.hash IS NULL AND NEW.hash IS NOT NULL AND {same} THEN
                    RETURN NEW;
                END IF;
            END IF;{refuse}
        END $$""")
    op.execute(f"""
        CREATE FUNCTION audit_event_patient_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN{refuse}
        END $$""")
    for table in ("audit_event", "audit_event_patient"):
        op.execute(f"CREATE TRIGGER {table}_guard BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {table}_guard()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_guard()")


def _sqlite_guards() -> None:
    same = " AND ".join(f"OLD.{c} IS NEW.{c}" for c in _CONTENT)
    free = "(SELECT count(*) FROM audit_maintenance) = 0"
    for table in ("audit_event", "audit_event_patient"):
        op.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} WHEN {free} "
                   f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on {table} refused'); END")
    op.execute(f"CREATE TRIGGER audit_event_patient_no_update BEFORE UPDATE ON audit_event_patient WHEN {free} "
               "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on audit_event_patient refused'); "
               "END")
    op.execute(f"CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event WHEN {free} AND NOT "
               f"(OLD.hash IS NULL AND NEW.hash IS NOT NULL AND {same}) "
               "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on audit_event refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_event", "audit_event_patient"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_guard ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_guard()")
    op.drop_table("audit_maintenance")
    op.drop_table("audit_event_patient")
    op.drop_table("audit_event")
