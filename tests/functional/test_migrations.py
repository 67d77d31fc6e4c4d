"""Migrations apply from an empty database and match the tables the code uses."""

from __future__ import annotations

from sqlalchemy import inspect

from dui import migrations
from dui.db import make_engine, metadata


def test_fresh_database_reaches_head_with_every_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    assert migrations.current(url) is None
    migrations.upgrade(url)
    assert migrations.current(url) == migrations.head()
    engine = make_engine(url)
    try:
        # search_text is an FTS5 virtual table on SQLite: its shadow tables hold its index
        names = {n for n in inspect(engine).get_table_names()
                 if n not in {f"search_text_{s}" for s in ("data", "idx", "content", "docsize", "config")}}
        assert names == set(metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_session_database_is_at_head(database_url: str) -> None:
    """The test database (SQLite or PostgreSQL) was built by the migrations, not by create_all."""
    assert migrations.current(database_url) == migrations.head()
    engine = make_engine(database_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("resource_version")}
        assert {"vid", "rid", "version", "res_type", "last_updated", "method", "body"} <= columns
    finally:
        engine.dispose()
