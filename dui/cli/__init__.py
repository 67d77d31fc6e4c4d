"""The ``dui`` command: a Flask CLI group; every command is thin and says when to run it."""

from __future__ import annotations

import sys

import click
from flask import Flask
from flask.cli import FlaskGroup, routes_command, shell_command

from dui.crypto.errors import CryptoError
from dui.settings import SettingsError


def _create_app():  # type: ignore[no-untyped-def]
    from dui.app import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False)
@click.version_option(package_name="dui", prog_name="dui")
def cli() -> None:
    """DUI backend: the EHPAD resident's record as FHIR R4, keyed by the INS.

    Configuration comes from DUI_* environment variables (see README.md).
    """


def register(app: Flask) -> None:
    """Attach the commands that work on the app's data to ``app.cli`` (``dui`` finds them there)."""
    from dui.cli import (
        audit,
        auth,
        db,
        demo,
        dmp,
        identity,
        index,
        keys,
        mssante,
        outbox,
        profiles,
        transfer,
        worker,
    )

    app.cli.add_command(db.db)
    app.cli.add_command(demo.demo)
    app.cli.add_command(index.reindex)
    app.cli.add_command(identity.ins)
    app.cli.add_command(identity.residents)
    app.cli.add_command(keys.keys)
    app.cli.add_command(audit.audit)
    app.cli.add_command(auth.clients)
    app.cli.add_command(auth.users)
    app.cli.add_command(transfer.export_command)
    app.cli.add_command(transfer.import_command)
    app.cli.add_command(profiles.profiles)
    app.cli.add_command(worker.worker)
    app.cli.add_command(outbox.outbox)
    app.cli.add_command(dmp.dmp)
    app.cli.add_command(mssante.mssante)


def _register_top_level() -> None:
    from dui.cli import documents, identity, serve

    cli.add_command(serve.serve)
    # An AppGroup: `check` needs no app (with_appcontext=False); a command added with the default gets one.
    cli.add_command(documents.documents)
    cli.add_command(identity.insi_simulator)  # needs no app in the parent process: each worker builds its own
    cli.add_command(routes_command)
    cli.add_command(shell_command)


_register_top_level()
for _param in cli.params:
    if _param.name in ("env_file", "app", "debug") and isinstance(_param, click.Option):
        _param.hidden = True  # Flask's own options: the app is always this one


def main() -> None:
    try:
        cli.main(prog_name="dui")
    except SettingsError as exc:
        click.echo(f"dui: configuration error: {exc}", err=True)
        sys.exit(2)
    except CryptoError as exc:  # a stored body or a key that cannot be read: one line, no traceback
        click.echo(f"dui: encryption at rest: {exc}", err=True)
        sys.exit(1)
