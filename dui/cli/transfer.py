"""``dui export`` and ``dui import``: residents' records to and from another DUI (TDDUI flux 1, ``dui.tddui``).

Run ``dui export --tddui`` when residents leave for another establishment or an establishment changes software,
and ``dui import --tddui FILE`` on the receiving side. Both run as the CLI administrator and go to the audit trail
with the residents they concern (never their data).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from dui.auth.actor import CLI
from dui.bulk import export as bulk_export
from dui.bulk import importer, request
from dui.bulk.files import PlainFolder
from dui.cli.auditing import record_command
from dui.errors import DuiError
from dui.fhir import jsontext
from dui.services import Services
from dui.tddui import consumer, profiles
from dui.tddui.export import Selection, export_bundle, select_residents

_SHOWN = 10  # conformance problems listed after an export


def _services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


@contextmanager
def _one_line(svc: Services, patients: tuple[str, ...] = ()) -> Iterator[None]:
    """A refusal becomes one line and exit status 1, recorded in the audit trail as failed."""
    try:
        yield
    except DuiError as exc:
        record_command(svc, "failed", exc.status, patients=patients)
        details = "; ".join(i.diagnostics for i in exc.issues if i.diagnostics and i.diagnostics != exc.message)
        raise click.ClickException(exc.message + (f" ({details})" if details else "")) from None
    except OSError as exc:
        record_command(svc, "failed", patients=patients)
        raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None


@click.command("export")
@click.option("--tddui", is_flag=True, help="A TDDUI 2.2.0 transfer Bundle (tddui-bundle, flux 1).")
@click.option("--ndjson", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="FHIR Bulk Data NDJSON files (Type.ndjson, Type.2.ndjson...) in this new folder, as $export writes "
                   "them (docs/bulk-export.md).")
@click.option("--type", "types", metavar="T,...", help="With --ndjson: only these resource types.")
@click.option("--since", metavar="INSTANT", help="With --ndjson: only what changed since this instant.")
@click.option("--resident", "residents", multiple=True, metavar="ID", help="A resident's Patient id (repeatable).")
@click.option("--establishment", metavar="FINESS", help="Every resident the establishment's Organization manages.")
@click.option("--all", "everyone", is_flag=True, help="Every resident.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Bundle to this file (default: standard output).")
@with_appcontext
def export_command(tddui: bool, ndjson: Path | None, types: str | None, since: str | None, residents: tuple[str, ...],
                   establishment: str | None, everyone: bool, output: Path | None) -> None:
    """Export records: with --tddui, one TDDUI transaction Bundle for another DUI; with --ndjson, NDJSON files.

    --tddui: the INS of an identity that is not qualified is left out (the sharing gate); the Bundle goes to
    standard output or --output. --ndjson: every stored resource (or --type's), as a system-level $export writes
    them, in clear in the new folder DIR (mode 0700): keep it safe. Progress goes to standard error.
    """
    if tddui == (ndjson is not None):
        raise click.UsageError("say which export: --tddui or --ndjson DIR")
    if ndjson is not None:
        if residents or establishment or everyone or output:
            raise click.UsageError("--ndjson exports every resident's record: --resident, --establishment, --all "
                                   "and --output are for --tddui")
        _export_ndjson(_services(), ndjson, types, since)
        return
    if types or since:
        raise click.UsageError("--type and --since are for --ndjson")
    if sum((bool(residents), establishment is not None, everyone)) != 1:
        raise click.UsageError("say whose records: --resident ID (repeatable), --establishment FINESS or --all")
    svc = _services()
    selection = Selection(residents, establishment, everyone)
    with _one_line(svc, residents), svc.unit_of_work(write=False) as session:
        ctx = svc.fhir_context(session, CLI)
        chosen = select_residents(ctx, selection)
        with click.progressbar(length=len(chosen), label="Exporting residents", file=sys.stderr) as bar:
            done = export_bundle(ctx, chosen, progress=lambda _pid: bar.update(1))
        problems = [i for i in svc.validator.check_profiles(done.bundle, [profiles.BUNDLE.url], policy="warn")
                    if i.severity == "error"]
        body = jsontext.dump(done.bundle)
    with _one_line(svc, done.residents):
        if output is None:
            sys.stdout.buffer.write(body + b"\n")
            sys.stdout.buffer.flush()
        else:
            output.write_bytes(body + b"\n")
    count = len(done.bundle["entry"])
    record_command(svc, patients=done.residents, count=count)
    click.echo(f"TDDUI export: {len(done.residents)} resident(s), {count} resource(s)"
               + (f" written to {output}" if output else ""), err=True)
    for issue in problems[:_SHOWN]:
        click.echo(f"  does not conform: {', '.join(issue.expression)}: {issue.diagnostics}", err=True)
    if problems:
        click.echo(f"warning: {len(problems)} error(s) against {profiles.BUNDLE.url}: a consumer that validates "
                   "(this one does) will refuse the transfer until the records are completed", err=True)


def _export_ndjson(svc: Services, folder: Path, types: str | None, since: str | None) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise click.ClickException(f"{folder} is not empty: name a new folder")
    pairs = [("_type", types)] if types else []
    pairs += [("_since", since)] if since else []
    written = None
    with _one_line(svc), svc.unit_of_work(write=False) as session:
        ctx = svc.fhir_context(session, CLI)
        asked = request.parse(ctx, "system", None, pairs)
        shown: list[str] = []

        def progress(done: int, total: int, rtype: str, count: int) -> bool:
            if not shown or shown[-1] != rtype:
                shown.append(rtype)
                click.echo(f"[{done + 1}/{total}] {rtype}", err=True)
            return True

        written = bulk_export.export(session, ctx, asked, PlainFolder(folder), svc.settings.export, svc.residents,
                                     progress)
    patients = tuple(sorted(written.patients))
    record_command(svc, patients=patients, count=written.resources)
    for info in written.files:
        click.echo(f"  {info.name}: {info.count} resource(s), {info.bytes} bytes", err=True)
    click.echo(f"NDJSON export: {written.resources} resource(s) in {len(written.files)} file(s) written to {folder}, "
               f"{len(patients)} resident(s)")


@click.command("import")
@click.option("--tddui", "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A TDDUI transfer Bundle (tddui-bundle) to create in this store.")
@click.option("--ndjson", "folder", type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="DIR",
              help="The NDJSON files of a bulk export (*.ndjson): each resource put at its id.")
@with_appcontext
def import_command(file: Path | None, folder: Path | None) -> None:
    """Import a TDDUI transfer Bundle (all or nothing, as a POST at the FHIR base), or NDJSON files (each resource
    PUT at its id: idempotent).

    --ndjson DIR: the files of `dui export --ndjson` or of a $export, directory data first, committed in batches;
    an error stops the import naming the file and line, and running it again finishes it."""
    if (file is None) == (folder is None):
        raise click.UsageError("say what to import: --tddui FILE or --ndjson DIR")
    svc = _services()
    if folder is not None:
        _import_ndjson(svc, folder)
        return
    assert file is not None
    with _one_line(svc):
        body = file.read_bytes()
        click.echo(f"Importing {file} ({len(body)} bytes)", err=True)
        with svc.unit_of_work(write=True) as session:
            done = consumer.import_transfer(svc.fhir_context(session, CLI), body)
    total = sum(done.created.values())
    record_command(svc, patients=done.residents, count=total)  # TDDUI
    summary = ", ".join(f"{n} {rtype}" for rtype, n in sorted(done.created.items()))
    click.echo(f"TDDUI import: {total} resource(s) created ({summary})")


def _import_ndjson(svc: Services, folder: Path) -> None:
    shown: list[str] = []

    def progress(name: str, total: int) -> None:
        if not shown or shown[-1] != name:
            shown.append(name)
            click.echo(f"Importing {name}", err=True)

    with _one_line(svc):
        done = importer.import_folder(folder, svc.unit_of_work, lambda session: svc.fhir_context(session, CLI),
                                      svc.residents, progress, svc.settings.export.batch_bytes)
    record_command(svc, patients=tuple(sorted(done.patients)), count=done.total)
    summary = ", ".join(f"{n} {rtype}" for rtype, n in sorted(done.counts.items()))
    click.echo(f"NDJSON import: {done.total} resource(s) put ({summary})")
