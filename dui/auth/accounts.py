"""Registered API clients and local staff accounts: create, list, disable, look up.

Called by ``dui clients ...`` / ``dui users ...`` and by the token endpoint. Functions flush, never
commit (the command or request owns the transaction). Nothing is deleted: a client or an account is
disabled, so the audit trail keeps a meaning for its id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dui.auth import passwords
from dui.auth.finess import check_finess
from dui.auth.jwks import validate_jwks
from dui.auth.roles import check_role
from dui.auth.scopes import ScopeSet
from dui.auth.tables import api_client, staff_user

LOGIN = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")


class AccountError(ValueError):
    """No such client or account, or one that cannot be created as asked."""


@dataclass(frozen=True)
class ApiClient:
    client_id: str
    name: str
    scopes: ScopeSet
    jwks: dict[str, Any]
    establishment: str | None
    enabled: bool
    created_at: int
    kind: str = "client"  # "device": a sensor gateway, which may only post events (dui.staff.alerts)


# What a device client is registered with, and may be granted: it writes the fall it reports and its Flag.
DEVICE_SCOPES = "system/Observation.c system/Flag.c"


@dataclass(frozen=True)
class StaffUser:
    login: str
    roles: tuple[str, ...]
    establishment: str
    enabled: bool
    created_at: int
    password_hash: str = ""

    def __repr__(self) -> str:  # never print the hash
        return f"StaffUser(login={self.login!r}, roles={self.roles!r}, establishment={self.establishment!r})"


# -- API clients ---------------------------------------------------------------------------------------------


def register_client(session: Session, name: str, scopes: ScopeSet, jwks: dict[str, Any],
                    establishment: str | None, now: datetime, kind: str = "client") -> ApiClient:
    """Register a SMART Backend Services client; its id is generated. ``AccountError``/``ValueError`` on bad input.
    A ``device`` client (a sensor gateway) belongs to an establishment and is registered with ``DEVICE_SCOPES``."""
    if kind == "device":
        if not establishment:
            raise AccountError("a device client belongs to an establishment: give its FINESS")
        scopes = ScopeSet.parse(DEVICE_SCOPES)
    elif kind != "client":
        raise AccountError(f"unknown kind of client {kind!r}; expected client or device")
    name = name.strip()
    if not name or len(name) > 200:
        raise AccountError("the client's name must have 1 to 200 characters")
    if not scopes:
        raise AccountError("a client needs at least one scope")
    if scopes.contexts != {"system"}:
        raise AccountError("a backend client is registered with system/ scopes only (SMART Backend Services)")
    jwks = validate_jwks(jwks)
    finess = check_finess(establishment) if establishment else None
    client = ApiClient(str(uuid.uuid4()), name, scopes, jwks, finess, True, int(now.timestamp()), kind)
    session.execute(insert(api_client).values(
        client_id=client.client_id, name=client.name, scopes=str(scopes), jwks=json.dumps(jwks),
        establishment=finess, enabled=True, created_at=client.created_at, kind=kind))
    return client


def get_client(session: Session, client_id: str) -> ApiClient | None:
    row = session.execute(select(api_client).where(api_client.c.client_id == client_id)).mappings().first()
    return _client(row) if row is not None else None


def list_clients(session: Session) -> list[ApiClient]:
    rows = session.execute(select(api_client).order_by(api_client.c.created_at, api_client.c.name)).mappings()
    return [_client(row) for row in rows]


def disable_client(session: Session, client_id: str, now: datetime) -> ApiClient:
    client = get_client(session, client_id)
    if client is None:
        raise AccountError(f"no client {client_id!r}")
    session.execute(update(api_client).where(api_client.c.client_id == client_id)
                    .values(enabled=False, disabled_at=int(now.timestamp())))
    return replace(client, enabled=False)


def _client(row: Any) -> ApiClient:
    return ApiClient(row["client_id"], row["name"], ScopeSet.parse(row["scopes"]), json.loads(row["jwks"]),
                     row["establishment"], bool(row["enabled"]), int(row["created_at"]), row["kind"])


# -- Staff accounts ------------------------------------------------------------------------------------------


def check_login(login: str) -> str:
    normalized = login.strip().lower()
    if not LOGIN.fullmatch(normalized):
        raise AccountError("a login has 2 to 64 characters: letters, digits, '.', '_', '@', '-' (lower case)")
    return normalized


def create_user(session: Session, login: str, password: str, roles: Iterable[str], establishment: str,
                now: datetime) -> StaffUser:
    """Create a local account. ``AccountError``, ``ValueError`` (role, FINESS), ``WeakPassword`` on bad input."""
    login = check_login(login)
    role_list = tuple(dict.fromkeys(check_role(r) for r in roles))
    if not role_list:
        raise AccountError("an account needs at least one role")
    finess = check_finess(establishment)
    passwords.check_strength(password, login)
    if get_user(session, login) is not None:
        raise AccountError(f"the login {login!r} is taken")
    user = StaffUser(login, role_list, finess, True, int(now.timestamp()), passwords.hash_password(password))
    try:
        with session.begin_nested():
            session.execute(insert(staff_user).values(
                login=login, password_hash=user.password_hash, roles=" ".join(role_list), establishment=finess,
                enabled=True, created_at=user.created_at))
    except IntegrityError:
        raise AccountError(f"the login {login!r} is taken") from None
    return user


def get_user(session: Session, login: str) -> StaffUser | None:
    row = session.execute(select(staff_user).where(staff_user.c.login == login)).mappings().first()
    return _user(row) if row is not None else None


def list_users(session: Session) -> list[StaffUser]:
    return [_user(row) for row in session.execute(select(staff_user).order_by(staff_user.c.login)).mappings()]


def disable_user(session: Session, login: str, now: datetime) -> StaffUser:
    user = get_user(session, login.strip().lower())
    if user is None:
        raise AccountError(f"no account {login!r}")
    session.execute(update(staff_user).where(staff_user.c.login == user.login)
                    .values(enabled=False, disabled_at=int(now.timestamp())))
    return replace(user, enabled=False)


def set_password(session: Session, login: str, password: str) -> StaffUser:
    """Replace an account's password (checked for strength); ``AccountError`` if there is no such account."""
    user = get_user(session, login.strip().lower())
    if user is None:
        raise AccountError(f"no account {login!r}")
    passwords.check_strength(password, user.login)
    stored = passwords.hash_password(password)
    session.execute(update(staff_user).where(staff_user.c.login == user.login).values(password_hash=stored))
    return replace(user, password_hash=stored)


def authenticate_user(session: Session, login: str, password: str) -> StaffUser | None:
    """The enabled account ``login`` if ``password`` is its password, else None.

    The same work is done whatever the reason for a refusal (no such account, disabled, wrong password): a
    scrypt computation and a constant-time comparison, so that neither the answer nor its timing tells which
    logins exist. A hash made with older cost parameters is replaced after a successful check.
    """
    user = get_user(session, login.strip().lower()) if LOGIN.fullmatch(login.strip().lower()) else None
    matches = passwords.verify_password(password, user.password_hash if user is not None else None)
    if user is None or not matches or not user.enabled:
        return None
    if passwords.needs_rehash(user.password_hash):
        session.execute(update(staff_user).where(staff_user.c.login == user.login)
                        .values(password_hash=passwords.hash_password(password)))
    return user


def _user(row: Any) -> StaffUser:
    return StaffUser(row["login"], tuple(row["roles"].split()), row["establishment"], bool(row["enabled"]),
                     int(row["created_at"]), row["password_hash"])
