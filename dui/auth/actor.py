"""The actor of a unit of work: a staff member, an API client, an administrator at the CLI.

Authentication and authorization (SMART Backend Services, staff OIDC, roles, establishment scoping)
build on this value; until they are in place every request runs as ``ANONYMOUS`` and every CLI
command as ``CLI``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Actor:
    kind: str  # "anonymous", "cli", "staff", "client", "system"
    id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    establishment: str | None = None  # FINESS


ANONYMOUS = Actor("anonymous", "anonymous")
CLI = Actor("cli", "cli", frozenset({"administrateur"}))
SYSTEM = Actor("system", "system")
