"""Administrative commands go to the audit trail too: who (the CLI administrator), which command, outcome."""

from __future__ import annotations

import click

from dui.audit import trail
from dui.auth.actor import CLI
from dui.services import Services


def record_command(svc: Services, outcome: str = "success", status: int | None = None, *,
                   patients: tuple[str, ...] = (), count: int | None = None, detail: str | None = None) -> None:
    """One entry for the running command (``users create``, ``keys rotate``...), in a transaction of its own;
    ``patients``: the residents whose records it read or wrote (``export``, ``import``), ``count``: how many
    resources (or rows); ``detail``: what it did, when the command's name does not say it (``purge outbox``)."""
    command = (detail or click.get_current_context().command_path.removeprefix("dui "))[:64]
    entry = trail.AuditEntry("admin", outcome, CLI, detail=command, status=status, source="cli", count=count,
                             patients=patients)
    with svc.unit_of_work(write=True) as session:
        trail.record(session, entry, svc.clock())
