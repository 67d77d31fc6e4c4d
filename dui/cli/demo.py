"""``dui demo``: synthetic data to try the service."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import date

import click
from flask import current_app
from flask.cli import AppGroup

from dui.auth import accounts
from dui.auth.actor import CLI
from dui.db import analyze
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.demo.load import load_bundle
from dui.documents import operations
from dui.services import Services

# Local accounts of the demo (development only: demo data and the password grant are refused in prod).
DEMO_FINESS = ESTABLISHMENTS[0]["finess"]
DEMO_PASSWORD = "Demo-Tilleuls-2026"
DEMO_ACCOUNTS = (("demo.medecin", "medecin"), ("demo.infirmier", "infirmier"), ("demo.aide-soignant", "aide-soignant"),
                 ("demo.administratif", "administratif"), ("demo.direction", "direction"))


@click.group(cls=AppGroup)
def demo() -> None:
    """Demonstration data (test INS identities, never real people)."""


@demo.command()
@click.option("--residents", default=24, show_default=True, type=click.IntRange(1, 100_000),
              help="Number of residents, shared between the two demo EHPADs.")
def load(residents: int) -> None:
    """Load two EHPADs, their staff, a partner hospital and RESIDENTS residents with their records.

    Idempotent: running it again rewrites the same resources (unchanged ones get no new version).
    Refused when DUI_ENV=prod.
    """
    svc: Services = current_app.extensions["dui"]
    if svc.settings.is_prod:
        raise click.ClickException("demo data is refused when DUI_ENV=prod")
    anchor = date.today()
    totals: Counter[str] = Counter()
    bundles = [setup_bundle(), *(resident_bundle(i, anchor) for i in range(1, residents + 1))]
    with click.progressbar(bundles, label="Loading demo data", file=sys.stderr) as bar:
        for bundle in bar:
            with svc.unit_of_work(write=True) as session:
                totals += load_bundle(svc.fhir_context(session, CLI), bundle)
    click.echo(f"demo data: {residents} residents, {totals.get('201', 0)} resources created, "
               f"{totals.get('200', 0)} already present")
    analyze(svc.engine)  # the planner's statistics, before anyone searches what was just loaded
    built = 0
    for index in range(1, residents + 1):  # each resident's DLU, as `dui worker` would build it
        with svc.unit_of_work(write=True) as session:
            built += operations.refresh_dlu(svc.fhir_context(session, CLI), f"demo-resident-{index:03d}").created
    click.echo(f"demo documents: {built} DLU built, {residents - built} already current")
    with svc.unit_of_work(write=True) as session:
        made = [login for login, role in DEMO_ACCOUNTS if accounts.get_user(session, login) is None
                and accounts.create_user(session, login, DEMO_PASSWORD, [role], DEMO_FINESS, svc.clock())]
    click.echo(f"demo accounts at {ESTABLISHMENTS[0]['name']} ({len(made)} created): "
               f"{', '.join(login for login, _ in DEMO_ACCOUNTS)}; password {DEMO_PASSWORD}")
