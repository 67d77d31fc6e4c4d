"""The token endpoint's grants (RFC 6749 §4-5): what ``POST /auth/token`` does, without HTTP.

- ``client_credentials`` with a ``private_key_jwt`` client assertion (SMART Backend Services): the client's
  token carries the requested scopes its registration covers (``invalid_scope`` when none);
- ``password`` (RFC 6749 §4.3) for local staff accounts: development and small sites only, enabled by
  ``DUI_AUTH_PASSWORD_GRANT`` (on in ``dev``, off in ``prod``); one answer for every failure;
- ``urn:ietf:params:oauth:grant-type:token-exchange`` (RFC 8693): a staff member's Pro Santé Connect (or
  IdP) token, as CI-SIS SECU-API describes, exchanged for this server's token.

A client assertion is used once: its ``jti`` is inserted in ``used_jti`` in the request's transaction,
whose primary key refuses a second insert, even from a concurrent request (it waits for the first one's
commit, then fails). Errors are ``OAuthError`` (RFC 6749 §5.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dui.auth import accounts
from dui.auth.actor import Actor
from dui.auth.assertions import ASSERTION_TYPE, verify_assertion
from dui.auth.authenticator import Authenticator
from dui.auth.scopes import ScopeError, ScopeSet
from dui.auth.tables import used_jti
from dui.auth.tokens import LEEWAY, TokenError, unverified_claims
from dui.db import is_postgresql

CLIENT_CREDENTIALS = "client_credentials"
PASSWORD = "password"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:access_token", "urn:ietf:params:oauth:token-type:id_token",
                       "urn:ietf:params:oauth:token-type:jwt")
STAFF_SCOPES = ScopeSet.parse("user/*.cruds")
BAD_CREDENTIALS = "The login or the password is incorrect"


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class TokenResponse:
    actor: Actor
    body: dict[str, Any]


def grant_types(auth: Authenticator) -> list[str]:
    types = [CLIENT_CREDENTIALS]
    if auth.password_grant:
        types.append(PASSWORD)
    if auth.oidc:
        types.append(TOKEN_EXCHANGE)
    return types


def token_request(auth: Authenticator, session: Session, form: Mapping[str, Sequence[str]]) -> TokenResponse:
    """Answer a token request (the form's parameters, each with all its values); ``OAuthError`` if refused."""
    tokens = auth.tokens  # first: without a usable signing key, 503 whatever the request
    params = _single_values(form)
    grant_type = params.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type not in grant_types(auth):
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported here; supported: "
                         f"{', '.join(grant_types(auth))}")
    now = auth.now()
    if grant_type == CLIENT_CREDENTIALS:
        actor = _client_credentials(auth, session, params, now)
    elif grant_type == PASSWORD:
        actor = _password(session, params)
    else:
        actor = _token_exchange(auth, params, now)
    issued = tokens.issue(actor, now)
    actor = replace(actor, token_id=issued.jti)
    return TokenResponse(actor, {"access_token": issued.token, "token_type": "bearer",
                                 "expires_in": issued.expires_in, "scope": str(issued.scopes)})


def _client_credentials(auth: Authenticator, session: Session, params: dict[str, str], now: datetime) -> Actor:
    if params.get("client_assertion_type") != ASSERTION_TYPE:
        raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE} (private_key_jwt)", 401)
    assertion = params.get("client_assertion")
    if not assertion:
        raise OAuthError("invalid_client", "client_assertion is required", 401)
    requested = _scopes(params.get("scope"), required=True)
    try:
        verified = verify_assertion(assertion, auth.token_url, lambda cid: accounts.get_client(session, cid), now)
    except TokenError as exc:
        raise OAuthError("invalid_client", f"Client assertion refused: {exc}", 401) from None
    client = verified.client
    if "client_id" in params and params["client_id"] != client.client_id:
        raise OAuthError("invalid_client", "client_id does not match the assertion's iss", 401)
    _use_jti(session, client.client_id, verified.jti, verified.expires_at, now)
    granted = requested.grant(client.scopes)
    if not granted:
        raise OAuthError("invalid_scope", f"None of the requested scopes is registered for this client; it may "
                         f"ask for: {client.scopes}")
    # A device client's token is a device's: refused everywhere but /api/devices/events (dui.auth.policy.may).
    return Actor(client.kind, client.client_id, frozenset(), client.establishment, scopes=granted,
                 client_id=client.client_id, auth_method="private_key_jwt", issuer=auth.issuer_url)


def _use_jti(session: Session, client_id: str, jti: str, expires_at: int, now: datetime) -> None:
    """Record the assertion's jti, refusing one already recorded (replay); drop the expired ones."""
    _purge(session, now)
    try:
        with session.begin_nested():
            session.execute(insert(used_jti).values(client_id=client_id, jti=jti, expires_at=expires_at))
    except IntegrityError:
        raise OAuthError("invalid_client", "Client assertion refused: replayed (its jti was already used)",
                         401) from None


def _purge(session: Session, now: datetime) -> None:
    # A row may go once its assertion would be refused as expired anyway. On PostgreSQL one request at a time
    # purges (a try-lock): concurrent purges would wait on each other's row locks for nothing.
    if is_postgresql(session):
        key = int.from_bytes(hashlib.blake2b(b"dui.used_jti.purge", digest_size=8).digest(), "big", signed=True)
        if not session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar():
            return
    session.execute(delete(used_jti).where(used_jti.c.expires_at < int(now.timestamp()) - LEEWAY))


def _password(session: Session, params: dict[str, str]) -> Actor:
    login, password = params.get("username"), params.get("password")
    if not login or password is None:
        raise OAuthError("invalid_request", "username and password are required")
    requested = _scopes(params.get("scope"), required=False) or STAFF_SCOPES
    user = accounts.authenticate_user(session, login, password)
    if user is None:
        raise OAuthError("invalid_grant", BAD_CREDENTIALS)
    return _staff(requested, user.login, frozenset(user.roles), user.establishment, "password", None)


def _token_exchange(auth: Authenticator, params: dict[str, str], now: datetime) -> Actor:
    subject_token = params.get("subject_token")
    if not subject_token or params.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
        raise OAuthError("invalid_request", f"subject_token and subject_token_type (one of "
                         f"{', '.join(SUBJECT_TOKEN_TYPES)}) are required")
    requested = _scopes(params.get("scope"), required=False)
    try:
        issuer = unverified_claims(subject_token).get("iss")
        if not isinstance(issuer, str) or issuer not in auth.oidc:
            raise TokenError("wrong issuer (iss): not a trusted OIDC issuer")
        person = auth.oidc[issuer].actor(subject_token, now)
    except TokenError as exc:
        raise OAuthError("invalid_grant", f"subject_token refused: {exc}") from None
    granted = (requested or person.scopes).grant(person.scopes)
    if not granted:
        raise OAuthError("invalid_scope", f"the requested scopes are outside {person.scopes}")
    return replace(person, scopes=granted)


def _staff(requested: ScopeSet, login: str, roles: frozenset[str], establishment: str, method: str,
           client_id: str | None) -> Actor:
    granted = requested.grant(STAFF_SCOPES)
    if not granted:
        raise OAuthError("invalid_scope", f"staff members are granted user/ scopes ({STAFF_SCOPES})")
    return Actor("staff", login, roles, establishment, scopes=granted, client_id=client_id, auth_method=method)


def _scopes(text: str | None, required: bool) -> ScopeSet:
    if not text or not text.strip():
        if required:
            raise OAuthError("invalid_scope", "scope is required (e.g. system/Patient.rs system/Observation.rs)")
        return ScopeSet()
    try:
        return ScopeSet.parse(text)
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None


def _single_values(form: Mapping[str, Sequence[str]]) -> dict[str, str]:
    repeated = sorted(k for k, v in form.items() if len(v) > 1)
    if repeated:  # RFC 6749 §3.2: request parameters MUST NOT be included more than once
        raise OAuthError("invalid_request", f"repeated parameter(s): {', '.join(repeated)}")
    return {k: v[0] for k, v in form.items() if v}
