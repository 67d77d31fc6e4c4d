"""``dui report``: the direction's indicators of a month as a PDF or a PNG (``dui.staff.indicators``,
``dui.staff.report``; docs/staff-api.md, "Indicators")."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import with_appcontext

from dui.cli.auditing import record_command
from dui.services import Services


@click.command()
@with_appcontext
@click.option("--month", required=True, metavar="YYYY-MM", help="The month (the current one: until now).")
@click.option("--format", "fmt", type=click.Choice(["pdf", "png"]), default="pdf", show_default=True,
              help="pdf: a title page with the figures, then the charts; png: the charts.")
@click.option("--establishment", metavar="FINESS",
              help="The establishment; required when the database holds several.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="The file to write. Default: indicateurs-FINESS-YYYY-MM.pdf (or .png) here.")
def report(month: str, fmt: str, establishment: str | None, output: Path | None) -> None:
    """The indicators of an establishment over a month, as a PDF or PNG report.

    Occupancy, GMP, PMP if recorded, falls per 1,000 resident-days, hospital transfers, DLU freshness and DMP
    feed rate: the figures GET /api/indicators gives the direction, computed on the search index. Runs as the
    administrator. Run it after the month's end (a month in progress is counted until now).
    """
    from dui.staff import indicators  # here: `dui --help` loads neither the FHIR engine nor matplotlib
    from dui.staff import report as drawing

    svc: Services = current_app.extensions["dui"]
    tz = ZoneInfo(svc.settings.timezone)
    now = svc.clock()
    try:
        period = indicators.period_of(month, now, tz)
    except indicators.BadMonth as exc:
        raise click.ClickException(f"--month: {exc}") from None
    with svc.unit_of_work(write=False) as session:
        known = indicators.establishments(session)
        finess = _establishment(establishment, known)
        figures = indicators.compute(session, finess, period, now)
    data = drawing.render(figures, fmt, tz)
    target = output or Path(f"indicateurs-{finess}-{period.month}.{fmt}")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from None
    record_command(svc)
    click.echo(f"report: {figures.get('name') or finess}, {period.month}: {target} ({fmt}, {len(data)} bytes)")


def _establishment(given: str | None, known: list[str]) -> str:
    if given is not None:
        if given not in known:
            raise click.ClickException(f"--establishment: no establishment with FINESS {given!r} provides stays here "
                                       f"(known: {', '.join(known) or 'none'})")
        return given
    if not known:
        raise click.ClickException("no establishment provides stays in this database: nothing to report")
    if len(known) > 1:
        raise click.ClickException(f"the database holds several establishments ({', '.join(known)}): give "
                                   "--establishment FINESS")
    return known[0]
