"""Alembic environment: the service's own engine settings and metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import dui.audit.tables
import dui.auth.tables
import dui.bulk.tables
import dui.crypto.tables
import dui.documents.tables
import dui.fhir.tables
import dui.messaging.tables
import dui.outbox.tables
import dui.profiles.tables
import dui.staff.tables
import dui.subscriptions.tables  # noqa: F401
from dui.db import make_engine, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `dui db upgrade` against the database")
run_migrations_online()
