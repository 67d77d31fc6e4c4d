"""``dui dmp ...``: feeding the residents' DMP (docs/dmp.md)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui.auth.actor import CLI
from dui.dmp.metadata import MASKING_DISPLAY
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


def _visibility(docref_id: str, **change: object) -> None:
    svc: Services = current_app.extensions["dui"]
    try:
        with svc.unit_of_work(write=True) as session:
            version = dmp_feed.request_visibility(svc.fhir_context(session, CLI), docref_id, **change)  # type: ignore[arg-type]
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"DocumentReference/{docref_id}: version {version.version}; the DMP is updated by `dui worker` "
               "(dui outbox list)")


_CODES = click.Choice(sorted(MASKING_DISPLAY))


@dmp.command("mask")
@click.argument("docref_id")
@click.option("--code", "codes", type=_CODES, multiple=True, default=("MASQUE_PS",), show_default=True,
              help="TRE_A07 masking code (repeatable): MASQUE_PS hides it from professionals, INVISIBLE_PATIENT "
                   "from the resident until a professional has told her.")
def mask(docref_id: str, codes: tuple[str, ...]) -> None:
    """Mask the document DOCREF_ID in the DMP (and in any later version of it)."""
    _visibility(docref_id, mask=frozenset(codes))


@dmp.command("unmask")
@click.argument("docref_id")
@click.option("--code", "codes", type=_CODES, multiple=True, required=True, help="The masking code to lift.")
def unmask(docref_id: str, codes: tuple[str, ...]) -> None:
    """Lift a masking of the document DOCREF_ID in the DMP."""
    _visibility(docref_id, unmask=frozenset(codes))


@dmp.command("archive")
@click.argument("docref_id")
@click.option("--undo", is_flag=True, help="Bring an archived document back (approved).")
def archive(docref_id: str, undo: bool) -> None:
    """Archive the document DOCREF_ID in the DMP (it stays there, out of the current view)."""
    _visibility(docref_id, availability="approved" if undo else "archived")


@dmp.command("delete")
@click.argument("docref_id")
@click.option("--yes", is_flag=True, help="Confirm: a document deleted from the DMP cannot come back.")
def delete(docref_id: str, yes: bool) -> None:
    """Delete the document DOCREF_ID from the DMP. It stays in the resident's record here."""
    if not yes:
        raise click.ClickException("deleting a document from the DMP cannot be undone: add --yes to confirm")
    _visibility(docref_id, availability="deleted")
