"""``dui keys ...``: the keys of encryption at rest (docs/security.md, "Encryption at rest")."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from dui.audit.keys import read_audit_key
from dui.cli.auditing import record_command
from dui.crypto import admin
from dui.crypto.errors import CryptoError
from dui.crypto.master import KEY_BYTES, read_key_file, write_key_file
from dui.fhir import maintenance, reencrypt
from dui.services import Services


def _services() -> Services:
    svc: Services = current_app.extensions["dui"]
    return svc


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A key problem becomes one line and exit status 1."""
    try:
        yield
    except CryptoError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(cls=AppGroup)
def keys() -> None:
    """Keys of encryption at rest: data keys wrapped by the master key (DUI_MASTER_KEY_FILE)."""


@keys.command()
def status() -> None:
    """List the master keys held, the data keys and how many stored bodies each one seals.

    Exit 1 if a data key cannot be unwrapped with the master keys configured. Counting reads the
    first bytes of every stored version (a full scan of resource_version).
    """
    svc = _services()
    with _clear_errors(), svc.unit_of_work(write=False) as session:
        masters = svc.keyring.masters()
        infos = admin.list_keys(session, svc.keyring)
        counts = reencrypt.count_by_key(session)
    click.echo(f"master key: {masters.current.key_id}"
               + "".join(f"\nprevious master key: {m.key_id}" for m in masters.previous))
    if not infos:
        click.echo("no data key yet: the first write creates one")
    for info in infos:
        line = (f"data key {info.id}: {info.state}, wrapped by {info.master_key_id}, created "
                f"{info.created:%Y-%m-%d %H:%M}, {counts.pop(info.id, 0)} bodies")
        click.echo(line + (f"; UNUSABLE: {info.problem}" if info.problem else ""))
    if counts.get(None):
        click.echo(f"plaintext (written before encryption): {counts.pop(None)} bodies; run `dui keys reencrypt`")
    for key_id, count in counts.items():
        click.echo(f"data key {key_id}: MISSING from data_key, {count} bodies cannot be read")
    if counts or any(info.problem for info in infos):
        sys.exit(1)


@keys.command(with_appcontext=False)  # a new installation has no key yet: the app could not start
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--audit", "kind", flag_value="audit", help="An audit key (DUI_AUDIT_KEY_FILE), which seals the "
              "audit trail's chain.")
@click.option("--signing", "kind", flag_value="signing", help="A token-signing key (DUI_AUTH_SIGNING_KEY): an EC "
              "P-256 private key in PEM.")
def generate(file: Path, kind: str | None) -> None:
    """Write a new random master key (or, with --audit, an audit key; with --signing, a token-signing key) to FILE
    (mode 0600; never overwrites). Works before anything else is configured, DUI_ENV=prod included.

    Then name it in DUI_MASTER_KEY_FILE (new installation), or follow the rotation procedure of
    docs/security.md. Keep a copy apart from the database backups: without it they cannot be read.
    An audit key goes in DUI_AUDIT_KEY_FILE; it must differ from the master key. A signing key goes in
    DUI_AUTH_SIGNING_KEY, the same file on every server.
    """
    what = {"audit": "audit key", "signing": "token-signing key"}.get(kind or "", "master key")
    try:
        if kind == "signing":
            write_signing_key(file)
        else:
            write_key_file(file, os.urandom(KEY_BYTES), what=what)
    except FileExistsError:
        raise click.ClickException(f"{file} exists: a key is never overwritten") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {file}: {exc.strerror}") from None
    if kind == "signing":
        click.echo(f"{what} (EC P-256) written to {file}")
        return
    key_id = read_audit_key(file).key_id if kind == "audit" else read_key_file(file).key_id
    click.echo(f"{what} {key_id} written to {file}")


def write_signing_key(file: Path) -> None:
    """A new EC P-256 private key in PEM (PKCS#8), created with mode 0600; ``FileExistsError`` if ``file`` exists."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)


@keys.command()
@click.option("--new-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Wrap every data key by this master key (a master-key rotation).")
@click.option("--data-key", is_flag=True, help="Retire the active data key and start a new one for new writes.")
def rotate(new_key_file: Path | None, data_key: bool) -> None:
    """Rotate the master key (--new-key-file F) or the data key (--data-key), without downtime.

    --new-key-file re-wraps every data key by F in one transaction; bodies are untouched. Servers must
    hold F first (DUI_MASTER_KEY_FILE=F, DUI_MASTER_KEY_PREVIOUS_FILE=old key, restarted one by one);
    afterwards drop the previous key. --data-key starts a new data key; servers switch to it within a
    minute; then run `dui keys reencrypt`. See docs/security.md for the whole procedure.
    """
    if (new_key_file is None) == (not data_key):
        raise click.UsageError("give either --new-key-file FILE or --data-key")
    svc = _services()
    if data_key:
        with _clear_errors(), svc.unit_of_work(write=True) as session:
            key, retired = admin.rotate_data_key(session, svc.keyring)
        record_command(svc)
        click.echo(f"data key {key.id} is active" + (f"; data key {retired} retired" if retired else "")
                   + ": servers switch within a minute; then run `dui keys reencrypt`")
        return
    assert new_key_file is not None
    with _clear_errors():
        new = read_key_file(new_key_file)
        if svc.settings.is_prod and new.development:
            raise click.ClickException(f"{new_key_file} is a development key: production refuses it")
        with svc.unit_of_work(write=True) as session:
            result = admin.rotate_master(session, svc.keyring, new)
    record_command(svc)
    click.echo(f"{result.rewrapped} data key(s) now wrapped by master key {new.key_id}"
               + (f" ({result.unchanged} already were)" if result.unchanged else ""))
    if svc.keyring.masters().current.key_id != new.key_id:
        click.echo(f"next: set DUI_MASTER_KEY_FILE={new_key_file} everywhere (keep the old key as "
                   "DUI_MASTER_KEY_PREVIOUS_FILE until every server has restarted)", err=True)


@keys.command("reencrypt")
@click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Versions per transaction.")
@click.option("--restart", is_flag=True, help="Start again from the first version instead of resuming.")
def reencrypt_command(batch: int, restart: bool) -> None:
    """Encrypt again, with the active data key, every stored body sealed by another key or still plaintext.

    Run it after `dui keys rotate --data-key` (a minute later, once servers use the new key) and once
    after upgrading a database written before encryption. The service keeps running. Interrupted, it
    resumes where it stopped when run again.
    """
    svc = _services()
    svc.keyring.forget()  # the active key as it is now, not as this process may have cached it
    with _clear_errors():
        with svc.unit_of_work(write=True) as session:
            key = svc.keyring.write_key(session)
            state = None if restart else maintenance.read_state(session, reencrypt.REENCRYPT)
            if state is not None and state.get("key") != key.id:
                click.echo("the active data key changed since the last run: starting from the first version",
                           err=True)
                state = None
            after = int(state["after"]) if state else 0
            if state:
                click.echo(f"resuming after version row {after}", err=True)
            total = reencrypt.count_to_reencrypt(session, key.header, after)
        done = 0
        with click.progressbar(length=total, label=f"Re-encrypting with data key {key.id}", file=sys.stderr) as bar:
            while True:
                with svc.unit_of_work(write=True) as session:
                    result = reencrypt.reencrypt_batch(session, svc.keyring, after, batch)
                    position = None if result.last_vid is None else {"after": result.last_vid, "key": key.id}
                    maintenance.write_state(session, reencrypt.REENCRYPT, position, svc.clock())
                if result.last_vid is None:
                    break
                after = result.last_vid
                done += result.reencrypted
                bar.update(result.reencrypted)
    record_command(svc)
    click.echo(f"{done} bodies re-encrypted with data key {key.id}")
