"""FHIRPath Patch: http://hl7.org/fhir/R4/fhirpatch.html.

A ``Parameters`` resource lists operations (add, insert, delete, replace, move), each with a
FHIRPath ``path``. fhirpathpy returns copies of what it finds, so to know *where* a result sits,
the expression is evaluated on a marked copy of the resource, in which every object carries its own
location; primitives (which cannot carry a mark) are located through the last step of the path
(``...name`` or ``...name[n]``). Element cardinalities come from the R4 definitions, so ``add``
knows whether it appends to a list or sets a single value.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from dui.errors import DuiError, Invalid, Unprocessable
from dui.fhir.definitions import R4, ElementDef, r4
from dui.fhir.fhirpath import compile_client, split_steps, unwrap

Location = tuple[str | int, ...]
MARK = "__dui_location__"
_LAST_STEP = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\[([0-9]+)\])?")
# Element names that are also FHIRPath operators (Narrative.div!) must be quoted to be read as names.
_KEYWORD_STEP = re.compile(r"\.(div|mod|in|contains|and|or|xor|implies)(?=$|[.\[])")


def apply(resource: dict[str, Any], parameters: Any, defs: R4 | None = None) -> dict[str, Any]:
    """Return a patched copy of ``resource``."""
    defs = defs or r4()
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise Invalid("A FHIRPath Patch is a Parameters resource")
    doc = copy.deepcopy(resource)
    for index, param in enumerate(parameters.get("parameter") or []):
        if not isinstance(param, dict) or param.get("name") != "operation":
            raise Invalid(f"Parameters.parameter[{index}] must be named 'operation'")
        op = _operation(param, index)
        try:
            _Patcher(doc, defs).apply(op)
        except _Failed as exc:
            where = f"{op['type']} {op.get('path', '')}"
            raise Unprocessable(f"FHIRPath Patch operation {index} ({where}): {exc}") from None
    return doc


class _Failed(Exception):
    pass


def _operation(param: dict[str, Any], index: int) -> dict[str, Any]:
    op: dict[str, Any] = {}
    for part in param.get("part") or []:
        name = part.get("name")
        if name in ("type", "path", "name"):
            op[name] = next((v for k, v in part.items() if k.startswith("value")), None)
        elif name in ("index", "source", "destination"):
            op[name] = part.get("valueInteger")
        elif name == "value":
            op["value"] = _part_value(part)
    if op.get("type") not in ("add", "insert", "delete", "replace", "move"):
        raise Invalid(f"Operation {index}: 'type' must be add, insert, delete, replace or move")
    if not isinstance(op.get("path"), str) or not op["path"].strip():
        raise Invalid(f"Operation {index}: 'path' is required")
    needs = {"add": ("name", "value"), "insert": ("index", "value"), "replace": ("value",),
             "move": ("source", "destination"), "delete": ()}[op["type"]]
    for key in needs:
        if op.get(key) is None:
            raise Invalid(f"Operation {index} ({op['type']}): '{key}' is required")
    return op


def _part_value(part: dict[str, Any]) -> tuple[Any, str | None]:
    """(value, type suffix of value[x]) of a 'value' part; anonymous types come as nested parts."""
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5:
            return copy.deepcopy(value), key[5:]
    if "resource" in part:
        return copy.deepcopy(part["resource"]), None
    if "part" in part:
        out: dict[str, Any] = {}
        for sub in part["part"]:
            value, _ = _part_value(sub)
            name = sub.get("name")
            if name in out:
                out[name] = out[name] if isinstance(out[name], list) else [out[name]]
                out[name].append(value)
            else:
                out[name] = value
        return out, None
    raise Invalid("An operation's 'value' part has no value")


class _Patcher:
    def __init__(self, doc: dict[str, Any], defs: R4) -> None:
        self.doc = doc
        self.defs = defs

    # -- locating ---------------------------------------------------------------------------------

    def evaluate(self, expression: str) -> tuple[list[Location], list[Any]]:
        """Locations of the objects an expression selects, and the primitives it selects."""
        marked, locations = _mark(self.doc)
        try:
            results = compile_client(_KEYWORD_STEP.sub(r".`\1`", expression))(marked)
        except DuiError:  # a pattern RE2 cannot run, an expression too long: the client's, said as such
            raise
        except Exception as exc:  # fhirpathpy raises bare exceptions on syntax errors
            raise _Failed(f"cannot evaluate the path: {exc}") from None
        objects = [locations[r[MARK]] for r in results if isinstance(r, dict) and MARK in r]
        primitives = [r for r in results if not (isinstance(r, dict) and MARK in r)]
        return objects, primitives

    def locate(self, expression: str) -> list[Location]:
        objects, primitives = self.evaluate(expression)
        if primitives:
            objects.extend(self._locate_primitives(expression))
        return objects

    def _locate_primitives(self, expression: str) -> list[Location]:
        steps = split_steps(unwrap(expression))
        m = _LAST_STEP.fullmatch(steps[-1]) if len(steps) > 1 else None
        if m is None:
            raise _Failed("the path selects primitive values but does not end with an element name")
        name, index = m.group(1), m.group(2)
        containers, _ = self.evaluate(".".join(steps[:-1]))
        found: list[Location] = []
        for loc in containers:
            node = _get(self.doc, loc)
            key = _key(node, name)
            if key is None:
                continue
            value = node[key]
            if isinstance(value, list):
                positions = [int(index)] if index is not None else list(range(len(value)))
                found.extend((*loc, key, i) for i in positions if i < len(value))
            elif index in (None, "0"):
                found.append((*loc, key))
        return found

    def container(self, expression: str) -> tuple[Location, str]:
        """The single object a ``...name`` path ends in, and the name (for insert and move)."""
        steps = split_steps(unwrap(expression))
        m = _LAST_STEP.fullmatch(steps[-1]) if len(steps) > 1 else None
        if m is None or m.group(2) is not None:
            raise _Failed("the path must end with the name of a list element")
        containers, _ = self.evaluate(".".join(steps[:-1]))
        if len(containers) != 1:
            raise _Failed(f"the path must lead to exactly one element, not {len(containers)}")
        return containers[0], m.group(1)

    def element(self, location: Location, name: str) -> ElementDef | None:
        """The definition of child ``name`` of the object at ``location``."""
        path = self.doc.get("resourceType", "")
        el: ElementDef | None = None
        for key in (*location, name):
            if isinstance(key, int):
                continue
            el = _child_def(self.defs, path, key)
            if el is None:
                return None
            if el.content_ref:
                path = el.content_ref
            elif el.types in (("BackboneElement",), ("Element",)):
                path = el.path
            elif el.is_choice:
                path = key[len(el.name):] or path
            elif el.types:
                path = el.types[0]
        return el

    # -- operations -------------------------------------------------------------------------------

    def apply(self, op: dict[str, Any]) -> None:
        getattr(self, "_" + op["type"])(op)

    def _add(self, op: dict[str, Any]) -> None:
        locations = self.locate(op["path"])
        if len(locations) != 1:
            raise _Failed(f"No content found at {op['path']} when adding" if not locations
                          else f"{len(locations)} elements match {op['path']}; add needs exactly one")
        target = _get(self.doc, locations[0])
        if not isinstance(target, dict):
            raise _Failed(f"{op['path']} is not an element that can have children")
        value, suffix = op["value"]
        el = self.element(locations[0], op["name"])
        if el is None:
            raise _Failed(f"'{op['name']}' is not an element of {op['path']}")
        key = el.name + (suffix or "") if el.is_choice else op["name"]
        value = self._shape(value, el, suffix)
        if el.is_array:
            target.setdefault(key, []).append(value)
        elif key in target:
            raise _Failed(f"{op['path']}.{key} already has a value; use replace")
        else:
            target[key] = value

    def _insert(self, op: dict[str, Any]) -> None:
        loc, name = self.container(op["path"])
        target = _get(self.doc, loc)
        items = target.get(name, [])
        if not isinstance(items, list) or not 0 <= op["index"] <= len(items):
            raise _Failed(f"index {op['index']} is out of range")
        el = self.element(loc, name)
        value, suffix = op["value"]
        items.insert(op["index"], self._shape(value, el, suffix) if el else value)
        target[name] = items

    def _delete(self, op: dict[str, Any]) -> None:
        locations = self.locate(op["path"])
        if not locations:
            return  # deleting what is not there changes nothing
        if len(locations) > 1:
            raise _Failed(f"{len(locations)} elements match; delete removes exactly one")
        _remove(self.doc, locations[0])

    def _replace(self, op: dict[str, Any]) -> None:
        locations = self.locate(op["path"])
        if len(locations) != 1:
            raise _Failed(f"{len(locations)} elements match; replace needs exactly one")
        loc = locations[0]
        value, suffix = op["value"]
        parent = _get(self.doc, loc[:-1])
        last = loc[-1]
        name_loc = loc[:-1] if isinstance(last, int) else loc
        el = self.element(name_loc[:-1], str(name_loc[-1]))
        if el is not None:
            value = self._shape(value, el, suffix, single=True)
        if isinstance(last, str) and el is not None and el.is_choice and suffix:
            del parent[last]
            parent[el.name + suffix] = value
        else:
            parent[last] = value

    def _move(self, op: dict[str, Any]) -> None:
        loc, name = self.container(op["path"])
        items = _get(self.doc, loc).get(name)
        if not isinstance(items, list):
            raise _Failed(f"{op['path']} is not a list")
        source, destination = op["source"], op["destination"]
        if not (0 <= source < len(items) and 0 <= destination < len(items)):
            raise _Failed("source or destination is out of range")
        items.insert(destination, items.pop(source))

    def _shape(self, value: Any, el: ElementDef, suffix: str | None, single: bool = False) -> Any:
        """Wrap values of repeating children of an anonymous (parts-built) value into lists."""
        if not isinstance(value, dict):
            return value
        if el.content_ref:
            path = el.content_ref
        elif el.types in (("BackboneElement",), ("Element",)):
            path = el.path
        elif suffix and suffix[:1].isupper() and suffix in self.defs.types:
            path = suffix
        elif len(el.types) == 1:
            path = el.types[0]
        else:
            return value
        return _fix_arrays(self.defs, value, path)


def _fix_arrays(defs: R4, value: dict[str, Any], path: str) -> dict[str, Any]:
    for key, item in list(value.items()):
        el = _child_def(defs, path, key)
        if el is None:
            continue
        if el.is_array and not isinstance(item, list):
            item = value[key] = [item]
        child_path = el.content_ref or (el.path if el.types in (("BackboneElement",), ("Element",)) else
                                        (el.types[0] if len(el.types) == 1 else None))
        if child_path and not defs.is_primitive(child_path):
            for sub in item if isinstance(item, list) else [item]:
                if isinstance(sub, dict):
                    _fix_arrays(defs, sub, child_path)
    return value


def _child_def(defs: R4, path: str, key: str) -> ElementDef | None:
    children = defs.children(path)
    el = children.get(key)
    if el is not None:
        return el
    for candidate in children.values():
        if candidate.is_choice and key.startswith(candidate.name):
            return candidate
    return None


def _mark(doc: dict[str, Any]) -> tuple[dict[str, Any], list[Location]]:
    locations: list[Location] = []

    def walk(node: Any, loc: Location) -> Any:
        if isinstance(node, dict):
            marked = {k: walk(v, (*loc, k)) for k, v in node.items()}
            marked[MARK] = len(locations)
            locations.append(loc)
            return marked
        if isinstance(node, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(node)]
        return node

    return walk(doc, ()), locations


def _get(doc: Any, loc: Location) -> Any:
    node = doc
    for key in loc:
        node = node[key]
    return node


def _key(node: dict[str, Any], name: str) -> str | None:
    if name in node:
        return name
    for key in node:
        if key.startswith(name) and key[len(name):][:1].isupper():
            return key
    return None


def _remove(doc: dict[str, Any], loc: Location) -> None:
    """Remove the item at ``loc``, then every container left empty by it (FHIR has no empty elements)."""
    parent = _get(doc, loc[:-1])
    last = loc[-1]
    if isinstance(last, int):
        del parent[last]
    else:
        del parent[last]
        parent.pop("_" + str(last), None)
    if not parent and len(loc) > 1:
        _remove(doc, loc[:-1])
