"""``dui purge``: remove what is past its retention (docs/retention.md); a dry run unless ``--yes``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from dui.cli.auditing import record_command
from dui.maintenance.purge import CATEGORIES, DEFAULT_CATEGORIES, Purger, Step, Survey, purgers
from dui.services import Services


class UsageLine(click.ClickException):
    """A usage mistake as one line (``Error: ...``), exit status 2."""

    exit_code = 2


class OneLineCommand(click.Command):
    """Bad options and arguments are said in one line, without the usage text."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise UsageLine(exc.format_message()) from None


RETRIED = ("40P01", "40001")  # deadlock detected, serialization failure: the batch rolled back whole

WHAT = {
    "outbox": "outbox jobs done or cancelled{dead} before {cutoff}",
    "alerts": "sensor and alert events before {cutoff}",
    "mssante": "MSSanté queue rows decided before {cutoff}",
    "expired": "expired pings, assertion ids, rate-limit buckets and bulk exports (with their files)",
    "tombstones": "resources deleted before {cutoff}",
}


@click.command("purge", cls=OneLineCommand)
@with_appcontext
@click.argument("categories", nargs=-1, type=click.Choice(CATEGORIES), metavar="[CATEGORY]...")
@click.option("--older-than", type=click.IntRange(min=1), metavar="DAYS",
              help="Retention in days for every category named, instead of the DUI_RETENTION_* settings.")
@click.option("--before", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), metavar="DATE",
              help="Remove what is older than this moment (UTC, YYYY-MM-DD[THH:MM:SS]) instead of a retention.")
@click.option("--dead", is_flag=True, help="Outbox: the dead letters too (kept otherwise, waiting for a decision).")
@click.option("--yes", "--apply", "apply", is_flag=True, help="Remove them (without it: a dry run, nothing changes).")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 5000),
              help="Rows (tombstones: deleted resources) per transaction.")
def purge(categories: tuple[str, ...], older_than: int | None, before: datetime | None, dead: bool, apply: bool,
          batch: int) -> None:
    """Remove what is past its retention: a dry run unless --yes; never the audit trail.

    CATEGORY: outbox (jobs done or cancelled, dead ones with --dead; never due or running ones), alerts (fall-sensor
    and alert events), mssante (decided rows of the reception queue), expired (websocket pings, client assertion
    ids, rate-limit buckets past their use, bulk exports past their expiry with their files), tombstones (deleted
    FHIR resources with every version, only when named: DUI_RETENTION_TOMBSTONES_DAYS, 20 years by default, and
    kept while a live resource or a live resident's record refers to them). Without CATEGORY: all but tombstones.

    Prints one line per category: how many rows would go (or went) and the oldest. With --yes they go in batches
    of --batch rows, each in its own transaction, with progress: safe to interrupt and run again, while the service
    runs. What was purged is recorded in the audit trail (counts only). The audit trail itself is append-only and
    chained: this command never removes any of it.
    """
    if older_than is not None and before is not None:
        raise UsageLine("give --older-than or --before, not both")
    if dead and categories and "outbox" not in categories:
        raise UsageLine("--dead is about the outbox: name the outbox category too")
    svc: Services = current_app.extensions["dui"]
    now = svc.clock()
    cutoffs = _cutoffs(svc, now, older_than, before)
    chosen = tuple(dict.fromkeys(categories)) or DEFAULT_CATEGORIES
    for purger in purgers(chosen, now=now, cutoffs=cutoffs, keyring=svc.keyring, dead=dead, batch=batch,
                          export_dir=svc.settings.export.directory):
        with svc.unit_of_work(write=False) as session:
            found = purger.survey(session)
        what = WHAT[purger.category].format(cutoff=_moment(cutoffs.get(purger.category)),
                                            dead=", and dead letters" if dead else "")
        if not apply:
            click.echo(_line(found, what, "would go"))
            continue
        removed, versions = _apply(svc, purger, found, batch)
        click.echo(_line(Survey(found.category, removed, found.oldest, found.tables, versions, found.kept,
                                found.newest), what, "purged"))
    if not apply:
        click.echo("dry run: nothing was removed; run again with --yes to purge"
                   + ("" if "tombstones" in chosen else " (deleted FHIR resources only with `dui purge tombstones`)"))


def _cutoffs(svc: Services, now: datetime, older_than: int | None, before: datetime | None) -> dict[str, datetime]:
    if before is not None:
        moment = before.replace(tzinfo=UTC) if before.tzinfo is None else before
        if moment > now:
            raise UsageLine(f"--before {_moment(moment)} is in the future")
        return dict.fromkeys(CATEGORIES, moment)
    retention = svc.settings.retention
    days = {"outbox": retention.outbox_days, "alerts": retention.alert_events_days,
            "mssante": retention.mssante_days, "tombstones": retention.tombstone_days}
    return {name: now - timedelta(days=older_than or value) for name, value in days.items()}


def _apply(svc: Services, purger: Purger, found: Survey, batch: int) -> tuple[int, int]:
    removed = versions = 0
    total = found.rows + found.kept + found.newest if found.category == "tombstones" else found.rows
    try:
        with click.progressbar(length=total, label=f"Purging {found.category}", file=sys.stderr) as bar:
            while True:
                step = _batch(svc, purger, batch)
                if step.done:
                    break
                removed += step.removed
                versions += step.versions
                bar.update(step.examined)
    except BaseException:  # interrupted or failed: what did go is recorded all the same
        record_command(svc, "failed", count=removed, detail=f"purge {found.category}")
        raise
    record_command(svc, count=removed, detail=f"purge {found.category}")
    return removed, versions


def _batch(svc: Services, purger: Purger, limit: int, attempts: int = 3) -> Step:
    """One batch in a transaction of its own; tried again when PostgreSQL gave it up to a concurrent writer
    (deadlock, serialization failure)."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(1, attempts + 1):
        try:
            with svc.unit_of_work(write=True) as session:
                return purger.step(session, limit)
        except DBAPIError as exc:
            if attempt == attempts or getattr(exc.orig, "sqlstate", None) not in RETRIED:
                raise
    raise AssertionError("unreachable")


def _line(found: Survey, what: str, verb: str) -> str:
    if found.category == "tombstones":
        text = f"tombstones: {found.rows} deleted resource(s) {verb} ({found.versions} version(s)), {what}"
    else:
        parts = ", ".join(f"{name} {count}" for name, count in found.tables.items())
        text = f"{found.category}: {found.rows} row(s) {verb} ({parts}), {what}"
    if found.oldest is not None:
        text += f"; the oldest {_moment(found.oldest)}"
    if found.kept:
        text += f"; {found.kept} kept: a live resource or a live resident's record refers to them"
    if found.newest:
        text += f"; {found.newest} kept for now: the newest row of the store"
    return text


def _moment(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
