"""The ``dui`` command: a Flask CLI group; every command is thin and says when to run it.

The commands are imported when they run, not when ``dui`` starts: ``dui --help`` lists them from ``COMMANDS``
without loading the FHIR engine or the app (a test keeps each line of that table equal to its command's own help).
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup, routes_command, shell_command

from dui.crypto.errors import CryptoError
from dui.settings import SettingsError

# name -> (module, attribute, whether it works on the app's data, its short help). A command on the app's data is
# reached through the app (it runs in its context), unless it is in DIRECT: a group some of whose commands must
# work before the app can start (``dui keys generate`` on a new installation).
COMMANDS: dict[str, tuple[str, str, bool, str]] = {
    "audit": ("dui.cli.audit", "audit", True,
        "The audit trail: every read, search, write and refusal, append-only and chained with the audit key."),
    "clients": ("dui.cli.auth", "clients", True,
        "API clients authenticating with SMART Backend Services (client credentials, private_key_jwt)."),
    "db": ("dui.cli.db", "db", True,
        "Database schema (Alembic migrations)."),
    "demo": ("dui.cli.demo", "demo", True,
        "Demonstration data (test INS identities, never real people)."),
    "dmp": ("dui.cli.dmp", "dmp", True,
        "The DMP (Mon espace santé): documents queued for it, delivered by `dui worker`."),
    "documents": ("dui.cli.documents", "documents", False,
        "Clinical documents: CDA R2 of the CI-SIS (DLU-EHPAD DLU, FLUDT, FLUDR; XDS-SD N1)."),
    "export": ("dui.cli.transfer", "export_command", True,
        "Export records: with --tddui, one TDDUI transaction Bundle for another DUI; with --ndjson, NDJSON "
        "files."),
    "import": ("dui.cli.transfer", "import_command", True,
        "Import a TDDUI transfer Bundle (all or nothing, as a POST at the FHIR base), or NDJSON files (each "
        "resource PUT at its id: idempotent)."),
    "ins": ("dui.cli.identity", "ins", True,
        "The residents' INS: retrieval and verification through INSi, identity-document checks."),
    "insi-simulator": ("dui.cli.identity", "insi_simulator", False,
        "Serve the local INSi simulator over mutual TLS (development and tests only; refused when "
        "DUI_ENV=prod)."),
    "keys": ("dui.cli.keys", "keys", True,
        "Keys of encryption at rest: data keys wrapped by the master key (DUI_MASTER_KEY_FILE)."),
    "mssante": ("dui.cli.mssante", "mssante", True,
        "MSSanté: documents sent to an address, delivered by `dui worker`; received mail to reconcile."),
    "outbox": ("dui.cli.outbox", "outbox", True,
        "The outbox: deliveries to external systems (DMP, MSSanté) run by `dui worker`."),
    "profiles": ("dui.cli.profiles", "profiles", True,
        "Profiles in force: the DUI's own, base FHIR R4, and installed IG packages (FR Core, TDDUI...)."),
    "purge": ("dui.cli.purge", "purge", True,
        "Remove what is past its retention: a dry run unless --yes; never the audit trail."),
    "reindex": ("dui.cli.index", "reindex", True,
        "Rebuild the search index from the stored resources."),
    "report": ("dui.cli.report", "report", True,
        "The indicators of an establishment over a month, as a PDF or PNG report."),
    "residents": ("dui.cli.identity", "residents", True,
        "Residents' records: potential duplicates, merge, and undoing a merge."),
    "serve": ("dui.cli.serve", "serve", False,
        "Serve the API (FHIR at /fhir) with gunicorn or granian."),
    "users": ("dui.cli.auth", "users", True,
        "Local staff accounts (development and small sites; otherwise Pro Santé Connect or the site's IdP)."),
    "worker": ("dui.cli.worker", "worker", True,
        "Run the background work until stopped (SIGTERM or Ctrl-C)."),
}


DIRECT = frozenset({"keys"})


class DuiGroup(FlaskGroup):
    """A FlaskGroup that lists its commands without loading the app, and imports each one only when it runs.

    The app's commands (``register``) are reached through the app, so that they run in its context; the others
    (``serve``, ``documents``, ``insi-simulator``) and those of ``DIRECT`` are imported directly (the commands of
    an AppGroup that need the app load it themselves)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(click.Group.list_commands(self, ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is not None and (not entry[2] or name in DIRECT):
            return _load(name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own = {name: command for name, command in self.commands.items() if not command.hidden}
        listed = sorted([(name, entry[3]) for name, entry in COMMANDS.items()]
                        + [(name, command.get_short_help_str(200)) for name, command in own.items()])
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _ in listed)
            rows = [(name, _short(text, limit)) for name, text in listed]
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _short(text: str, limit: int) -> str:
    """``text`` cut at a word to fit ``limit`` characters, with "..." (as click shortens a command's help)."""
    if len(text) <= limit:
        return text
    cut = text[:max(limit - 3, 0)].rsplit(" ", 1)[0]
    return f"{cut}..."


def _load(name: str) -> click.Command:
    module, attribute, _, _ = COMMANDS[name]
    command: click.Command = getattr(importlib.import_module(module), attribute)
    return command


def _create_app():  # type: ignore[no-untyped-def]
    from dui.app import create_app

    return create_app()


@click.group(cls=DuiGroup, create_app=_create_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False)
@click.version_option(package_name="dui", prog_name="dui")
def cli() -> None:
    """DUI backend: the EHPAD resident's record as FHIR R4, keyed by the INS.

    Configuration comes from DUI_* environment variables (see README.md).
    """


def register(app: Flask) -> None:
    """Attach the commands that work on the app's data to ``app.cli`` (``dui`` finds them there)."""
    for name, (_, _, on_app, _) in COMMANDS.items():
        if on_app:
            app.cli.add_command(_load(name), name)


# Flask's own commands stay at hand for developers, out of the list an administrator reads
for _command in (routes_command, shell_command):
    _command.hidden = True
    cli.add_command(_command)
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
    except Exception as exc:  # a database the command cannot use says so in one line; anything else is a bug
        said = database_error(exc)
        if said is None:
            raise
        click.echo(f"dui: {said}", err=True)
        sys.exit(1)


def database_error(exc: BaseException) -> str | None:
    """One line for a database the command cannot use (missing, unreachable, not migrated, an unsupported URL),
    or None for any other error (a bug keeps its traceback)."""
    import os

    import sqlalchemy.exc  # here: `dui --help` does not pay for SQLAlchemy

    if not isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError)):
        return None
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
