"""``dui dmp ...``: feeding the residents' DMP (docs/dmp.md)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui.auth.actor import CLI
from dui.documents import dmp_feed
from dui.errors import DuiError
from dui.services import Services


@click.group(cls=AppGroup)
def dmp() -> None:
    """The DMP (Mon espace santé): documents queued for it, delivered by `dui worker`."""


@dmp.command("send")
@click.argument("docref_id")
def send(docref_id: str) -> None:
    """Queue the document DOCREF_ID (a DocumentReference with its CDA) for the resident's DMP. The rules are
    applied when `dui worker` sends it: a qualified identity, the resident informed, no opposition. Queuing a
    document again changes nothing."""
    svc: Services = current_app.extensions["dui"]
    try:
        with svc.unit_of_work(write=True) as session:
            job = dmp_feed.request_share(svc.fhir_context(session, CLI), docref_id, svc.clock())
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"DocumentReference/{docref_id}: outbox job {job.id} ({job.state})")
