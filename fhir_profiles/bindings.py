"""Terminology bindings (ElementDefinition.binding) checked against Terminology.check.

terminologies.html, "Binding strength": a code outside a *required* value set is an error, outside an *extensible*
one a warning (when the value set can be read); *preferred* and *example* bindings are not checked. A
CodeableConcept passes when one of its codings is in the value set; when none is, and one could not be decided
(code system or value set not at hand), the answer is "not checked". Coded types: code, string and uri (the value
itself, any system), Coding, CodeableConcept and Quantity (system and code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_profiles.terminology import Membership, Terminology

__all__ = ["BindingResult", "check_binding"]

_CHECKED = ("required", "extensible")
_TEXT_TYPES = ("code", "string", "uri")


@dataclass(frozen=True)
class BindingResult:
    severity: str  # error | warning | information
    code: str  # code-invalid | not-found
    message: str


def _codes(type_code: str, value: Any) -> list[tuple[str | None, str]] | None:
    """The (system, code) pairs of a value; None when the type is not a coded one."""
    if type_code in _TEXT_TYPES:
        return [(None, value)] if isinstance(value, str) else []
    if not isinstance(value, dict):
        return None
    if type_code in ("Coding", "Quantity"):
        code = value.get("code")
        return [(value.get("system"), code)] if isinstance(code, str) else []
    if type_code == "CodeableConcept":
        return [
            (coding.get("system"), coding["code"])
            for coding in value.get("coding", [])
            if isinstance(coding, dict) and isinstance(coding.get("code"), str)
        ]
    return None


def check_binding(terminology: Terminology, strength: str, value_set: str, type_code: str, value: Any,
                  where: str) -> BindingResult | None:
    """The problem with ``value`` (of ``type_code``) under a binding, if any; ``where`` names the element."""
    if strength not in _CHECKED:
        return None
    pairs = _codes(type_code, value)
    if pairs is None:
        return None
    if not pairs:
        if type_code == "Quantity" or (strength == "extensible" and type_code == "CodeableConcept"):
            return None  # a quantity without a code, a concept given as text only: nothing to check
        return BindingResult("error" if strength == "required" else "warning", "code-invalid",
                             f"{where}: no code given, one from value set {value_set} ({strength}) is expected")
    reasons: list[str] = []
    undecided: list[str] = []
    for system, code in pairs:
        check = terminology.check(value_set, system, code)
        if check.membership is Membership.MEMBER:
            return None
        (undecided if check.membership is Membership.UNKNOWN else reasons).append(check.reason)
    shown = ", ".join(code if system is None else f"{system}|{code}" for system, code in pairs)
    if undecided:
        return BindingResult("information", "not-found",
                             f"{where}: {shown} not checked against value set {value_set} ({strength}): {undecided[0]}")
    return BindingResult("error" if strength == "required" else "warning", "code-invalid",
                         f"{where}: {shown} is not in value set {value_set} ({strength} binding)")
