"""FHIRPath with fhirpathpy: compiled once per expression with the R4 model, plus path helpers.

Without the model, fhirpathpy silently returns nothing for choice elements (``value[x]``) and for
``extension('url')``, so every evaluation here passes ``models["r4"]``. ``matches()`` and ``replaceMatches()``
run on RE2 (``dui.fhir.regex``), never on Python's backtracking ``re``.

Two caches: the server's own expressions (search parameters, a finite set) are kept for the life of the
process; a client's (FHIRPath Patch paths) go through ``compile_client``, which refuses expressions longer than
``MAX_CLIENT_EXPRESSION`` characters and keeps the ``CLIENT_CACHE_SIZE`` most recently used, so that a client
sending ever new paths cannot fill the memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from dui.errors import Invalid
from dui.fhir.regex import FHIRPATH_FUNCTIONS

MAX_CLIENT_EXPRESSION = 4000  # characters of a client's expression
CLIENT_CACHE_SIZE = 256  # a client's compiled expressions kept, least recently used dropped first
_OPTIONS = {"userInvocationTable": FHIRPATH_FUNCTIONS}
_lock = Lock()
_compiled: dict[str, Callable[..., list[Any]]] = {}
_client: OrderedDict[str, Callable[..., list[Any]]] = OrderedDict()


def _compile(expression: str) -> Callable[..., list[Any]]:
    fn: Callable[..., list[Any]] = fhirpathpy.compile(expression, models["r4"], _OPTIONS)
    return fn


def compile_fhirpath(expression: str) -> Callable[..., list[Any]]:
    """Compile one of the server's own expressions once per process; raises ``ValueError``-like errors on bad
    syntax. Never for a client's text: see ``compile_client``."""
    fn = _compiled.get(expression)
    if fn is None:
        with _lock:
            fn = _compiled.get(expression)
            if fn is None:
                fn = _compiled[expression] = _compile(expression)
    return fn


def compile_client(expression: str) -> Callable[..., list[Any]]:
    """Compile a client's expression, cached in a bounded LRU; 400 ``too-costly`` beyond the length limit."""
    if len(expression) > MAX_CLIENT_EXPRESSION:
        raise Invalid(f"The FHIRPath expression is longer than {MAX_CLIENT_EXPRESSION} characters",
                      code="too-costly")
    fn = _compiled.get(expression)  # the same text as one of the server's own
    if fn is not None:
        return fn
    with _lock:
        fn = _client.get(expression)
        if fn is not None:
            _client.move_to_end(expression)
            return fn
    fn = _compile(expression)  # outside the lock: parsing is the slow part, and may fail
    with _lock:
        _client[expression] = fn
        _client.move_to_end(expression)
        while len(_client) > CLIENT_CACHE_SIZE:
            _client.popitem(last=False)
    return fn


def cache_sizes() -> tuple[int, int]:
    """(server's expressions, client's expressions) compiled and kept: for tests and diagnostics."""
    with _lock:
        return len(_compiled), len(_client)


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
