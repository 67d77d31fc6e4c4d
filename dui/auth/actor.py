"""The actor of a unit of work: a staff member, an API client, an administrator at the CLI.

Authentication (``dui.auth.authenticator``) builds it from the request's access token: an API client
(SMART Backend Services), a staff member (local account or OIDC issuer). Authorization reads its roles,
establishment and scopes. A request without a token runs as ``ANONYMOUS`` where that is allowed; every
CLI command runs as ``CLI``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dui.auth.scopes import NO_SCOPES, ScopeSet


@dataclass(frozen=True)
class Actor:
    kind: str  # "anonymous", "cli", "staff", "client", "system"
    id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    establishment: str | None = None  # FINESS
    # What authentication established (all empty for ANONYMOUS, CLI and SYSTEM):
    scopes: ScopeSet = NO_SCOPES  # the SMART scopes granted to the token
    client_id: str | None = None  # the API client (kind "client"), or the client a staff token was asked by
    auth_method: str | None = None  # "private_key_jwt", "password" or "oidc"
    issuer: str | None = None  # the token's issuer: this server, or the OIDC issuer that vouched for a staff member
    token_id: str | None = None  # the access token's jti, to tie audit entries to one token


ANONYMOUS = Actor("anonymous", "anonymous")
CLI = Actor("cli", "cli", frozenset({"administrateur"}))
SYSTEM = Actor("system", "system")
