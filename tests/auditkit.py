"""What only the database's owner can do to the audit tables: the tests' own maintenance (emptying the tables
between tests) and the attacks the audit tests play.

PostgreSQL: ``session_replication_role = replica``, which only a superuser may set (the test session's role),
turns the guards off for one transaction. SQLite: the guards are dropped and made again in one transaction, as
the owner of the file can do; the service itself never does either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

AUDIT_TABLES = ("audit_event", "audit_event_patient")


@contextmanager
def owner_maintenance(conn: Any) -> Iterator[None]:
    """Within ``conn``'s transaction, the audit guards are off until the block ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield
        conn.execute(text("SET LOCAL session_replication_role = DEFAULT"))
        return
    triggers = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
                                 "('audit_event', 'audit_event_patient')")).all()
    for name, _ in triggers:
        conn.execute(text(f'DROP TRIGGER "{name}"'))
    yield
    for _, sql in triggers:
        conn.execute(text(sql))
