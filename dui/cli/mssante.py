"""``dui mssante ...``: documents sent over MSSanté, mail received waiting for a person (docs/mssante.md)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui.auth.actor import CLI
from dui.cli.auditing import record_command
from dui.errors import DuiError
from dui.messaging import inbox, sending
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


@mssante.group("inbox", cls=AppGroup)
def inbox_group() -> None:
    """MSSanté mail the worker could not file on a resident by itself (INS unknown or missing, identity
    vigilance, an unreadable message...): list it, file it on the right resident, or reject it."""


@inbox_group.command("list")
@click.option("--all", "everything", is_flag=True, help="Every message received into the queue, decided or not.")
def inbox_list(everything: bool) -> None:
    """The messages waiting for a person (oldest first): id, when received, the sender's domain, the MSSanté
    integration code (902 INS unknown, 903 INS missing, 904 identity vigilance, 905 INS incomplete, 900 the rest,
    '-' an acknowledgement), the reason, the state."""
    svc: Services = current_app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        items = inbox.list_items(session, None if everything else "pending")
    click.echo("id\treceived\tsender\tcode\treason\tstate")
    for item in items:
        received = item.received_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        click.echo(f"{item.id}\t{received}\t{item.sender_domain}\t{item.code or '-'}\t{item.reason}\t{item.state}")


@inbox_group.command("assign")
@click.argument("inbox_id", type=int)
@click.argument("patient_id")
def inbox_assign(inbox_id: int, patient_id: str) -> None:
    """File the documents of message INBOX_ID on the resident PATIENT_ID (Patient id), after checking who the
    document is about: the resident's birth date and names must be the document's (identity vigilance), and a
    document naming an INS is filed only on the resident holding it."""
    svc: Services = current_app.extensions["dui"]
    try:
        with svc.unit_of_work(write=True) as session:
            done = inbox.assign(svc.fhir_context(session, CLI), inbox_id, patient_id)
    except DuiError as exc:
        record_command(svc, "failed")
        raise click.ClickException(exc.message) from None
    filed = ", ".join(f"DocumentReference/{f.reference.id}" for f in done.filed)
    click.echo(f"message {inbox_id}: filed on Patient/{patient_id}: {filed}")


@inbox_group.command("reject")
@click.argument("inbox_id", type=int)
@click.option("--reason", required=True, help="Why, in one line, without health data (e.g. 'not one of our "
              "residents: sender told by phone').")
def inbox_reject(inbox_id: int, reason: str) -> None:
    """Close message INBOX_ID without filing anything (a resident who is not ours, a duplicate, spam...)."""
    svc: Services = current_app.extensions["dui"]
    try:
        with svc.unit_of_work(write=True) as session:
            inbox.reject(svc.fhir_context(session, CLI), inbox_id, reason)
    except DuiError as exc:
        record_command(svc, "failed")
        raise click.ClickException(exc.message) from None
    click.echo(f"message {inbox_id}: rejected")
