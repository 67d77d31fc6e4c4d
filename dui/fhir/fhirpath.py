"""FHIRPath with fhirpathpy: compiled once per expression with the R4 model, plus path helpers.

Without the model, fhirpathpy silently returns nothing for choice elements (``value[x]``) and for
``extension('url')``, so every evaluation here passes ``models["r4"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Lock
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

_lock = Lock()
_compiled: dict[str, Callable[..., list[Any]]] = {}


def compile_fhirpath(expression: str) -> Callable[..., list[Any]]:
    """Compile ``expression`` once per process; raises ``ValueError``-like errors on bad syntax."""
    fn = _compiled.get(expression)
    if fn is None:
        with _lock:
            fn = _compiled.get(expression)
            if fn is None:
                fn = _compiled[expression] = fhirpathpy.compile(expression, models["r4"])
    return fn


def unwrap(expr: str) -> str:
    """Remove parentheses that enclose the whole expression."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, ch in enumerate(expr):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


def split_steps(expr: str) -> list[str]:
    """Split a path expression on the dots that are not inside parentheses or quotes."""
    return split_top_level(expr, ".")


def split_top_level(expr: str, separator: str) -> list[str]:
    """Split ``expr`` on the ``separator`` characters outside parentheses and quotes, stripped."""
    parts, depth, quote, current = [], 0, False, ""
    for ch in expr:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == separator and depth == 0 and not quote:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [part.strip() for part in parts]
