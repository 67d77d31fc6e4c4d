"""``dui audit ...``: seal and verify the audit trail, export it as FHIR AuditEvent, a resident's access report."""

from __future__ import annotations

import logging
import sys
from datetime import datetime

import click
import orjson
from flask import current_app
from flask.cli import AppGroup

from dui.audit import trail
from dui.audit.export import audit_event
from dui.services import Services

logger = logging.getLogger("dui.audit")


def _services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


@click.group(cls=AppGroup)
def audit() -> None:
    """The audit trail: every read, search, write and refusal, append-only and hash-chained."""


def _seal_all(svc: Services) -> int:
    total = 0
    while True:
        with svc.unit_of_work(write=True) as session:
            sealed = trail.seal(session)
        total += sealed
        if sealed < 5000:
            return total


@audit.command()
def seal() -> None:
    """Chain the entries recorded since the last seal (run it every minute, e.g. from cron)."""
    svc = _services()
    sealed = _seal_all(svc)
    with svc.unit_of_work(write=False) as session:
        position, head = trail.head(session)
    # The head, logged, is an anchor outside the database: a truncated chain no longer reaches it.
    logger.info("audit sealed", extra={"sealed": sealed, "position": position, "head": head})
    click.echo(f"{sealed} entries sealed; chain head at position {position}: {head}")


@audit.command()
def verify() -> None:
    """Seal what has settled, then recompute the whole chain; exit 1 at the first alteration found."""
    svc = _services()
    _seal_all(svc)
    with svc.unit_of_work(write=False) as session:
        result = trail.verify(session)
        position, head = trail.head(session)
    if not result.ok:
        click.echo(f"audit trail ALTERED: {result.problem} ({result.sealed} entries checked before it)", err=True)
        sys.exit(1)
    click.echo(f"audit trail intact: {result.sealed} entries chained, {result.unsealed} not sealed yet; "
               f"head at position {position}: {head}")


@audit.command()
@click.option("--patient", help="Only the entries touching this resident (Patient id).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="Only from this date.")
def export(patient: str | None, since: datetime | None) -> None:
    """Write the trail as FHIR AuditEvent, one JSON per line (NDJSON), on standard output."""
    svc = _services()
    when = since.astimezone() if since else None
    count = 0
    with svc.unit_of_work(write=False) as session:
        for row, patients in trail.entries(session, patient=patient, since=when):
            sys.stdout.buffer.write(orjson.dumps(audit_event(row, patients, svc.settings.base_url)) + b"\n")
            count += 1
    click.echo(f"{count} audit events", err=True)


@audit.command()
@click.argument("patient_id")
def report(patient_id: str) -> None:
    """Who opened resident PATIENT_ID's record: every access, newest last."""
    svc = _services()
    lines = 0
    with svc.unit_of_work(write=False) as session:
        for row, _ in trail.entries(session, patient=patient_id):
            who = f"{row['actor_kind']}:{row['actor_id']}" + (f" ({row['roles']})" if row["roles"] else "")
            where = f" [{row['establishment']}]" if row["establishment"] else ""
            what = row["action"] + (f" {row['detail']}" if row["detail"] else "")
            click.echo(f"{row['recorded'].isoformat()}\t{who}{where}\t{what}\t{row['outcome']}")
            lines += 1
    click.echo(f"{lines} accesses to Patient/{patient_id}", err=True)
