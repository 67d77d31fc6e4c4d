"""``dui outbox ...``: the deliveries to external systems waiting, done or failed (docs/outbox.md).

``dui worker`` runs them; these commands show them and let an operator retry a dead letter or cancel a job.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from dui.errors import DuiError
from dui.outbox import queue
from dui.outbox.queue import Job
from dui.outbox.tables import STATES
from dui.services import Services


@click.group("outbox", cls=AppGroup)
def outbox() -> None:
    """The outbox: deliveries to external systems (DMP, MSSanté) run by `dui worker`."""


def _svc() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


HEADER = "id\tstate\tkind\ttarget\tattempts\twhen\t  error"


def _line(job: Job) -> str:
    when = f"next {job.next_attempt_at.isoformat(timespec='seconds')}" if job.state == "due" else \
        f"updated {job.updated_at.isoformat(timespec='seconds')}"
    error = f"  error: {job.last_error}" if job.last_error and job.state != "done" else ""
    return f"{job.id}\t{job.state}\t{job.kind}\t{job.target}\tattempts {job.attempts}\t{when}{error}"


@outbox.command("list")
@click.option("--failed", is_flag=True, help="Only the dead letters (jobs that failed for good).")
@click.option("--state", type=click.Choice(STATES), help="Only the jobs in this state.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
def list_command(failed: bool, state: str | None, limit: int) -> None:
    """The jobs, the oldest first: id, state, kind, target, attempts, when, last error."""
    if failed and state and state != "dead":
        raise click.ClickException("--failed lists the dead jobs: do not give another --state")
    svc = _svc()
    with svc.unit_of_work(write=False) as session:
        jobs = queue.list_jobs(session, "dead" if failed else state, limit=limit)
    if jobs:
        click.echo(HEADER)
    for job in jobs:
        click.echo(_line(job))
    if not jobs:
        click.echo("no outbox job" + (" in state " + ("dead" if failed else str(state)) if failed or state else ""))


@outbox.command("show")
@click.argument("job_id", type=int)
def show_command(job_id: int) -> None:
    """Everything the outbox knows of job JOB_ID."""
    svc = _svc()
    with svc.unit_of_work(write=False) as session:
        job = queue.get(session, job_id)
    if job is None:
        raise click.ClickException(f"no outbox job {job_id}")
    for name, value in vars(job).items():
        click.echo(f"{name}: {value.isoformat() if hasattr(value, 'isoformat') else value}")


@outbox.command("retry")
@click.argument("job_id", type=int)
def retry_command(job_id: int) -> None:
    """Make dead job JOB_ID due now, with a fresh count of attempts."""
    _change(job_id, queue.retry, "due again")


@outbox.command("cancel")
@click.argument("job_id", type=int)
def cancel_command(job_id: int) -> None:
    """Cancel job JOB_ID (due or dead; a running job is refused)."""
    _change(job_id, queue.cancel, "cancelled")


def _change(job_id: int, change: object, said: str) -> None:
    svc = _svc()
    try:
        with svc.unit_of_work(write=True) as session:
            job = change(session, job_id, svc.clock())  # type: ignore[operator]
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"outbox job {job.id} ({job.kind} {job.target}): {said}")
