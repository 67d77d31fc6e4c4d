"""``dui mssante ...``: documents sent over MSSanté, mail received waiting for a person (docs/mssante.md)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui.auth.actor import CLI
from dui.errors import DuiError
from dui.messaging import sending
from dui.services import Services


@click.group(cls=AppGroup)
def mssante() -> None:
    """MSSanté: documents sent to an address, delivered by `dui worker`; received mail to reconcile."""


@mssante.command("send")
@click.argument("docref_id")
@click.option("--to", "address", required=True, help="The recipient's MSSanté address (a professional or "
              "organisational mailbox, or the resident's <INS>@patient.mssante.fr).")
def send(docref_id: str, address: str) -> None:
    """Queue the document DOCREF_ID (a DocumentReference with its CDA) for ADDRESS; `dui worker` sends it (IHE XDM,
    with its PDF) and records the acknowledgement that comes back. Queuing it again changes nothing."""
    svc: Services = current_app.extensions["dui"]
    try:
        with svc.unit_of_work(write=True) as session:
            job = sending.request_send(svc.fhir_context(session, CLI), docref_id, address, svc.clock())
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"DocumentReference/{docref_id}: outbox job {job.id} ({job.state})")
