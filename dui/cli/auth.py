"""``dui clients ...`` (SMART Backend Services clients) and ``dui users ...`` (local staff accounts).

Run them when a partner (hospital, integrated client) is connected or leaves, and when a member of staff
arrives or leaves, on sites that use local accounts rather than Pro Santé Connect / their own IdP.
Nothing is deleted: a client or an account is disabled, and its tokens stop working within seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from dui.auth import accounts, passwords
from dui.auth.jwks import JwksError, parse_jwks
from dui.auth.roles import ROLES
from dui.auth.scopes import ScopeError, ScopeSet
from dui.cli.auditing import record_command
from dui.services import Services

T = TypeVar("T")


def _services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


def _run(action: Callable[[Session], T], write: bool = True) -> T:
    """Run ``action`` in one transaction; a refusal becomes one clear line and exit status 1."""
    svc = _services()
    try:
        with svc.unit_of_work(write=write) as session:
            result = action(session)
    except (ValueError, ScopeError, JwksError) as exc:  # AccountError, WeakPassword, bad role or FINESS
        if write:
            record_command(svc, "failed")
        raise click.ClickException(str(exc)) from None
    if write:  # accounts and clients created, changed or disabled are administrative writes
        record_command(svc)
    return result


def _when(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M") if epoch else "-"


# -- clients -------------------------------------------------------------------------------------------------


@click.group(cls=AppGroup)
def clients() -> None:
    """API clients authenticating with SMART Backend Services (client credentials, private_key_jwt)."""


@clients.command("create")
@click.argument("name")
@click.option("--scope", "scope", multiple=True, metavar="SCOPES",
              help='SMART system scopes it may be granted, space-separated or repeated: "system/Patient.rs '
                   'system/Observation.rs" (v2) or "system/Patient.read" (v1).')
@click.option("--jwks-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON Web Key Set of the client's public keys (EC P-256/P-384 or RSA >= 2048 bits, "
                   "each with a kid).")
@click.option("--establishment", metavar="FINESS", help="The establishment the client belongs to, if any.")
@click.option("--device", is_flag=True, help="A sensor gateway (fall detection): it may only post events to "
              "/api/devices/events, for the residents of its establishment (--establishment required; no --scope).")
def create_client(name: str, scope: tuple[str, ...], jwks_file: Path, establishment: str | None,
                  device: bool) -> None:
    """Register a client; prints its client_id (the iss and sub of its assertions) on standard output."""
    if device and scope:
        raise click.UsageError("a device client is registered without --scope: it may only post sensor events")
    if not device and not scope:
        raise click.UsageError("give the client's scopes with --scope (or --device for a sensor gateway)")
    try:
        scopes = ScopeSet.parse(scope or [accounts.DEVICE_SCOPES])
        jwks = parse_jwks(jwks_file.read_bytes())
    except (ScopeError, JwksError) as exc:
        raise click.ClickException(f"{jwks_file if isinstance(exc, JwksError) else '--scope'}: {exc}") from None
    now = _services().clock()
    client = _run(lambda s: accounts.register_client(s, name, scopes, jwks, establishment, now,
                                                     "device" if device else "client"))
    click.echo(client.client_id)
    click.echo(f"client {client.name!r} registered with scopes {client.scopes}; token endpoint "
               f"{_services().authenticator.token_url}", err=True)


@clients.command("list")
def list_clients() -> None:
    """List the registered clients."""
    rows = _run(accounts.list_clients, write=False)
    if not rows:
        click.echo("no client registered")
    else:
        click.echo("client_id  state     FINESS     created           name  [scopes]")
    for c in rows:
        state = "enabled " if c.enabled else "disabled"
        scopes = "device" if c.kind == "device" else str(c.scopes)
        click.echo(f"{c.client_id}  {state}  {c.establishment or '-':9}  {_when(c.created_at)}  {c.name}  [{scopes}]")


@clients.command("disable")
@click.argument("client_id")
def disable_client(client_id: str) -> None:
    """Disable a client: no new token, and its current tokens refused within seconds."""
    svc = _services()
    client = _run(lambda s: accounts.disable_client(s, client_id, svc.clock()))
    svc.authenticator.forget("client", client.client_id)
    click.echo(f"client {client.client_id} ({client.name}) disabled")


# -- users ---------------------------------------------------------------------------------------------------


@click.group(cls=AppGroup)
def users() -> None:
    """Local staff accounts (development and small sites; otherwise Pro Santé Connect or the site's IdP)."""


@users.command("create")
@click.argument("login")
@click.option("--role", "roles", required=True, multiple=True, type=click.Choice(ROLES),
              help="The member of staff's role (repeat for several).")
@click.option("--establishment", required=True, metavar="FINESS", help="The establishment they work for.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def create_user(login: str, roles: tuple[str, ...], establishment: str, password_stdin: bool) -> None:
    """Create a local account; the password is asked twice without echo (or read with --password-stdin)."""
    password = _password(password_stdin, login)
    now = _services().clock()
    user = _run(lambda s: accounts.create_user(s, login, password, roles, establishment, now))
    click.echo(f"account {user.login} created: {', '.join(user.roles)} at {user.establishment}")


@users.command("set-password")
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def set_password(login: str, password_stdin: bool) -> None:
    """Replace an account's password (asked twice without echo, or read with --password-stdin)."""
    password = _password(password_stdin, login)
    user = _run(lambda s: accounts.set_password(s, login, password))
    click.echo(f"password of {user.login} replaced")


def _password(from_stdin: bool, login: str) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        passwords.check_strength(password, login)
    except passwords.WeakPassword as exc:
        raise click.ClickException(str(exc)) from None
    return password


@users.command("list")
def list_users() -> None:
    """List the local accounts."""
    rows = _run(accounts.list_users, write=False)
    if not rows:
        click.echo("no local account")
    else:
        click.echo(f"{'login':24}  state     establishment  created           roles")
    for u in rows:
        state = "enabled " if u.enabled else "disabled"
        click.echo(f"{u.login:24}  {state}  {u.establishment}  {_when(u.created_at)}  {', '.join(u.roles)}")


@users.command("disable")
@click.argument("login")
def disable_user(login: str) -> None:
    """Disable an account: no new token, and its current tokens refused within seconds."""
    svc = _services()
    user = _run(lambda s: accounts.disable_user(s, login, svc.clock()))
    svc.authenticator.forget("staff", user.login)
    click.echo(f"account {user.login} disabled")

