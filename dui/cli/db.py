"""``dui db``: schema migrations."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui import migrations


@click.group(cls=AppGroup)
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command()
def upgrade() -> None:
    """Apply pending migrations. Run after installing or upgrading the service."""
    url = current_app.extensions["dui"].settings.database_url
    migrations.upgrade(url)
    click.echo(f"database at revision {migrations.current(url)}")


@db.command()
def current() -> None:
    """Show the database's revision and whether it is up to date."""
    url = current_app.extensions["dui"].settings.database_url
    rev, head = migrations.current(url), migrations.head()
    state = "up to date" if rev == head else f"behind (head is {head}); run `dui db upgrade`"
    click.echo(f"{rev or 'empty'}: {state}")
