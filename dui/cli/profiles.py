"""``dui profiles ...``: the profiles in force and the IG packages that bring them (docs/profiles.md)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from dui.auth.actor import CLI
from dui.cli.auditing import record_command
from dui.errors import DuiError
from dui.profiles import catalogue, store
from dui.services import Services

MAX_PACKAGE_BYTES = 64 * 1024 * 1024  # read no further: read_package applies its own, smaller limits


def _services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


@click.group(cls=AppGroup)
def profiles() -> None:
    """Profiles in force: the DUI's own, base FHIR R4, and installed IG packages (FR Core, TDDUI...)."""


@profiles.command()
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def install(package: Path) -> None:
    """Install PACKAGE (an IG's package.tgz, NPM format). Nothing is downloaded: dependencies must already
    be installed, and those missing are named. Replaces an installed version of the same package."""
    svc = _services()
    with package.open("rb") as handle:
        data = handle.read(MAX_PACKAGE_BYTES + 1)
    try:
        if len(data) > MAX_PACKAGE_BYTES:
            raise click.ClickException(f"{package}: larger than {MAX_PACKAGE_BYTES // 2**20} MB, not an IG package")
        with svc.unit_of_work(write=True) as session:
            result = store.install(session, data, CLI, svc.clock)
            served = svc.sync_conformance(session)  # its conformance resources under /fhir, in the same transaction
    except DuiError as exc:
        record_command(svc, "failure")
        raise click.ClickException(f"{package}: {exc.message}") from None
    svc.profiles.invalidate()
    record_command(svc)
    replaced = f" (replaces {result.replaced})" if result.replaced else ""
    click.echo(f"installed {result.package.id}{replaced}: {result.profiles} profiles, "
               f"{len(result.package.resources)} conformance resources")
    click.echo(f"  served under /fhir: {_changes(served)}")
    if result.missing:
        click.echo(f"  dependencies not installed: {', '.join(result.missing)} (references into them are reported "
                   "as not checked)", err=True)
    click.echo("  running servers use it within a few seconds")


@profiles.command()
@click.argument("name")
def remove(name: str) -> None:
    """Take the installed package NAME (e.g. hl7.fhir.fr.core) out of force."""
    svc = _services()
    try:
        with svc.unit_of_work(write=True) as session:
            version = store.remove(session, name)
            served = svc.sync_conformance(session)  # its conformance resources leave /fhir with it
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    svc.profiles.invalidate()
    record_command(svc)
    click.echo(f"removed {name}#{version}; served under /fhir: {_changes(served)}")


@profiles.command()
def sync() -> None:
    """Serve under /fhir the conformance resources of the installed packages and of the service itself, as they
    are now (``dui db upgrade`` does it too; after restoring a database, run it once)."""
    svc = _services()
    try:
        with svc.unit_of_work(write=True) as session:
            served = svc.sync_conformance(session)
    except DuiError as exc:
        raise click.ClickException(exc.message) from None
    record_command(svc)
    click.echo(f"conformance resources served under /fhir: {_changes(served)}")


def _changes(result: catalogue.SyncResult) -> str:
    return (f"{result.created} added, {result.updated} changed, {result.deleted} removed, "
            f"{result.unchanged} unchanged")


@profiles.command("list")
@click.option("--all", "show_all", is_flag=True, help="List every profile in force, with where it comes from.")
def list_command(show_all: bool) -> None:
    """What validation uses: installed packages, default profiles per type, write modes."""
    svc = _services()
    with svc.unit_of_work(write=False) as session:
        packages = store.installed(session)
    context = svc.profiles.context()
    missing = context.missing_dependencies()
    click.echo("packages (hl7.fhir.r4.core#4.0.1 and the DUI's own profiles are built in):")
    for item in packages:
        click.echo(f"  {item.package_id:40} FHIR {item.fhir_version}  installed {item.installed:%Y-%m-%d %H:%M} "
                   f"by {item.installed_by}")
        if missing.get(item.package_id):
            click.echo(f"    missing dependencies: {', '.join(missing[item.package_id])}")
    if not packages:
        click.echo("  none installed (dui profiles install PACKAGE.tgz)")
    validation = svc.settings.validation
    click.echo("default profiles (DUI_DEFAULT_PROFILES):")
    for rtype, url in validation.default_profiles:
        known = "" if context.structure_definition(url) is not None else "  NOT IN FORCE: not checked"
        click.echo(f"  {rtype:20} {url}{known}")
    if not validation.default_profiles:
        click.echo("  none")
    click.echo("write modes (DUI_VALIDATION): " + ", ".join(f"{t}={m}" for t, m in validation.modes))
    if show_all:
        click.echo("profiles in force:")
        for sd in sorted(context.profiles(), key=lambda r: str(r.get("url"))):
            url = str(sd.get("url"))
            click.echo(f"  {sd.get('type', '?'):24} {url}  [{context.source_of(url)}]")
