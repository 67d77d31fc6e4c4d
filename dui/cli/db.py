"""``dui db``: schema migrations."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui import migrations
from dui.errors import DuiError
from dui.fhir import maintenance


@click.group(cls=AppGroup)
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command()
def upgrade() -> None:
    """Apply pending migrations. Run after installing or upgrading the service."""
    svc = current_app.extensions["dui"]
    url = svc.settings.database_url
    migrations.upgrade(url)
    click.echo(f"database at revision {migrations.current(url)}")
    with svc.session_factory() as session:
        maintenance.record_fingerprint_if_empty(session, svc.registry, svc.clock())
        session.commit()
        if not maintenance.index_is_current(session, svc.registry):
            click.echo("the search index predates this version's search parameters: run `dui reindex`", err=True)
    # the conformance resources of this version and of the installed packages, served under /fhir
    try:
        with svc.unit_of_work(write=True) as session:
            served = svc.sync_conformance(session)
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    if served.created or served.updated or served.deleted:
        click.echo(f"conformance resources served under /fhir: {served.created} added, {served.updated} changed, "
                   f"{served.deleted} removed")


@db.command()
def current() -> None:
    """Show the database's revision and whether it is up to date."""
    url = current_app.extensions["dui"].settings.database_url
    rev, head = migrations.current(url), migrations.head()
    state = "up to date" if rev == head else f"behind (head is {head}); run `dui db upgrade`"
    click.echo(f"{rev or 'empty'}: {state}")
