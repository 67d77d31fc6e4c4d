"""``dui reindex``: rebuild the search index."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from dui.fhir import maintenance
from dui.services import Services


@click.command()
@with_appcontext
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this resource type (repeatable).")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 10_000),
              help="Resources per transaction.")
@click.option("--restart", is_flag=True, help="Start again from the first resource instead of resuming.")
@click.option("--check", is_flag=True, help="Only say whether the index is current (exit 1 if not).")
def reindex(types: tuple[str, ...], batch: int, restart: bool, check: bool) -> None:
    """Rebuild the search index from the stored resources.

    Run it after upgrading to a version whose search parameters changed (`dui reindex --check`
    tells), or after adding custom search parameters. The service can keep running. Interrupted,
    it resumes where it stopped when run again.
    """
    svc: Services = current_app.extensions["dui"]
    unknown = [t for t in types if t not in set(svc.registry.resource_types())]
    if unknown:
        raise click.BadParameter(f"unknown resource type {unknown[0]}", param_hint="--type")
    with svc.session_factory() as session:
        if check:
            current = maintenance.index_is_current(session, svc.registry)
            click.echo("search index is current" if current else "search index is out of date: run `dui reindex`")
            sys.exit(0 if current else 1)
        state = None if restart else maintenance.read_state(session, maintenance.REINDEX)
    if state is not None and tuple(state.get("types", [])) != types and types:
        raise click.ClickException("a rebuild of other types is under way; finish it, or use --restart")
    types = tuple(state.get("types", [])) if state else types
    after = int(state["after"]) if state else 0
    if state:
        click.echo(f"resuming the rebuild after row {after}", err=True)
    with svc.session_factory() as session:
        total = maintenance.count_to_index(session, types, after)
    done = 0
    with click.progressbar(length=total, label="Rebuilding the search index", file=sys.stderr) as bar:
        while True:
            with svc.unit_of_work(write=True) as session:
                rids = maintenance.reindex_batch(svc.repository(session), types, after, batch)
                if rids:
                    after = rids[-1]
                    maintenance.write_state(session, maintenance.REINDEX, {"after": after, "types": list(types)},
                                            svc.clock())
                else:
                    maintenance.write_state(session, maintenance.REINDEX, None, svc.clock())
                    if not types:
                        maintenance.write_state(session, maintenance.FINGERPRINT,
                                                {"fingerprint": maintenance.fingerprint(svc.registry)}, svc.clock())
            if not rids:
                break
            done += len(rids)
            bar.update(len(rids))
    click.echo(f"search index rebuilt: {done} resources")
