"""The ``dui`` command: a Flask CLI group; every command is thin and says when to run it."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import click
import sqlalchemy.exc
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
    # Flask's own commands stay at hand for developers, out of the list an administrator reads
    for command in (routes_command, shell_command):
        command.hidden = True
        cli.add_command(command)


_register_top_level()
for _param in cli.params:
    if _param.name in ("env_file", "app", "debug") and isinstance(_param, click.Option):
        _param.hidden = True  # Flask's own options: the app is always this one


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    """A warning as one log line (``dui.warnings``), not Python's two lines quoting the source."""
    logging.getLogger("dui.warnings").warning("%s", message)


def main() -> None:
    warnings.showwarning = _one_line_warning
    try:
        cli.main(prog_name="dui")
    except SettingsError as exc:
        click.echo(f"dui: configuration error: {exc}", err=True)
        sys.exit(2)
    except CryptoError as exc:  # a stored body or a key that cannot be read: one line, no traceback
        click.echo(f"dui: encryption at rest: {exc}", err=True)
        sys.exit(1)
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError) as exc:
        said = database_error(exc)
        if said is None:
            raise
        click.echo(f"dui: {said}", err=True)
        sys.exit(1)


def database_error(exc: BaseException) -> str | None:
    """One line for a database the command cannot use (missing, unreachable, not migrated, an unsupported URL),
    or None for any other error (a bug keeps its traceback)."""
    import os

    url = os.environ.get("DUI_DATABASE_URL", "sqlite:///var/dui.sqlite")
    scheme = url.split(":", 1)[0]
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if isinstance(exc, (sqlalchemy.exc.NoSuchModuleError, ModuleNotFoundError, sqlalchemy.exc.ArgumentError)):
        if isinstance(exc, ModuleNotFoundError) and not scheme.startswith(("mysql", "mariadb", "oracle", "mssql")):
            return None
        return (f"DUI_DATABASE_URL: a {scheme}:// database is not supported; use sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/NAME")
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return None
    lowered = text.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return "the database has no DUI tables yet (not migrated): run `dui db upgrade` first"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return f"cannot use the database ({scheme}, DUI_DATABASE_URL): {text}; check that it exists and is reachable"
    return None
