"""Fast evaluation of the simple FHIRPath forms that search parameters use.

The R4 search parameters use a small part of FHIRPath: member paths from the resource type,
``.ofType(T)`` after a choice element, ``.where(field='literal')`` and unions. Evaluated by
fhirpathpy they cost 20-150 µs each, about half of a write with ~40 parameters. This module compiles
those forms into plain walks over the JSON dicts, typed by the R4 definitions so that choice
elements (``value[x]``) are found under their real keys (``valueQuantity``...). Anything else
(``exists()``, comparisons...) returns ``None`` from ``compile_path`` and is left to fhirpathpy.
``tests/unit/test_paths.py`` checks that both give the same values on the published examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from dui.fhir.definitions import R4
from dui.fhir.fhirpath import split_steps, split_top_level, unwrap

Evaluator = Callable[[Any], list[Any]]
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_OF_TYPE = re.compile(r"ofType\(\s*([A-Za-z][A-Za-z0-9]*)\s*\)")
_WHERE = re.compile(r"where\(\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*'([^'\\]*)'\s*\)")

# One step: (kind, argument). Kinds: "member" (name), "type" (wanted type), "where" ((field, value)).
Step = tuple[str, Any]


def top_keys(defs: R4, expression: str, root: str) -> frozenset[str] | None:
    """The top-level keys an expression can start from (None when it starts from the root itself).

    A resource without any of them yields nothing: the indexer skips such parameters without
    evaluating them, which is most of the ~60 parameters of an Observation.
    """
    keys: set[str] = set()
    for part in _split_union(expression):
        steps = _parse(unwrap(part), root)
        if not steps or steps[0][0] != "member":
            return None
        el = defs.children(root).get(steps[0][1])
        if el is None:
            continue
        if el.is_choice:
            keys.update(el.name + t[:1].upper() + t[1:] for t in el.types)
        else:
            keys.add(el.name)
    return frozenset(keys)


def compile_path(defs: R4, expression: str, root: str) -> Evaluator | None:
    """An evaluator of ``expression`` on a ``root`` (a resource type, or an element path for
    composite components); None when the expression is not of the simple forms."""
    branches = []
    for part in _split_union(expression):
        steps = _parse(unwrap(part), root)
        if steps is None:
            return None
        branches.append(steps)
    return lambda node: [value for steps in branches for value in _run(defs, steps, node, root)]


def _split_union(expression: str) -> list[str]:
    return [part for part in split_top_level(expression, "|") if part]


def _parse(expression: str, root: str) -> list[Step] | None:
    tokens = split_steps(expression)
    root_type = root.split(".")[0]
    if tokens and tokens[0] == root_type and "." not in root:
        tokens = tokens[1:]
    steps: list[Step] = []
    for token in tokens:
        if _NAME.fullmatch(token):
            steps.append(("member", token))
            continue
        m = _OF_TYPE.fullmatch(token)
        if m:
            steps.append(("type", m.group(1)))
            continue
        m = _WHERE.fullmatch(token)
        if m:
            steps.append(("where", (m.group(1), m.group(2))))
            continue
        return None
    return steps


def _run(defs: R4, steps: list[Step], node: Any, root: str) -> list[Any]:
    # Each item: (value, type path of its children, choice types still open for ofType)
    current: list[tuple[Any, str, str | None]] = [(node, root, None)]
    for kind, arg in steps:
        following: list[tuple[Any, str, str | None]] = []
        if kind == "member":
            for value, path, _ in current:
                if not isinstance(value, dict):
                    continue
                el = defs.children(path).get(arg)
                if el is None:
                    continue
                if el.is_choice:
                    for t in el.types:
                        key = arg + t[:1].upper() + t[1:]
                        if key in value:
                            _extend(following, value[key], t, t)
                    continue
                if el.content_ref:
                    child = el.content_ref
                elif el.types in (("BackboneElement",), ("Element",)):
                    child = el.path
                else:
                    child = el.types[0] if el.types else el.path
                if arg in value:
                    _extend(following, value[arg], child, None)
        elif kind == "type":
            wanted = arg.lower()
            for value, path, chosen in current:
                if (chosen if chosen is not None else path).lower() == wanted:
                    following.append((value, path, None))
        else:  # where(field='literal')
            field, literal = arg
            following = [item for item in current if isinstance(item[0], dict) and item[0].get(field) == literal]
        current = following
    return [value for value, _, _ in current if value is not None]


def _extend(out: list[tuple[Any, str, str | None]], value: Any, path: str, chosen: str | None) -> None:
    if isinstance(value, list):
        out.extend((v, path, chosen) for v in value)
    else:
        out.append((value, path, chosen))
