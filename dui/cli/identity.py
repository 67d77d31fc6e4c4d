"""``dui ins ...`` (INSi, identity checks) and ``dui residents ...`` (duplicates, merge): the identity use cases
at the command line, run as the CLI administrator. Each resident is handled in its own transaction."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from dui.audit import trail
from dui.auth.actor import CLI
from dui.errors import DuiError
from dui.fhir.interactions.base import FhirContext
from dui.fhir.search.plan import parse_search
from dui.residents import admission, duplicates, merge, operations
from dui.services import Services
from ins import InsKind, InsTraits

T = TypeVar("T")


def _services() -> Services:
    services: Services = current_app.extensions["dui"]
    return services


def _run(action: Callable[[FhirContext], T], patients: tuple[str, ...] = ()) -> T:
    """Run ``action`` in one unit of work, recorded in the audit trail with the command's name; a
    ``DuiError`` becomes one clear line and exit status 1."""
    svc = _services()
    command = click.get_current_context().command_path.removeprefix("dui ")[:64]
    try:
        with svc.unit_of_work(write=True) as session:
            result = action(svc.fhir_context(session, CLI))
            trail.record(session, trail.AuditEntry("operation", "success", CLI, "Patient", None, command,
                                                   source="cli", patients=patients), svc.clock())
            return result
    except DuiError as exc:
        with svc.unit_of_work(write=True) as session:
            trail.record(session, trail.AuditEntry("operation", "failed", CLI, "Patient", None, command,
                                                   exc.status, "cli", patients=patients), svc.clock())
        details = "; ".join(i.diagnostics for i in exc.issues if i.diagnostics and i.diagnostics != exc.message)
        raise click.ClickException(exc.message + (f" ({details})" if details else "")) from None


@click.group(cls=AppGroup)
def ins() -> None:
    """The residents' INS: retrieval and verification through INSi, identity-document checks."""


@ins.command()
@click.argument("patient_id")
def fetch(patient_id: str) -> None:
    """Retrieve the INS of resident PATIENT_ID through INSi (search by its traits)."""
    outcome = _run(lambda ctx: operations.fetch_ins(ctx, _services().insi(), patient_id), patients=(patient_id,))
    click.echo(f"Patient/{patient_id}: INSi {outcome.outcome}, identity {outcome.status.label.lower()}: "
               f"{outcome.message}")
    sys.exit(0 if outcome.outcome == "00" else 1)


@ins.command()
@click.argument("patient_id")
@click.option("--document", required=True, metavar="CODE",
              help="FR Core validation mode of the high-trust document: CN, PA, CS, CE, IE or AC.")
@click.option("--date", "checked", type=click.DateTime(["%Y-%m-%d"]), help="Day of the check (default: today).")
def check(patient_id: str, document: str, checked: Any) -> None:
    """Record that resident PATIENT_ID's identity was checked against an identity document."""
    day: date | None = checked.date() if checked else None
    outcome = _run(lambda ctx: operations.check_document(ctx, patient_id, document.upper(), day),
                   patients=(patient_id,))
    click.echo(f"Patient/{patient_id}: {outcome.message}")


@ins.command()
@click.argument("patient_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every resident whose record holds an INS.")
def verify(patient_ids: tuple[str, ...], all_: bool) -> None:
    """Verify stored INS against INSi again, and report (exit 1 if any was withdrawn or INSi failed).

    A confirmed INS gets a new collection date; an NIA replaced by a NIR is kept with use = old; an
    INS that INSi no longer confirms is withdrawn and the identity steps down (qualifiée -> validée,
    récupérée -> provisoire), with the reason recorded.
    """
    if all_ == bool(patient_ids):
        raise click.UsageError("give resident ids, or --all")
    ids = list(patient_ids) if patient_ids else list(_residents_with_ins())
    report: Counter[str] = Counter()
    with click.progressbar(ids, label="Verifying INS", file=sys.stderr) as bar:
        for pid in bar:
            try:
                outcome = _run(lambda ctx, pid=pid: operations.verify(ctx, _services().insi(), pid),  # type: ignore[misc]
                               patients=(pid,))
                report[outcome.outcome] += 1
                if outcome.outcome in ("withdrawn", "matricule-changed"):
                    click.echo(f"\nPatient/{pid}: {outcome.outcome}: {outcome.message}", err=True)
            except click.ClickException as exc:
                report["failed"] += 1
                click.echo(f"\nPatient/{pid}: {exc.message}", err=True)
    summary = ", ".join(f"{report[k]} {k}" for k in ("confirmed", "matricule-changed", "withdrawn", "no-ins",
                                                     "failed") if report[k])
    click.echo(f"INS verification: {len(ids)} residents: {summary or 'nothing to do'}")
    sys.exit(1 if report["withdrawn"] or report["failed"] else 0)


def _residents_with_ins() -> Iterator[str]:
    """Ids of the Patients with an INS-system identifier, in row order, page by page."""
    systems = ",".join(f"{k.system}|" for k in InsKind)
    cursor = None
    while True:
        def page(ctx: FhirContext, cursor: Any = cursor) -> tuple[list[str], Any]:
            plan = parse_search("Patient", [("identifier", systems)], ctx.registry, ctx.settings.limits, strict=True)
            plan.count, plan.cursor = 500, cursor
            result = ctx.internal.search(plan, total=None)
            return [v.id for v in ctx.internal.fetch(result.rids)], result.next_cursor

        ids, cursor = _run(page)
        yield from ids
        if cursor is None:
            return


@click.group(cls=AppGroup)
def residents() -> None:
    """Residents' records: potential duplicates, merge, and undoing a merge."""


@residents.command("admit")
@click.option("--family", required=True, help="Birth family name.")
@click.option("--given", required=True, help="Birth given names, in order, separated by spaces.")
@click.option("--birth-date", required=True, metavar="YYYY-MM-DD")
@click.option("--sex", required=True, type=click.Choice(["F", "M", "I"]))
@click.option("--birth-place", metavar="COG", help="INSEE code of the birth commune, or 99xxx for a country.")
@click.option("--local-id", help="The establishment's own identifier of the resident (IPP).")
def admit_command(family: str, given: str, birth_date: str, sex: str, birth_place: str | None,
                  local_id: str | None) -> None:
    """Admit a resident with a provisional identity; list the records that may be the same person."""
    traits = InsTraits(family, tuple(given.split()), birth_date, sex, birth_place)
    done = _run(lambda ctx: admission.admit(ctx, traits, local_id))
    click.echo(f"Patient/{done.patient.id} admitted, identity provisoire")
    for version, found in done.duplicates:
        click.echo(f"  may be the same resident as Patient/{version.id} ({found.grade}, {found.score:.3f})")


@residents.command("duplicates")
@click.argument("patient_id")
def duplicates_command(patient_id: str) -> None:
    """List the records that may be the same resident as PATIENT_ID, best first."""
    def find(ctx: FhirContext) -> list[tuple[str, str, float, tuple[str, ...]]]:
        _, patient = operations.load_patient(ctx, patient_id, lock=False)
        return [(v.id, m.grade, m.score, m.reasons) for v, m in duplicates.find_matches(ctx, patient)]

    found = _run(find, patients=(patient_id,))
    for pid, grade, score, reasons in found:
        click.echo(f"Patient/{pid}\t{grade}\t{score:.3f}\t{'; '.join(reasons)}")
    click.echo(f"{len(found)} potential duplicate(s) of Patient/{patient_id}", err=True)


@residents.command("merge")
@click.argument("source")
@click.argument("target")
@click.option("--preview", is_flag=True, help="Say what would move, and change nothing.")
def merge_command(source: str, target: str, preview: bool) -> None:
    """Merge resident SOURCE into TARGET: SOURCE's resources move to TARGET, SOURCE becomes inactive."""
    outcome = _run(lambda ctx: merge.merge(ctx, source, target, preview=preview), patients=(source, target))
    verb = "would move" if preview else "moved"
    click.echo(f"Patient/{source} -> Patient/{target}: {verb} {len(outcome.moved)} resource(s)")


@residents.command("unmerge")
@click.argument("source")
@click.option("--reason", required=True, help="Why the merge is undone (recorded).")
def unmerge_command(source: str, reason: str) -> None:
    """Undo the merge of resident SOURCE: its resources move back and its record is restored."""
    outcome = _run(lambda ctx: merge.unmerge(ctx, source, reason), patients=(source,))
    click.echo(f"Patient/{source} restored: {len(outcome.moved)} resource(s) moved back")


@click.command("insi-simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--dir", "directory", default="var/insi-simulator", show_default=True,
              help="Where the development certificates are (created if missing).")
def insi_simulator(host: str, port: int, directory: str) -> None:
    """Serve the local INSi simulator over mutual TLS (development and tests only; refused when DUI_ENV=prod)."""
    from dui.settings import Settings
    from ins.insi.pki import make_pki
    from ins.insi.simulator import InsiSimulator

    if Settings.from_env().is_prod:
        raise click.ClickException("the INSi simulator is refused when DUI_ENV=prod")
    from dui.demo.register import demo_register

    pki = make_pki(Path(directory))
    with InsiSimulator(demo_register(), pki=pki, host=host, port=port) as simulator:
        click.echo(f"INSi simulator on {simulator.url}")
        click.echo(f"  DUI_INSI_URL={simulator.url} DUI_INSI_CERT={pki.client_cert} DUI_INSI_KEY={pki.client_key} "
                   f"DUI_INSI_CA={pki.ca_cert}")
        try:
            import threading

            threading.Event().wait()
        except KeyboardInterrupt:
            pass


__all__ = ["ins", "insi_simulator", "residents"]
