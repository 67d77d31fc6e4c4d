"""Invariants (ElementDefinition.constraint) evaluated in FHIRPath with fhirpathpy, each expression compiled once.

Every evaluation passes fhirpathpy's R4 model: without it, choice elements (``value[x]``) and ``extension('url')``
silently yield nothing. The focus is the element's own value, typed by its path, with ``%resource`` and
``%rootResource`` bound. Two invariants present on every element and extension are checked directly, being
structural: ele-1 (a value or children) and ext-1 (an extension has either a value or extensions, not both).

An expression that fhirpathpy cannot run (a function it does not implement, such as ``conformsTo``, ``memberOf``,
``htmlChecks`` or ``resolve``, or any other failure) is reported as not run, never as a failed invariant; so is a
result that is not a boolean. Only a result of exactly ``false`` fails the invariant.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_profiles.elements import Constraint

__all__ = ["Outcome", "evaluate"]

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


def evaluate(constraint: Constraint, value: Any, extra: dict[str, Any] | None, path: str,
             resource: dict[str, Any], root: dict[str, Any]) -> tuple[Outcome, str]:
    """Whether ``constraint`` holds on one element value (``path``: its definition path, for types)."""
    if constraint.key == "ele-1":
        return (Outcome.HOLDS if _has_content(value, extra) else Outcome.FAILS), ""
    if constraint.key == "ext-1" and isinstance(value, dict):
        has_value = any(k.startswith("value") and k[5:6].isupper() for k in value)
        return (Outcome.HOLDS if bool(value.get("extension")) != has_value else Outcome.FAILS), ""
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
