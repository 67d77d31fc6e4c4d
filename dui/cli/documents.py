"""``dui documents ...``: clinical documents (CDA R2 of the CI-SIS); docs/documents.md."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import AppGroup

from dui.errors import DuiError
from dui.settings import Settings

MAX_FILE_BYTES = 64 * 1024 * 1024  # read no further: the checker refuses documents beyond its own, smaller limit


@click.group(cls=AppGroup)
def documents() -> None:
    """Clinical documents: CDA R2 of the CI-SIS (DLU-EHPAD DLU, FLUDT, FLUDR; XDS-SD N1)."""


@documents.command(with_appcontext=False)  # reads files and the material only: no app, no database
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--material", type=click.Path(path_type=Path),
              help="The CDA conformance material: a checkout of ANS TestContenuCDA "
                   "(github.com/ansforge/TestContenuCDA-3-0), the folder that holds schematrons/ and "
                   "infrastructure/. Default: the setting DUI_CDA_MATERIAL.")
@click.option("--warnings", "show_warnings", is_flag=True, help="Also print the findings marked as warnings.")
@click.pass_context
def check(ctx: click.Context, files: tuple[Path, ...], material: Path | None, show_warnings: bool) -> None:
    """Check each CDA FILE against the CI-SIS: the extended CDA schema (infrastructure/cda/CDA_extended.xsd),
    then the ANS schematron of its model, chosen by its templateIds: DLU-EHPAD DLU (1.2.250.1.213.1.1.1.22),
    FLUDT (.23), FLUDR (.24), XDS-SD N1 (1.3.6.1.4.1.19376.1.2.20, the CI-SIS "structuration minimale").

    Exit 0 when every file conforms; 1 otherwise, with one line per finding (XSD error, failed assert or
    successful report the schematron does not mark as a warning); 2, in one line, when the material is missing.
    The lines quote the documents: keep them out of logs.
    """
    from dui.documents import conformance

    folder = material or _material_setting()
    if folder is None:
        click.echo("dui: CDA conformance material not set: give --material DIR or set DUI_CDA_MATERIAL (a checkout "
                   "of ansforge/TestContenuCDA-3-0)", err=True)
        ctx.exit(2)
    try:
        conformance.check_material(folder)
    except conformance.MaterialMissing as exc:
        click.echo(f"dui: {exc.message}", err=True)
        ctx.exit(2)
    failed = 0
    for path in files:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        try:
            report = conformance.check(data, folder)
        except DuiError as exc:  # unreadable or unsafe XML, not a CDA document of a known model
            failed += 1
            click.echo(f"{path}: refused: {exc.message}")
            continue
        except conformance.SchematronError as exc:  # the material, not the document
            click.echo(f"dui: {exc}", err=True)
            ctx.exit(2)
        if not report.ok:
            failed += 1
        for line in conformance.lines(report, warnings=show_warnings):
            click.echo(f"{path}: {line}")
        if report.ok:
            extra = [_count(len(report.warnings), "warning")] if report.warnings else []
            extra += [_count(len(report.unchecked), "rule") + " not checked"] if report.unchecked else []
            detail = f" ({', '.join(extra)})" if extra else ""
            click.echo(f"{path}: conforms to {report.model} ({report.schematron}){detail}")
        for unchecked in report.unchecked:
            click.echo(f"{path}: {unchecked.line()}")
    if failed:
        click.echo(f"{failed} of {len(files)} files do not conform", err=True)
        ctx.exit(1)


def _material_setting() -> Path | None:
    configured = Settings.from_env().cda_material
    return Path(configured) if configured else None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@documents.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--patient", "patient_id", help="The resident to file it on (id of her Patient), when the document "
                                              "names her without an INS. Check her identity first.")
def import_command(file: Path, patient_id: str | None) -> None:
    """File a received CDA (a FLUDR back from the emergency department, a VSM, a letter) on its resident: the
    resident holding the INS the document names (birth date and birth name must agree), or --patient. A FLUDR's
    exit diagnoses, exit treatments and devices become part of the record, each traced to the document.
    Filing the same document again changes nothing."""
    from flask import current_app

    from dui.auth.actor import CLI
    from dui.documents import inbound
    from dui.services import Services

    svc: Services = current_app.extensions["dui"]
    with file.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    try:
        with svc.unit_of_work(write=True) as session:
            filed = inbound.file_cda(svc.fhir_context(session, CLI), data, patient_id=patient_id)
    except DuiError as exc:
        raise click.ClickException(f"{file}: {exc.message}") from None
    if not filed.created:
        click.echo(f"{file}: already filed as DocumentReference/{filed.reference.id}")
        return
    click.echo(f"{file}: filed as DocumentReference/{filed.reference.id} on "
               f"{filed.reference.resource()['subject']['reference']}, {filed.items} item(s) added to the record")


@documents.command("status")
def status_command() -> None:
    """How many residents have a current DLU, an out-of-date one (being rebuilt by `dui worker`), none yet."""
    from flask import current_app

    from dui.documents import freshness
    from dui.services import Services

    svc: Services = current_app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        counts = freshness.staleness(session)
    click.echo(", ".join(f"{count} {state}" for state, count in counts.items()))
