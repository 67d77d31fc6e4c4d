"""Snapshot generation: the full element list of a profile, from its differential and its base's snapshot.

FHIR R4, profiling.html ("Differentials and snapshots") and elementdefinition.html ("Element ids"). The base's
snapshot (generated first when the base itself carries only a differential) becomes a tree of elements: each
node has its children and its slices. Each differential element is then found in that tree by its id, and merged
into it:

- a child of a complex type (``Patient.identifier.system``) expands that type's elements under the path, from the
  profile named in ``type.profile`` (extensions, datatype profiles) or else from the base type's definition; an
  element with a ``contentReference`` expands the children of the element it refers to;
- a slice (``Patient.identifier:NSS``, reslice ``extension:a/b``) starts as a copy of the sliced element as the
  base defines it (not as this differential changes it), with the base's children when it has some;
- a choice element restricted to one type may be named in the path form (``Observation.valueQuantity``): it is
  the ``value[x]`` element, restricted to Quantity; a type slice (``value[x]:valueQuantity``) keeps the types
  that its name allows.

Merging: a property given in the differential replaces the inherited one, except invariants (added, or replaced
by key), mappings and conditions (added), and binding and slicing (merged key by key, so a differential that only
tightens the strength keeps the value set).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fhir_profiles.context import Context

__all__ = ["SnapshotError", "generate_snapshot", "snapshot_elements"]

_APPENDED = ("mapping", "condition", "alias", "code")
_EXTENSION_SLICING = {"discriminator": [{"type": "value", "path": "url"}], "ordered": False, "rules": "open"}
_TYPE_SLICING = {"discriminator": [{"type": "type", "path": "$this"}], "ordered": False, "rules": "open"}


class SnapshotError(ValueError):
    """A snapshot that cannot be generated; the message names the profile and the element or base at fault."""


@dataclass
class _Node:
    element: dict[str, Any]
    children: list[_Node] = field(default_factory=list)
    slices: list[_Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The last path segment (``identifier``, ``value[x]``)."""
        return str(self.element["path"]).rsplit(".", 1)[-1]

    def child(self, name: str) -> _Node | None:
        return next((c for c in self.children if c.name == name), None)

    def slice(self, name: str) -> _Node | None:
        return next((s for s in self.slices if s.element.get("sliceName") == name), None)


def generate_snapshot(sd: Mapping[str, Any], context: Context) -> list[dict[str, Any]]:
    """The snapshot elements of ``sd``, generated from its differential (any snapshot it carries is ignored)."""
    return _Generator(context).generate(sd, ())


def snapshot_elements(sd: Mapping[str, Any], context: Context) -> list[dict[str, Any]]:
    """The snapshot of ``sd``: the one it carries, or one generated from its differential. Do not modify it."""
    return _Generator(context).snapshot_of(sd, ())


def _label(sd: Mapping[str, Any]) -> str:
    return str(sd.get("url") or sd.get("id") or "a StructureDefinition without url")


def _split_id(element_id: str) -> list[tuple[str, str | None]]:
    """``Patient.identifier:NSS.system`` -> [("Patient", None), ("identifier", "NSS"), ("system", None)]."""
    out: list[tuple[str, str | None]] = []
    for segment in element_id.split("."):
        name, _, slice_name = segment.partition(":")
        out.append((name, slice_name or None))
    return out


def _element_id(element: Mapping[str, Any]) -> str:
    if "id" in element:
        return str(element["id"])
    path = str(element.get("path", ""))
    return f"{path}:{element['sliceName']}" if element.get("sliceName") else path


def _tree(elements: list[dict[str, Any]], label: str, *, copy_elements: bool) -> _Node:
    """The tree of a snapshot's elements (copies of them when ``copy_elements``)."""
    if not elements:
        raise SnapshotError(f"{label}: the snapshot has no elements")
    index: dict[str, _Node] = {}
    root: _Node | None = None
    for element in elements:
        node = _Node(copy.deepcopy(element) if copy_elements else element)
        element_id = _element_id(element)
        index[element_id] = node
        if root is None:
            root = node
            continue
        parent_id, _, segment = element_id.rpartition(".")
        name, _, slice_name = segment.partition(":")
        if slice_name:
            host_id = f"{parent_id}.{name}" + (f":{slice_name.rsplit('/', 1)[0]}" if "/" in slice_name else "")
            host = index.get(host_id)
            if host is None:
                raise SnapshotError(f"{label}: slice {element_id} comes before the element it slices")
            host.slices.append(node)
        else:
            parent = index.get(parent_id)
            if parent is None:
                raise SnapshotError(f"{label}: element {element_id} comes before its parent")
            parent.children.append(node)
    assert root is not None
    return root


def _rebased(node: _Node, old_id: str, new_id: str, old_path: str, new_path: str) -> _Node:
    """A deep copy of ``node`` with ids and paths moved from under ``old_*`` to under ``new_*``."""
    element = copy.deepcopy(node.element)
    element["id"] = new_id + _element_id(node.element)[len(old_id):]
    element["path"] = new_path + str(node.element["path"])[len(old_path):]
    return _Node(
        element,
        [_rebased(c, old_id, new_id, old_path, new_path) for c in node.children],
        [_rebased(s, old_id, new_id, old_path, new_path) for s in node.slices],
    )


def _type_codes(element: Mapping[str, Any]) -> list[str]:
    return [str(t.get("code")) for t in element.get("type", [])]


def _choice_type(choice: _Node, name: str) -> str | None:
    """The type that ``name`` (``valueQuantity``) selects on the choice node ``value[x]``, if it does."""
    prefix = choice.name[:-3]
    if not choice.name.endswith("[x]") or not name.startswith(prefix) or len(name) == len(prefix):
        return None
    suffix = name[len(prefix):]
    return next((code for code in _type_codes(choice.element) if code[:1].upper() + code[1:] == suffix), None)


def _merge(target: dict[str, Any], diff: Mapping[str, Any]) -> None:
    """Apply one differential element to the inherited element ``target``."""
    for key, value in diff.items():
        if key in ("id", "path"):
            continue
        if key == "constraint":
            constraints = {c.get("key"): c for c in target.get("constraint", [])}
            for constraint in value:
                constraints[constraint.get("key")] = copy.deepcopy(constraint)
            target["constraint"] = list(constraints.values())
        elif key in _APPENDED:
            items = list(target.get(key, []))
            items.extend(copy.deepcopy(v) for v in value if v not in items)
            target[key] = items
        elif key in ("binding", "slicing"):
            target[key] = {**target.get(key, {}), **copy.deepcopy(value)}
        elif key.startswith(("fixed", "pattern")):
            for old in [k for k in target if k.startswith(("fixed", "pattern"))]:
                del target[old]
            target[key] = copy.deepcopy(value)
        else:
            target[key] = copy.deepcopy(value)


class _Generator:
    def __init__(self, context: Context) -> None:
        self._context = context
        self._generated: dict[str, list[dict[str, Any]]] = {}

    def snapshot_of(self, sd: Mapping[str, Any], chain: tuple[str, ...]) -> list[dict[str, Any]]:
        elements = sd.get("snapshot", {}).get("element")
        if elements:
            return list(elements)
        label = _label(sd)
        if label not in self._generated:
            self._generated[label] = self.generate(sd, chain)
        return self._generated[label]

    def generate(self, sd: Mapping[str, Any], chain: tuple[str, ...]) -> list[dict[str, Any]]:
        label = _label(sd)
        if label in chain:
            raise SnapshotError(f"{label}: its baseDefinition chain comes back to it ({' -> '.join(chain)})")
        base_url = sd.get("baseDefinition")
        if not isinstance(base_url, str):
            raise SnapshotError(f"{label}: no snapshot and no baseDefinition to generate one from")
        base = self._context.structure_definition(base_url)
        if base is None:
            raise SnapshotError(f"{label}: base {base_url} not found")
        return _Build(self, sd, self.snapshot_of(base, (*chain, label)), (*chain, label)).run()

    def type_snapshot(self, url: str, owner: str, element_id: str, chain: tuple[str, ...]) -> list[dict[str, Any]]:
        sd = self._context.structure_definition(url)
        if sd is None:
            raise SnapshotError(f"{owner}: {element_id} needs the definition of {url}, not found")
        return self.snapshot_of(sd, chain)


class _Build:
    """One differential applied to a copy of its base's snapshot tree."""

    def __init__(self, generator: _Generator, sd: Mapping[str, Any], base: list[dict[str, Any]],
                 chain: tuple[str, ...]) -> None:
        self.generator = generator
        self.sd = sd
        self.label = _label(sd)
        self.chain = chain
        self.pristine: dict[str, _Node] = {}
        self._index(_tree(base, self.label, copy_elements=False))
        self.root = _tree(base, self.label, copy_elements=True)

    def _index(self, node: _Node) -> None:
        self.pristine[_element_id(node.element)] = node
        for sub in (*node.children, *node.slices):
            self._index(sub)

    def run(self) -> list[dict[str, Any]]:
        for diff in self.sd.get("differential", {}).get("element", []):
            self._apply(diff)
        out: list[dict[str, Any]] = []
        self._flatten(self.root, out)
        return out

    def _flatten(self, node: _Node, out: list[dict[str, Any]]) -> None:
        out.append(node.element)
        for sub in (*node.children, *node.slices):
            self._flatten(sub, out)

    def _apply(self, diff: Mapping[str, Any]) -> None:
        diff_id = _element_id(diff)
        segments = _split_id(diff_id)
        if segments[0][0] != self.root.name or segments[0][1]:
            raise SnapshotError(f"{self.label}: differential element {diff_id} is not under {self.root.name}")
        node, restricted = self.root, None
        for position, (name, slice_name) in enumerate(segments[1:], start=2):
            last = position == len(segments)
            node, restricted = self._child(node, name, diff_id, restricted)
            if slice_name:
                node = self._slice(node, slice_name, diff_id, create=last)
                restricted = None
        _merge(node.element, diff)
        if restricted and "type" not in diff:
            node.element["type"] = [t for t in node.element.get("type", []) if t.get("code") == restricted]

    def _child(self, node: _Node, name: str, diff_id: str, restricted: str | None) -> tuple[_Node, str | None]:
        """The child ``name`` of ``node`` (expanding its type if needed), and the type a choice rename selects."""
        if not node.children:
            self._expand(node, diff_id, restricted)
        found = node.child(name)
        if found is not None:
            return found, None
        for choice in node.children:
            selected = _choice_type(choice, name)
            if selected is not None:
                return choice, selected
        raise SnapshotError(f"{self.label}: {diff_id}: {node.element['id']} has no element {name}")

    def _slice(self, host: _Node, slice_name: str, diff_id: str, *, create: bool) -> _Node:
        parts = slice_name.split("/")
        for depth in range(1, len(parts) + 1):
            name = "/".join(parts[:depth])
            found = host.slice(name)
            if found is None:
                if not (create and depth == len(parts)):
                    raise SnapshotError(f"{self.label}: {diff_id}: no slice {name} on {host.element['id']}")
                found = self._new_slice(host, name)
            host = found
        return host

    def _new_slice(self, host: _Node, name: str) -> _Node:
        host_id = _element_id(host.element)
        if "slicing" not in host.element and not host.element.get("sliceName"):
            if host.name in ("extension", "modifierExtension"):
                host.element["slicing"] = copy.deepcopy(_EXTENSION_SLICING)
            elif host.name.endswith("[x]"):
                host.element["slicing"] = copy.deepcopy(_TYPE_SLICING)
            else:
                raise SnapshotError(f"{self.label}: slice {name} of {host_id}, which has no slicing")
        unsliced_id = host_id.rsplit(".", 1)[0] + "." + host.name if "." in host_id else host.name
        slice_id = f"{unsliced_id}:{name}"
        origin = self.pristine.get(host_id)
        if origin is not None:
            # The base's children come along for a backbone element; a datatype's are expanded afresh from the
            # type when the differential reaches into the slice, as the IG publisher does.
            backbone = set(_type_codes(origin.element)) <= {"BackboneElement", "Element"}
            node = _rebased(_Node(origin.element, origin.children if backbone else []), host_id, slice_id, "", "")
        else:
            node = _Node(copy.deepcopy(host.element))
            node.element["id"] = slice_id
        node.element.pop("slicing", None)
        node.element["sliceName"] = name
        selected = _choice_type(host, name) if host.name.endswith("[x]") else None
        if selected:
            node.element["type"] = [t for t in node.element.get("type", []) if t.get("code") == selected]
        host.slices.append(node)
        return node

    def _expand(self, node: _Node, diff_id: str, restricted: str | None) -> None:
        """Give ``node`` the children of its type (or of the element its contentReference names)."""
        element = node.element
        node_id, node_path = _element_id(element), str(element["path"])
        reference = element.get("contentReference")
        if isinstance(reference, str):
            target = self.pristine.get(reference.partition("#")[2])
            if target is None:
                raise SnapshotError(f"{self.label}: {diff_id}: contentReference {reference} not found")
            old_id, old_path = _element_id(target.element), str(target.element["path"])
            node.children = [_rebased(c, old_id, node_id, old_path, node_path) for c in target.children]
            return
        types = [t for t in element.get("type", []) if restricted is None or t.get("code") == restricted]
        if len({t.get("code") for t in types}) != 1:
            raise SnapshotError(
                f"{self.label}: {diff_id}: cannot constrain inside {node_id}, "
                f"which has {len(types)} types ({', '.join(_type_codes(element)) or 'none'})"
            )
        profiles = [p for t in types for p in t.get("profile", [])]
        url = profiles[0] if len(profiles) == 1 else str(types[0]["code"])
        elements = self.generator.type_snapshot(url, self.label, diff_id, self.chain)
        root = _tree(elements, url, copy_elements=False)
        old_id, old_path = _element_id(root.element), str(root.element["path"])
        node.children = [_rebased(c, old_id, node_id, old_path, node_path) for c in root.children]
