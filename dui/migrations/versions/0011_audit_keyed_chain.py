"""audit trail: keyed chain, gaps explained, no maintenance bypass

- ``key_id`` (the audit key that sealed an entry; NULL for entries sealed before, with plain SHA-256) and
  ``gap_first`` / ``gap_last`` (the numbers a void or an acknowledged gap explains) on ``audit_event``.
- The database numbers each entry and empties its chain columns at insert (PostgreSQL: ``seq`` from its
  sequence, ``xid`` the inserting transaction's, chain columns NULL whatever the insert says; SQLite: a
  number below the highest one given is refused, as is an entry that comes with a chain position), so a
  preset value can neither block nor skew sealing.
- Updates: only a seal filling in the chain columns of an entry with no chain position yet, once. Deletes
  and truncation: refused. Whatever the session's settings: ``dui.audit_maintenance`` and the
  ``audit_maintenance`` table are gone. Maintenance is for the tables' owner (PostgreSQL: disabling the
  triggers; docs/security.md, "Audit trail").
- SQLite: ``audit_event`` is rebuilt with AUTOINCREMENT, so a number is never given twice (a deleted newest
  entry leaves a gap instead of being replaced by the next one).
- The numbers taken before this revision are acknowledged by one entry (action ``acknowledge-gap``, as
  ``dui audit acknowledge-gap`` records): gaps from failed transactions were not explained then.

Downgrade: the entries sealed with the key are unsealed (revision 0009's code chains them again with plain
SHA-256: heads written meanwhile no longer match), the new columns are dropped, 0009's guards are back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = ("seq", "recorded", "xid", "actor_kind", "actor_id", "roles", "establishment", "client_id", "action",
           "detail", "resource_type", "resource_id", "outcome", "status", "source", "request_id", "purpose",
           "count")
_CONTENT = (*_BEFORE, "gap_first", "gap_last")  # every column a seal may not change
_OLD_CHAIN = ("chain_pos", "prev_hash", "hash")
_REFUSED = "the audit trail is append-only"


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _is_postgresql():
        _drop_postgresql_guards()  # 0009's have the same names
        op.add_column("audit_event", sa.Column("gap_first", sa.BigInteger(), nullable=True))
        op.add_column("audit_event", sa.Column("gap_last", sa.BigInteger(), nullable=True))
        op.add_column("audit_event", sa.Column("key_id", sa.String(length=64), nullable=True))
        # The insert trigger gives the number: an insert can no longer choose it.
        op.execute("ALTER TABLE audit_event ALTER COLUMN seq DROP DEFAULT")
        op.drop_table("audit_maintenance")
        _postgresql_guards()
    else:
        for name in ("audit_event_no_delete", "audit_event_patient_no_delete", "audit_event_patient_no_update",
                     "audit_event_no_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        _sqlite_rebuild(keyed=True)
        op.drop_table("audit_maintenance")
        _sqlite_guards()
    _acknowledge_earlier_numbers()


def _postgresql_guards() -> None:
    same = " AND ".join(f"OLD.{c} IS NOT DISTINCT FROM NEW.{c}" for c in _CONTENT)
    op.execute("""
        CREATE FUNCTION audit_event_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.seq := nextval(format('%I.%I', TG_TABLE_SCHEMA, 'audit_event_seq_seq')::regclass);
            NEW.xid := pg_current_xact_id()::text::bigint;
            NEW.chain_pos := NULL;
            NEW.prev_hash := NULL;
            NEW.hash := NULL;
            NEW.key_id := NULL;
            RETURN NEW;
        END $$""")
    # A seal fills in the chain columns of an entry that has no chain position yet, once; nothing else changes.
    op.execute(f"""
        CREATE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.chain_pos IS NULL AND NEW.chain_pos IS NOT NULL AND {same} THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{_REFUSED}: % on % refused', TG_OP, TG_TABLE_NAME;
        END $$""")
    op.execute(f"""
        CREATE FUNCTION audit_event_patient_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                IF EXISTS (SELECT 1 FROM audit_event WHERE seq = NEW.seq AND chain_pos IS NOT NULL) THEN
                    RAISE EXCEPTION '{_REFUSED}: INSERT on audit_event_patient refused (entry % is sealed)', NEW.seq;
                END IF;
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{_REFUSED}: % on % refused', TG_OP, TG_TABLE_NAME;
        END $$""")
    op.execute("CREATE TRIGGER audit_event_insert BEFORE INSERT ON audit_event "
               "FOR EACH ROW EXECUTE FUNCTION audit_event_insert()")
    op.execute("CREATE TRIGGER audit_event_guard BEFORE UPDATE OR DELETE ON audit_event "
               "FOR EACH ROW EXECUTE FUNCTION audit_event_guard()")
    op.execute("CREATE TRIGGER audit_event_patient_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_event_patient "
               "FOR EACH ROW EXECUTE FUNCTION audit_event_patient_guard()")
    for table in ("audit_event", "audit_event_patient"):
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_guard()")


def _drop_postgresql_guards() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_event_insert ON audit_event")
    for table in ("audit_event", "audit_event_patient"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_guard ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    for function in ("audit_event_insert", "audit_event_guard", "audit_event_patient_guard"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")



def _sqlite_guards() -> None:
    same = " AND ".join(f"OLD.{c} IS NEW.{c}" for c in _CONTENT)

    def refuse(message: str) -> str:
        return f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}: {message}'); END"

    # A chain position must come from a seal. Other chain columns given at insert are overwritten by the seal.
    op.execute("CREATE TRIGGER audit_event_insert BEFORE INSERT ON audit_event WHEN NEW.chain_pos IS NOT NULL "
               + refuse("a new entry cannot come with a chain position"))
    # AUTOINCREMENT never gives a number twice; an insert may not take one below the highest given either.
    op.execute("CREATE TRIGGER audit_event_numbering AFTER INSERT ON audit_event "
               "WHEN NEW.seq < (SELECT seq FROM sqlite_sequence WHERE name = 'audit_event') "
               + refuse("a new entry takes the next number"))
    op.execute(f"CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event WHEN NOT "
               f"(OLD.chain_pos IS NULL AND NEW.chain_pos IS NOT NULL AND {same}) "
               + refuse("UPDATE on audit_event refused"))
    op.execute("CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
               + refuse("DELETE on audit_event refused"))
    op.execute("CREATE TRIGGER audit_event_patient_sealed BEFORE INSERT ON audit_event_patient "
               "WHEN (SELECT chain_pos FROM audit_event WHERE seq = NEW.seq) IS NOT NULL "
               + refuse("INSERT on audit_event_patient refused (the entry is sealed)"))
    op.execute("CREATE TRIGGER audit_event_patient_no_update BEFORE UPDATE ON audit_event_patient "
               + refuse("UPDATE on audit_event_patient refused"))
    op.execute("CREATE TRIGGER audit_event_patient_no_delete BEFORE DELETE ON audit_event_patient "
               + refuse("DELETE on audit_event_patient refused"))


_SQLITE_TRIGGERS = ("audit_event_insert", "audit_event_numbering", "audit_event_no_update", "audit_event_no_delete",
                    "audit_event_patient_sealed", "audit_event_patient_no_update", "audit_event_patient_no_delete")


def _sqlite_rebuild(*, keyed: bool) -> None:
    """Rebuild both audit tables (SQLite cannot add AUTOINCREMENT in place): with AUTOINCREMENT and the 0011
    columns (``keyed``), or as revision 0009 made them, unsealing what the key sealed. The residents' table is
    rebuilt too, so that no row ever points at a dropped table (foreign keys are on)."""
    columns: list[sa.Column[Any]] = [
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
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
    ]
    if keyed:
        columns += [sa.Column("gap_first", sa.BigInteger(), nullable=True),
                    sa.Column("gap_last", sa.BigInteger(), nullable=True)]
    columns += [sa.Column("chain_pos", sa.BigInteger(), nullable=True),
                sa.Column("prev_hash", sa.String(length=64), nullable=True),
                sa.Column("hash", sa.String(length=64), nullable=True)]
    if keyed:
        columns.append(sa.Column("key_id", sa.String(length=64), nullable=True))
    op.create_table("audit_event_new", *columns,
                    sa.PrimaryKeyConstraint("seq", name="pk_audit_event"),
                    sa.UniqueConstraint("chain_pos", name="uq_audit_event_chain_pos"),
                    sqlite_autoincrement=keyed)
    names = [c.name for c in columns]
    if keyed:
        copied = [c if c in _BEFORE or c in _OLD_CHAIN else "NULL" for c in names]
    else:  # what the key sealed goes back to unsealed: 0009's code chains it again
        copied = [f"CASE WHEN key_id IS NULL THEN {c} END" if c in _OLD_CHAIN else c for c in names]
    op.execute(f"INSERT INTO audit_event_new ({', '.join(names)}) SELECT {', '.join(copied)} FROM audit_event")
    op.create_table("audit_event_patient_new",
                    sa.Column("seq", sa.Integer(), nullable=False),
                    sa.Column("patient_id", sa.String(length=64), nullable=False),
                    sa.ForeignKeyConstraint(["seq"], ["audit_event_new.seq"],
                                            name="fk_audit_event_patient_seq_audit_event"),
                    sa.PrimaryKeyConstraint("seq", "patient_id", name="pk_audit_event_patient"))
    op.execute("INSERT INTO audit_event_patient_new (seq, patient_id) SELECT seq, patient_id FROM audit_event_patient")
    op.drop_table("audit_event_patient")
    op.drop_table("audit_event")
    op.rename_table("audit_event_new", "audit_event")  # SQLite rewrites the residents' reference to it
    op.rename_table("audit_event_patient_new", "audit_event_patient")
    op.create_index("ix_audit_event_recorded", "audit_event", ["recorded"])
    op.create_index("ix_audit_event_unsealed", "audit_event", ["chain_pos", "seq"])
    op.create_index("ix_audit_event_patient_patient_id", "audit_event_patient", ["patient_id", "seq"])


def _acknowledge_earlier_numbers() -> None:
    """One acknowledged gap for every number taken so far: gaps left by failed transactions were not explained
    before this revision, and are not judged."""
    bind = op.get_bind()
    if _is_postgresql():
        last, called = bind.execute(sa.text("SELECT last_value, is_called FROM audit_event_seq_seq")).one()
        taken = int(last) if called else 0
    else:
        taken = int(bind.execute(sa.text("SELECT coalesce(max(seq), 0) FROM audit_event")).scalar_one())
    if not taken:
        return
    now = datetime.now(UTC)
    span = "seq 1" if taken == 1 else f"seqs 1-{taken}"
    bind.execute(sa.text(
        "INSERT INTO audit_event (recorded, actor_kind, actor_id, roles, action, detail, outcome, source, purpose, "
        "gap_first, gap_last) VALUES (:recorded, 'cli', 'cli', 'administrateur', 'acknowledge-gap', :detail, "
        "'success', 'cli', :purpose, 1, :last)"),
        {"recorded": now if _is_postgresql() else now.replace(tzinfo=None), "detail": span, "last": taken,
         "purpose": "numbers taken before revision 0011: gaps left by failed transactions were not explained then"})


def downgrade() -> None:
    if _is_postgresql():
        _drop_postgresql_guards()
        op.execute("UPDATE audit_event SET chain_pos = NULL, prev_hash = NULL, hash = NULL WHERE key_id IS NOT NULL")
        op.drop_column("audit_event", "key_id")
        op.drop_column("audit_event", "gap_last")
        op.drop_column("audit_event", "gap_first")
        op.execute("ALTER TABLE audit_event ALTER COLUMN seq SET DEFAULT nextval('audit_event_seq_seq'::regclass)")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        _sqlite_rebuild(keyed=False)
    op.create_table("audit_maintenance", sa.Column("id", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_maintenance")))
    if _is_postgresql():
        _postgresql_0009_guards()
    else:
        _sqlite_0009_guards()


# Revision 0009's guards, as it made them (a migration does not import another).
def _postgresql_0009_guards() -> None:
    same = " AND ".join(f"OLD.{c} IS NOT DISTINCT FROM NEW.{c}" for c in _BEFORE)
    refuse = """
            IF current_setting('dui.audit_maintenance', true) = 'on' THEN
                RETURN COALESCE(NEW, OLD);
            END IF;
            RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;"""
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


def _sqlite_0009_guards() -> None:
    same = " AND ".join(f"OLD.{c} IS NEW.{c}" for c in _BEFORE)
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
