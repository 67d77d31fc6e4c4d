"""Invariants (ElementDefinition.constraint) evaluated in FHIRPath with fhirpathpy, each expression compiled once.

Every evaluation passes fhirpathpy's R4 model: without it, choice elements (``value[x]``) and ``extension('url')``
silently yield nothing. The focus is the element's own value, typed by its path, with ``%resource`` and
``%rootResource`` bound. Two invariants present on every element and extension are checked directly, being
structural: ele-1 (a value or children) and ext-1 (an extension has either a value or extensions, not both).

A few invariants that every write meets are answered in Python when the answer is plain from the JSON, and only
then (``_DIRECT``, keyed by the exact R4 expression: a profile that words one differently is evaluated in FHIRPath):
the DomainResource ones on a resource without ``contained`` (dom-2 to dom-5 hold; dom-6, a narrative, is read
directly) and the Observation and vital-sign ones on the usual shapes. FHIRPath costs 15 to 55 µs each; these were
about a tenth of the CPU of storing an Observation. Anything less plain (a ``contained`` resource, an empty object,
a primitive carried only by its extension) goes to FHIRPath as before; tests compare both answers over the
conformance examples and crafted edge cases.

An expression that fhirpathpy cannot run (a function it does not implement, such as ``conformsTo``, ``memberOf``,
``htmlChecks`` or ``resolve``, or any other failure) is reported as not run, never as a failed invariant; so is a
result that is not a boolean. Only a result of exactly ``false`` fails the invariant.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_profiles.elements import Constraint

__all__ = ["Outcome", "direct", "evaluate", "in_fhirpath"]

_Compiled = Callable[..., list[Any]]
_lock = threading.Lock()
_compiled: dict[str, _Compiled | Exception] = {}
_MODEL = models["r4"]
# trace() prints to stdout unless given a function: instance values must not reach any output.
_OPTIONS = {"traceFn": lambda label, values: None}


class Outcome(Enum):
    HOLDS = "holds"
    FAILS = "fails"
    NOT_RUN = "not run"


def _compile(expression: str) -> _Compiled | Exception:
    found = _compiled.get(expression)
    if found is None:
        with _lock:
            found = _compiled.get(expression)
            if found is None:
                try:
                    found = fhirpathpy.compile(expression, _MODEL, _OPTIONS)
                except Exception as error:
                    found = error
                _compiled[expression] = found
    return found


def _has_content(value: Any, extra: dict[str, Any] | None) -> bool:
    if isinstance(value, dict):
        return any(key != "id" and item not in (None, [], {}) for key, item in value.items())
    return value is not None or bool(extra and extra.get("extension"))


# -- answered without FHIRPath --------------------------------------------------------------------------------------
# Each takes the focus value and answers True (holds), False (fails) or None (not plain: evaluate the FHIRPath).

_DATETIME = re.compile(r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"  # R4's own pattern of dateTime
                       r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
                       r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
                       r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?")


def _plain(item: Any) -> bool | None:
    """Whether a JSON value is there for FHIRPath (None: not plain, such as an empty object or list)."""
    if item is None:
        return False
    if isinstance(item, bool | int | float):
        return True
    if isinstance(item, str | list | dict):
        return True if item else None
    return None


def _choice(value: dict[str, Any], name: str) -> bool | None:
    """Whether the choice element ``name`` (``value`` for ``value[x]``) is there; None when not plain (a
    primitive's ``_valueX`` extension, an empty object)."""
    found = False
    for key, item in value.items():
        if key.startswith(("_" + name, name)) and key[len(name) + (key[0] == "_"):][:1].isupper():
            if key[0] == "_":
                return None
            present = _plain(item)
            if present is None:
                return None
            found = found or present
    return found


def _field(value: dict[str, Any], name: str) -> bool | None:
    return _plain(value.get(name)) if "_" + name not in value else None


def _no_contained(value: Any) -> bool | None:
    return True if isinstance(value, dict) and "contained" not in value else None


def _dom_6(value: Any) -> bool | None:
    if not isinstance(value, dict):
        return None
    text = value.get("text")
    if text is None:
        return False
    div = text.get("div") if isinstance(text, dict) else None
    return True if isinstance(div, str) and div else None


def _obs_6(value: Any) -> bool | None:  # dataAbsentReason.empty() or value.empty()
    if not isinstance(value, dict):
        return None
    absent, given = _field(value, "dataAbsentReason"), _choice(value, "value")
    if absent is None or given is None:
        return None
    return not (absent and given)


def _obs_7(value: Any) -> bool | None:  # value.empty() or component.code.where(...).empty()
    if not isinstance(value, dict):
        return None
    given, components = _choice(value, "value"), _field(value, "component")
    if given is False or components is False:
        return True
    return None


def _vs_2(value: Any) -> bool | None:  # (component.empty() and hasMember.empty()) implies (dataAbsentReason or value)
    if not isinstance(value, dict):
        return None
    components, members = _field(value, "component"), _field(value, "hasMember")
    if components is None or members is None:
        return None
    if components or members:
        return True
    return _vs_3(value)


def _vs_3(value: Any) -> bool | None:  # value.exists() or dataAbsentReason.exists()
    if not isinstance(value, dict):
        return None
    given, absent = _choice(value, "value"), _field(value, "dataAbsentReason")
    if given is None or absent is None:
        return None
    return given or absent


def _vs_1(value: Any) -> bool | None:  # ($this as dateTime).toString().length() >= 8
    if not isinstance(value, str) or _DATETIME.fullmatch(value) is None:
        return None
    return len(value) >= 8


_DOM_3_R4 = ("contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | "
             "%resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = "
             "'#').exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) "
             "= '#').exists()).not()).trace('unmatched', id).empty()")
_DIRECT: dict[str, Callable[[Any], bool | None]] = {
    "contained.contained.empty()": _no_contained,  # dom-2
    _DOM_3_R4: _no_contained,  # dom-3
    "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()": _no_contained,  # dom-4
    "contained.meta.security.empty()": _no_contained,  # dom-5
    "text.`div`.exists()": _dom_6,  # dom-6
    "dataAbsentReason.empty() or value.empty()": _obs_6,
    "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()": _obs_7,
    "(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or value.exists())": _vs_2,
    "value.exists() or dataAbsentReason.exists()": _vs_3,
    "($this as dateTime).toString().length() >= 8": _vs_1,
}


def direct(constraint: Constraint, value: Any) -> bool | None:
    """The answer of ``constraint`` on ``value`` without FHIRPath, when it is plain (None otherwise)."""
    answer = _DIRECT.get(constraint.expression)
    return answer(value) if answer is not None else None


def evaluate(constraint: Constraint, value: Any, extra: dict[str, Any] | None, path: str,
             resource: dict[str, Any], root: dict[str, Any]) -> tuple[Outcome, str]:
    """Whether ``constraint`` holds on one element value (``path``: its definition path, for types)."""
    if constraint.key == "ele-1":
        return (Outcome.HOLDS if _has_content(value, extra) else Outcome.FAILS), ""
    if constraint.key == "ext-1" and isinstance(value, dict):
        has_value = any(k.startswith("value") and k[5:6].isupper() for k in value)
        return (Outcome.HOLDS if bool(value.get("extension")) != has_value else Outcome.FAILS), ""
    answer = direct(constraint, value)
    if answer is not None:
        return (Outcome.HOLDS if answer else Outcome.FAILS), ""
    return in_fhirpath(constraint, value, extra, path, resource, root)


def in_fhirpath(constraint: Constraint, value: Any, extra: dict[str, Any] | None, path: str,
                resource: dict[str, Any], root: dict[str, Any]) -> tuple[Outcome, str]:
    """``constraint`` evaluated by fhirpathpy."""
    compiled = _compile(constraint.expression)
    if isinstance(compiled, Exception):
        return Outcome.NOT_RUN, f"{type(compiled).__name__}: {compiled}"
    focus: Any = value
    if value is not resource:
        focus = ResourceNode.create_node(value if value is not None else {}, path, extra)  # type: ignore[no-untyped-call]
    try:
        result = compiled(focus, {"resource": resource, "rootResource": root})
    except Exception as error:
        return Outcome.NOT_RUN, f"{type(error).__name__}: {error}"
    if result == [False]:
        return Outcome.FAILS, ""
    if result in ([True], []) or (len(result) == 1 and not isinstance(result[0], bool)):
        return Outcome.HOLDS, ""
    return Outcome.NOT_RUN, f"the expression gave {len(result)} values, not a boolean"
