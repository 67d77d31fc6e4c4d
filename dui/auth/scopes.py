"""SMART on FHIR scopes, v1 and v2, as a typed value.

SMART App Launch 2.x, "Scopes and Launch Context" (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):
a resource scope is ``<context>/<resource type or *>.<permissions>``, with context ``system`` (backend
services), ``user`` or ``patient``. Permissions are

- v2: a non-empty subsequence of ``cruds`` in that order (create, read, update, delete, search):
  ``system/Observation.rs``, ``system/*.cruds``;
- v1: ``read`` (= ``rs``), ``write`` (= ``cud``) or ``*`` (= ``cruds``): ``system/Patient.read``.

Granular v2 scopes (``system/Observation.rs?category=...``) and the non-resource scopes (``openid``,
``fhirUser``, ``launch``, ``offline_access``...) are refused with a message: this server has no use for the
latter, and granting the former while the policy ignored their query would widen access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PERMISSIONS = "cruds"
CONTEXTS = ("system", "user", "patient")
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_V1_NAMES = {v: k for k, v in V1_PERMISSIONS.items()}
_SCOPE = re.compile(r"(?P<context>[a-z]+)/(?P<type>\*|[A-Z][A-Za-z]{0,63})\.(?P<perms>[a-z]+|\*)")
MAX_SCOPES = 100


class ScopeError(ValueError):
    """A scope string that is not a SMART resource scope this server supports."""


@dataclass(frozen=True)
class Scope:
    """One resource scope; ``permissions`` in canonical ``cruds`` order; ``v1`` says how to write it back."""

    context: str
    resource_type: str  # a FHIR resource type, or "*"
    permissions: str
    v1: bool = False

    @classmethod
    def parse(cls, text: str) -> Scope:
        if "?" in text:
            raise ScopeError(f"granular scopes are not supported: {text!r}")
        match = _SCOPE.fullmatch(text)
        if match is None:
            raise ScopeError(f"not a SMART resource scope (context/Type.permissions): {text!r}")
        context, perms = match["context"], match["perms"]
        if context not in CONTEXTS:
            raise ScopeError(f"unknown scope context {context!r} in {text!r}; expected system, user or patient")
        if perms in V1_PERMISSIONS:
            return cls(context, match["type"], V1_PERMISSIONS[perms], v1=True)
        if not _is_subsequence(perms):
            raise ScopeError(f"permissions must be read, write, * or letters of 'cruds' in that order, in {text!r}")
        return cls(context, match["type"], perms)

    def allows(self, resource_type: str, permission: str) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions

    def intersect(self, other: Scope) -> Scope | None:
        """What of ``self`` (requested) ``other`` (registered) covers, or None."""
        if self.context != other.context:
            return None
        if other.resource_type == "*":
            resource_type = self.resource_type
        elif self.resource_type in ("*", other.resource_type):
            resource_type = other.resource_type
        else:
            return None
        permissions = "".join(p for p in PERMISSIONS if p in self.permissions and p in other.permissions)
        if not permissions:
            return None
        return Scope(self.context, resource_type, permissions, v1=self.v1 and permissions in _V1_NAMES)

    def __str__(self) -> str:
        perms = _V1_NAMES[self.permissions] if self.v1 and self.permissions in _V1_NAMES else self.permissions
        return f"{self.context}/{self.resource_type}.{perms}"


@dataclass(frozen=True)
class ScopeSet:
    """The scopes of a token or a registration, in the order given, without duplicates."""

    scopes: tuple[Scope, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> ScopeSet:
        """Parse space-separated scopes (RFC 6749 §3.3); ``ScopeError`` on the first one refused."""
        items = text.split() if isinstance(text, str) else [s for t in text for s in t.split()]
        if len(items) > MAX_SCOPES:
            raise ScopeError(f"at most {MAX_SCOPES} scopes")
        return cls.of(Scope.parse(item) for item in items)

    @classmethod
    def of(cls, scopes: Iterable[Scope]) -> ScopeSet:
        seen: dict[tuple[str, str, str], Scope] = {}
        for scope in scopes:
            seen.setdefault((scope.context, scope.resource_type, scope.permissions), scope)
        return cls(tuple(seen.values()))

    def allows(self, resource_type: str, permission: str, context: str | None = None) -> bool:
        """True if a scope (of ``context``, when given) grants ``permission`` (a letter of ``cruds``) on the type."""
        return any(s.allows(resource_type, permission) for s in self.scopes
                   if context is None or s.context == context)

    def grant(self, registered: ScopeSet) -> ScopeSet:
        """The part of these (requested) scopes that ``registered`` covers (RFC 6749 §3.3: may be less)."""
        return ScopeSet.of(part for asked in self.scopes for allowed in registered.scopes
                           if (part := asked.intersect(allowed)) is not None)

    @property
    def contexts(self) -> frozenset[str]:
        return frozenset(s.context for s in self.scopes)

    def __iter__(self) -> Iterator[Scope]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def __bool__(self) -> bool:
        return bool(self.scopes)

    def __str__(self) -> str:
        return " ".join(str(s) for s in self.scopes)


NO_SCOPES = ScopeSet()


def _is_subsequence(perms: str) -> bool:
    position = 0
    for letter in perms:
        found = PERMISSIONS.find(letter, position)
        if found < 0:
            return False
        position = found + 1
    return True
