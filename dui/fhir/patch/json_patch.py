"""JSON Patch (RFC 6902) applied to a resource: http://hl7.org/fhir/R4/http.html#patch.

Raises ``Invalid`` for a malformed patch document and ``Unprocessable`` for an operation that
cannot be applied (a missing path, a failed ``test``).
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from dui.errors import Invalid, Unprocessable

OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")


def apply(document: Any, patch: Any) -> Any:
    """Return a patched copy of ``document``."""
    if not isinstance(patch, list):
        raise Invalid("A JSON Patch document is an array of operations")
    doc = copy.deepcopy(document)
    for index, op in enumerate(patch):
        if not isinstance(op, dict) or op.get("op") not in OPERATIONS or not isinstance(op.get("path"), str):
            raise Invalid(f"JSON Patch operation {index} needs 'op' (one of {', '.join(OPERATIONS)}) and 'path'")
        try:
            doc = _apply_one(doc, op)
        except _Failed as exc:
            raise Unprocessable(f"JSON Patch operation {index} ({op['op']} {op['path']}): {exc}") from None
    return doc


class _Failed(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _Failed("a JSON pointer starts with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token)
    return node


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise _Failed(f"'{token}' does not exist")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, allow_end=False)]
    raise _Failed(f"cannot descend into a value at '{token}'")


def _index(items: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(items)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _Failed(f"'{token}' is not an array index")
    index = int(token)
    limit = len(items) if allow_end else len(items) - 1
    if index > limit:
        raise _Failed(f"index {index} is out of range")
    return index


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        node = _child(node, token)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise _Failed("the target's parent is not an object or an array")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _Failed("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _Failed(f"'{last}' does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise _Failed("the target's parent is not an object or an array")
    return doc


def _apply_one(doc: Any, op: dict[str, Any]) -> Any:
    kind, path = op["op"], op["path"]
    if kind in ("add", "replace", "test") and "value" not in op:
        raise _Failed("'value' is missing")
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, path)
    if kind == "replace":
        _get(doc, path)
        return _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if _pointer(path) else op["value"]
    if not isinstance(op.get("from"), str) and kind in ("move", "copy"):
        raise _Failed("'from' is missing")
    if kind == "move":
        if path.startswith(op["from"] + "/"):
            raise _Failed("cannot move a value into one of its children")
        value = _get(doc, op["from"])
        return _add(_remove(doc, op["from"]), path, value)
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
    if not _equal(_get(doc, path), op["value"]):
        raise _Failed("the value is not the expected one")
    return doc


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | Decimal | float) and isinstance(b, int | Decimal | float):
        return Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
