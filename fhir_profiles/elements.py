"""A snapshot compiled for validation: a tree of element definitions, with JSON property names resolved.

Built once per profile (the validator caches it) from the snapshot elements: each ``Definition`` holds the facts
the validator checks (cardinality, types, fixed and pattern values, binding, invariants, slicing) and its
children, keyed by their JSON name; a choice element ``value[x]`` answers for ``valueQuantity`` and
``valueString`` (elementdefinition.html, "Choice types").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Constraint", "Definition", "Slicing", "Structure", "TypeRef", "compile_structure", "is_primitive"]

# Types whose JSON form is a scalar (plus the FHIRPath system types of ``id``/``url``/``value`` elements).
_PRIMITIVES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant", "integer",
    "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid", "xhtml",
})
_FHIRPATH_TYPES = "http://hl7.org/fhirpath/System."


def is_primitive(code: str) -> bool:
    return code in _PRIMITIVES or code.startswith(_FHIRPATH_TYPES)


@dataclass(frozen=True)
class TypeRef:
    code: str
    profiles: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()


BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str  # error | warning | information (a best-practice "should", such as dom-6)
    expression: str
    human: str


@dataclass(frozen=True)
class Slicing:
    discriminators: tuple[tuple[str, str], ...]  # (type, path)
    ordered: bool
    rules: str  # closed | open | openAtEnd


@dataclass(eq=False)
class Definition:
    id: str
    path: str
    name: str  # the JSON name: "identifier"; for a choice "value[x]", the prefix "value"
    choice: bool
    min: int
    max: int | None  # None: unbounded
    types: tuple[TypeRef, ...]
    slice_name: str | None = None
    fixed: Any = None
    fixed_key: str | None = None  # "fixedUri"...
    pattern: Any = None
    pattern_key: str | None = None
    binding: tuple[str, str] | None = None  # (strength, value set)
    constraints: tuple[Constraint, ...] = ()
    content_reference: str | None = None
    is_modifier: bool = False
    slicing: Slicing | None = None
    children: list[Definition] = field(default_factory=list)
    slices: list[Definition] = field(default_factory=list)
    _by_name: dict[str, Definition] = field(default_factory=dict)
    _choices: list[Definition] = field(default_factory=list)

    def add_child(self, child: Definition) -> None:
        self.children.append(child)
        if child.choice:
            self._choices.append(child)
        else:
            self._by_name[child.name] = child

    def child(self, name: str) -> Definition | None:
        """The child of JSON name ``name`` (not choice-resolved)."""
        found = self._by_name.get(name)
        if found is None:
            found = next((c for c in self._choices if c.name == name), None)
        return found

    def child_for_key(self, key: str) -> tuple[Definition, str | None] | None:
        """The child a JSON property answers to, and for a choice the type suffix (``valueQuantity`` -> Quantity)."""
        found = self._by_name.get(key)
        if found is not None:
            return found, None
        for choice in self._choices:
            suffix = key[len(choice.name):]
            if key.startswith(choice.name) and suffix[:1].isupper():
                return choice, suffix
        return None

    def type_for_suffix(self, suffix: str) -> str | None:
        """The type code of a choice suffix (``String`` -> ``string``), if the element allows it."""
        return next((t.code for t in self.types if t.code[:1].upper() + t.code[1:] == suffix), None)

    def type_codes(self) -> list[str]:
        return [t.code for t in self.types]


@dataclass(eq=False)
class Structure:
    """One compiled StructureDefinition."""

    url: str
    name: str  # the id, for messages
    type: str
    kind: str
    root: Definition
    by_id: dict[str, Definition]
    contexts: tuple[tuple[str, str], ...] = ()  # extension contexts of use: (type, expression)


def _max(value: Any) -> int | None:
    return None if value in (None, "*") else int(value)


def _choice_value(element: Mapping[str, Any], prefix: str) -> tuple[str | None, Any]:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix):][:1].isupper():
            return key, value
    return None, None


def _definition(element: Mapping[str, Any]) -> Definition:
    path = str(element["path"])
    last = path.rsplit(".", 1)[-1]
    choice = last.endswith("[x]")
    fixed_key, fixed = _choice_value(element, "fixed")
    pattern_key, pattern = _choice_value(element, "pattern")
    binding = element.get("binding") or {}
    slicing = element.get("slicing")
    return Definition(
        id=str(element.get("id") or path),
        path=path,
        name=last[:-3] if choice else last,
        choice=choice,
        min=int(element.get("min", 0)),
        max=_max(element.get("max")),
        types=tuple(
            TypeRef(str(t.get("code")), tuple(t.get("profile", ())), tuple(t.get("targetProfile", ())))
            for t in element.get("type", ())
        ),
        slice_name=element.get("sliceName"),
        fixed=fixed,
        fixed_key=fixed_key,
        pattern=pattern,
        pattern_key=pattern_key,
        binding=(str(binding["strength"]), str(binding["valueSet"]))
        if binding.get("strength") and binding.get("valueSet") else None,
        constraints=tuple(
            Constraint(str(c.get("key")), _severity(c), str(c["expression"]), str(c.get("human", "")))
            for c in element.get("constraint", ())
            if c.get("expression")
        ),
        content_reference=element.get("contentReference"),
        is_modifier=bool(element.get("isModifier")),
        slicing=Slicing(
            tuple((str(d.get("type")), str(d.get("path"))) for d in slicing.get("discriminator", ())),
            bool(slicing.get("ordered", False)),
            str(slicing.get("rules", "open")),
        ) if slicing else None,
    )


def compile_structure(sd: Mapping[str, Any], elements: Iterable[Mapping[str, Any]]) -> Structure:
    """The tree of ``elements`` (a snapshot of ``sd``)."""
    by_id: dict[str, Definition] = {}
    root: Definition | None = None
    for element in elements:
        definition = _definition(element)
        by_id[definition.id] = definition
        if root is None:
            root = definition
            continue
        parent_id, _, segment = definition.id.rpartition(".")
        name, _, slice_name = segment.partition(":")
        if slice_name:
            host_id = f"{parent_id}.{name}" + (f":{slice_name.rsplit('/', 1)[0]}" if "/" in slice_name else "")
            host = by_id.get(host_id)
            if host is not None:
                host.slices.append(definition)
        else:
            parent = by_id.get(parent_id)
            if parent is not None:
                parent.add_child(definition)
    if root is None:
        raise ValueError(f"{sd.get('url')}: no snapshot elements")
    contexts = tuple((str(c.get("type")), str(c.get("expression"))) for c in sd.get("context", ()))
    return Structure(
        url=str(sd.get("url", "")),
        name=str(sd.get("id") or sd.get("name") or sd.get("url")),
        type=str(sd.get("type")),
        kind=str(sd.get("kind", "")),
        root=root,
        by_id=by_id,
        contexts=contexts,
    )


def _severity(constraint: dict[str, Any]) -> str:
    """A best-practice constraint is advice (information), never a warning on every resource."""
    if any(x.get("url") == BEST_PRACTICE and x.get("valueBoolean") is True for x in constraint.get("extension", ())):
        return "information"
    return "error" if constraint.get("severity", "error") == "error" else "warning"
