"""``dui audit ...``: seal and verify the audit trail, export it as FHIR AuditEvent (or its heads), a resident's
access report, and the acknowledgement of a gap an operator has investigated."""

from __future__ import annotations

import logging
import re
import sys
from datetime import datetime
from pathlib import Path

import click
import orjson
from flask import current_app
from flask.cli import AppGroup

from dui.audit import heads, sealing, trail
from dui.audit.export import audit_event
from dui.audit.keys import AuditKeys, audit_keys
from dui.services import Services

logger = logging.getLogger("dui.audit")
GRACE = 300  # seconds before a missing number is judged (PostgreSQL)


def _services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


@click.group(cls=AppGroup)
def audit() -> None:
    """The audit trail: every read, search, write and refusal, append-only and chained with the audit key."""


def _seal_all(svc: Services, keys: AuditKeys) -> int:
    """Seal everything that has settled, then publish the head (log, and DUI_AUDIT_HEADS_FILE)."""
    try:
        return sealing.seal_settled(svc.unit_of_work, keys.current, svc.settings.audit.heads_file, svc.clock)
    except OSError as exc:
        raise click.ClickException(f"entries sealed, but their head could not be written to "
                                   f"{svc.settings.audit.heads_file}: {exc.strerror}") from None


@audit.command()
def seal() -> None:
    """Chain the entries recorded since the last seal (run it every minute, e.g. from cron).

    The new head (position, hash, key id) is appended to DUI_AUDIT_HEADS_FILE and logged: an anchor outside
    the database that a truncated or recomputed chain no longer matches."""
    svc = _services()
    sealed = _seal_all(svc, audit_keys(svc.settings))
    with svc.unit_of_work(write=False) as session:
        position, head, _ = trail.head(session)
    click.echo(f"{sealed} entries sealed; chain head at position {position}: {head}")


@audit.command()
@click.option("--heads", "heads_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check the heads of this file (a copy of DUI_AUDIT_HEADS_FILE kept elsewhere, or the service's "
                   "JSON log) instead of DUI_AUDIT_HEADS_FILE.")
@click.option("--grace", type=click.IntRange(min=0), default=GRACE, show_default=True,
              help="PostgreSQL: judge a missing entry number once an entry this many seconds old follows it "
                   "(a failing transaction has then recorded its void). 0 when the service is stopped.")
def verify(heads_file: Path | None, grace: int) -> None:
    """Seal what has settled, then recompute the whole chain with the audit keys, check it against every head of
    the heads file (DUI_AUDIT_HEADS_FILE, or --heads FILE) and check the numbering of the entries; exit 1 at the
    first problem found."""
    svc = _services()
    keys = audit_keys(svc.settings)
    _seal_all(svc, keys)
    configured = svc.settings.audit.heads_file
    source = heads_file or (Path(configured) if configured and Path(configured).exists() else None)
    try:
        anchors = heads.read(source) if source else []
    except heads.HeadsError as exc:
        raise click.ClickException(str(exc)) from None
    with svc.unit_of_work(write=False) as session:
        result = trail.verify(session, keys, heads=anchors, now=svc.clock(), grace=grace)
        position, head, _ = trail.head(session)
    if not result.ok:
        state = "NOT VERIFIED" if result.unverifiable else "ALTERED"
        click.echo(f"audit trail {state}: {result.problem} ({result.sealed} entries checked before it)", err=True)
        sys.exit(1)
    notes = [f"{result.sealed} entries chained"]
    if result.legacy:
        notes.append(f"{result.legacy} of them sealed before the audit key (plain SHA-256)")
    notes.append(f"{result.unsealed} not sealed yet")
    notes.append(f"{result.heads} heads of {source} matched" if source else "no heads file checked")
    if result.explained:
        notes.append(f"{result.explained} missing numbers explained (voids, acknowledged gaps)")
    if result.pending:
        notes.append(f"{result.pending} missing numbers too recent to judge")
    click.echo(f"audit trail intact: {'; '.join(notes)}; head at position {position}: {head}")


@audit.command("acknowledge-gap")
@click.argument("numbers", metavar="SEQ")
@click.option("--reason", required=True, help="What the investigation found (e.g. the database crash of that time).")
def acknowledge_gap(numbers: str, reason: str) -> None:
    """Record, as a chained entry, why entry numbers SEQ (or FIRST-LAST) are missing, after investigating.

    On PostgreSQL a database crash skips up to 32 numbers, and a transaction that failed without recording its
    void leaves one: `dui audit verify` names them. Never acknowledge a gap you cannot explain."""
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", numbers.strip())
    if not match:
        raise click.BadParameter("SEQ is a number or a range FIRST-LAST", param_hint="SEQ")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    svc = _services()
    try:
        with svc.unit_of_work(write=True) as session:
            seq = trail.acknowledge_gap(session, first, last, reason, svc.clock())
    except trail.GapError as exc:
        raise click.ClickException(str(exc)) from None
    span = str(first) if first == last else f"{first}-{last}"
    click.echo(f"gap {span} acknowledged by entry {seq}; it is chained at the next seal")


@audit.command()
@click.option("--patient", help="Only the entries touching this resident (Patient id).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="Only from this date.")
@click.option("--heads", "show_heads", is_flag=True,
              help="Print the chain heads of DUI_AUDIT_HEADS_FILE (JSON lines) instead of the entries.")
def export(patient: str | None, since: datetime | None, show_heads: bool) -> None:
    """Write the trail as FHIR AuditEvent, one JSON per line (NDJSON), on standard output."""
    svc = _services()
    if show_heads:
        if patient or since:
            raise click.UsageError("--heads prints every head; it takes neither --patient nor --since")
        _export_heads(svc.settings.audit.heads_file)
        return
    when = since.astimezone() if since else None
    count = 0
    with svc.unit_of_work(write=False) as session:
        for row, patients in trail.entries(session, patient=patient, since=when):
            sys.stdout.buffer.write(orjson.dumps(audit_event(row, patients, svc.settings.base_url)) + b"\n")
            count += 1
    click.echo(f"{count} audit events", err=True)


def _export_heads(path: str | None) -> None:
    if not path:
        raise click.ClickException("DUI_AUDIT_HEADS_FILE is not set: the heads are in the service's log "
                                   f"(logger dui.audit, event \"{heads.LOG_EVENT}\")")
    try:
        found = heads.read(path) if Path(path).exists() else []
    except heads.HeadsError as exc:
        raise click.ClickException(str(exc)) from None
    for head in found:
        sys.stdout.buffer.write(orjson.dumps(head.json()) + b"\n")
    click.echo(f"{len(found)} heads", err=True)


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
