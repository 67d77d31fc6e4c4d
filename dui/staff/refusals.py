"""Refusals of the staff use cases, said in English and in French.

The staff API answers every refusal as a problem document whose items carry ``detail`` and ``detail_fr``
(``dui.web.staff.problems`` reads the ``fr`` of an issue's diagnostics). A use case below the web layer raises the
usual ``DuiError`` categories; ``refuse`` builds one whose message and single issue are a ``Said``, naming the field
of the request at fault.
"""

from __future__ import annotations

from typing import TypeVar

from dui.auth.actor import Actor
from dui.errors import DuiError, Forbidden, Issue

E = TypeVar("E", bound=DuiError)


class Said(str):
    """A message in English (the string itself) with its French (``fr``)."""

    fr: str

    def __new__(cls, en: str, fr: str) -> Said:
        value = super().__new__(cls, en)
        value.fr = fr
        return value


def refuse(kind: type[E], en: str, fr: str, field: str | None = None, *, code: str | None = None,
           patients: tuple[str, ...] = ()) -> E:
    """A ``kind`` error (``Conflict``, ``Unprocessable``...) saying ``en`` / ``fr`` about ``field``."""
    said = Said(en, fr)
    return kind(said, issues=[Issue(said, code, expression=(field,) if field else ())], code=code,
                patients=patients)


def require_role(actor: Actor, roles: frozenset[str], en: str, fr: str) -> None:
    """``Forbidden`` unless the actor holds one of ``roles``: who may call an endpoint at all. What the actor may
    then read and write is still decided by the authorization policy, on every FHIR interaction."""
    if not actor.roles & roles:
        raise refuse(Forbidden, f"Not allowed: {en} ({', '.join(sorted(roles))})",
                     f"Non autorisé : {fr} ({', '.join(sorted(roles))})")
