"""The walk of one instance (or part of one) against one compiled profile.

For each object: every JSON property answers to an element of the profile (else: unknown element), each element's
cardinality holds, a choice element is given in one allowed type; sliced elements have their occurrences assigned
to slices (slicing.py) and each occurrence is checked against its slice, or against the element when in none.
For each occurrence: fixed and pattern values, binding, invariants; then its content: the element's own children
when the profile constrains them, the profiles its type names, else the base definition of its type. Extensions
are resolved by url and walked against their definition, contained and bundled resources are validated as
resources of their own (validator.py), references with target profiles have their type checked when it can be
known without fetching anything.

Locations are FHIRPath with indices: ``Patient.identifier[1].system``, ``Observation.value.ofType(Quantity)``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from fhir_profiles.bindings import check_binding
from fhir_profiles.elements import Definition, Structure, is_primitive
from fhir_profiles.invariants import Outcome, evaluate
from fhir_profiles.slicing import assign, slice_problems
from fhir_profiles.values import Item, contains_pattern, items_of, matches_fixed

if TYPE_CHECKING:
    from fhir_profiles.validator import Run

__all__ = ["Walk"]

_RELATIVE_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?")
_INDEX = re.compile(r"\[\d+\]")
_OF_TYPE = re.compile(r"\.ofType\([A-Za-z]+\)")
_RESOURCE_TYPES = ("Resource", "DomainResource")
_SHOWN = 120


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class Walk:
    """One profile applied to one resource (and what it contains)."""

    def __init__(self, run: Run, structure: Structure, resource: dict[str, Any], root: dict[str, Any],
                 resource_loc: str) -> None:
        self.run = run
        self.structure = structure
        self.resource = resource
        self.root = root
        self.resource_loc = resource_loc

    def add(self, severity: str, code: str, location: str, message: str) -> None:
        self.run.add(severity, code, location, f"{self.structure.name}: {message}", self.structure.url)

    def whole(self, value: Any, loc: str, type_code: str | None) -> None:
        """The value against the whole profile: its root's invariants, then its content."""
        self._invariants(self.structure.root, Item(value, None, None, None), loc, type_code)
        self.object(self.structure.root, value, loc, type_code)

    def holder(self, definition: Definition, type_code: str | None) -> Definition | None:
        """The definition whose children apply to an object of ``definition``."""
        if definition.children:
            return definition
        if definition.content_reference:
            return self.structure.by_id.get(definition.content_reference.partition("#")[2])
        return self.run.children_of(definition, type_code)

    def object(self, definition: Definition, obj: Any, loc: str, type_code: str | None) -> None:
        holder = self.holder(definition, type_code)
        if holder is None:
            return
        if not isinstance(obj, dict):
            self.add("error", "structure", loc, f"{definition.id}: an object is expected, found {_shown(obj)}")
            return
        keys: dict[int, set[str]] = {}
        for key in obj:
            name = key[1:] if key.startswith("_") else key
            found = holder.child_for_key(name)
            if found is None:
                if not (key == "resourceType" and loc == self.resource_loc):
                    self.add("error", "structure", f"{loc}.{name}",
                             f"unknown element {name!r} in {holder.id} (not in the definition)")
                continue
            keys.setdefault(id(found[0]), set()).add(name)
        for child in holder.children:
            self._element(child, obj, loc, sorted(keys.get(id(child), ())), type_code)

    def _element(self, child: Definition, obj: dict[str, Any], loc: str, names: list[str],
                 parent_type: str | None) -> None:
        type_code = child.types[0].code if len(child.types) == 1 else None
        if child.choice:
            if len(names) > 1:
                self.add("error", "structure", loc, f"{child.id}: one type only, found {', '.join(names)}")
            items: list[Item] = []
            for name in names:
                suffix = name[len(child.name):]
                type_code = child.type_for_suffix(suffix)
                if type_code is None:
                    self.add("error", "structure", f"{loc}.{child.name}.ofType({suffix})",
                             f"{child.id}: type {suffix} is not allowed (allowed: {', '.join(child.type_codes())})")
                    return
                items.extend(items_of(obj, name, type_code))
            label = f"{loc}.{child.name}.ofType({type_code[:1].upper()}{type_code[1:]})" if type_code else loc
        else:
            items = items_of(obj, child.name, type_code) if names else []
            label = f"{loc}.{child.name}"
        if len(items) < child.min:
            self.add("error", "required", loc,
                     f"{child.id}: minimum cardinality {child.min}, found {len(items)}")
        if child.max is not None and len(items) > child.max:
            self.add("error", "structure", label,
                     f"{child.id}: maximum cardinality {child.max}, found {len(items)}")
        targets: list[Definition | None] = [None] * len(items)
        if child.slicing is not None and child.slices:
            targets = assign(self.run, child, items)
            for problem in slice_problems(child, items, targets):
                where = label if problem.index is None else f"{label}[{problem.index}]"
                self.add(problem.severity, problem.code, where, problem.message)
        for item, target in zip(items, targets, strict=True):
            where = label if item.index is None else f"{label}[{item.index}]"
            self.item(target or child, item, where, type_code, parent_type)

    def item(self, definition: Definition, item: Item, loc: str, type_code: str | None,
             parent_type: str | None) -> None:
        value = item.value
        if definition.fixed is not None and not matches_fixed(value, definition.fixed):
            self.add("error", "value", loc, f"{definition.id}: {definition.fixed_key} {_shown(definition.fixed)} "
                     f"expected, found {_shown(value)}")
        if definition.pattern is not None and not contains_pattern(value, definition.pattern):
            self.add("error", "value", loc, f"{definition.id}: value must match {definition.pattern_key} "
                     f"{_shown(definition.pattern)}, found {_shown(value)}")
        if definition.binding and value is not None and type_code:
            strength, value_set = definition.binding
            result = check_binding(self.run.terminology, strength, value_set, type_code, value, definition.id)
            if result is not None:
                self.add(result.severity, result.code, loc, result.message)
        self._invariants(definition, item, loc, type_code)
        if (type_code is not None and is_primitive(type_code)) or not isinstance(value, dict):
            if item.extra is not None:
                for index, extension in enumerate(item.extra.get("extension", ())):
                    self.extension(None, extension, f"{loc}.extension[{index}]", loc, type_code, False)
            return
        if type_code in _RESOURCE_TYPES or "resourceType" in value:
            self.run.resource(value, loc, self.root if definition.name == "contained" else value)
            return
        if type_code == "Extension":
            self.extension(definition, value, loc, loc.rsplit(".", 1)[0], parent_type,
                           definition.name == "modifierExtension")
            return
        if type_code == "Reference":
            self._reference(definition, value, loc)
        profiles = [p for t in definition.types if t.code == type_code for p in t.profiles]
        constrained = bool(definition.children or definition.content_reference)
        if constrained or not profiles:
            self.object(definition, value, loc, type_code)
        for url in profiles:
            structure = self.run.structure(url, loc)
            if structure is not None:
                Walk(self.run, structure, self.resource, self.root, self.resource_loc).whole(value, loc, type_code)

    def _invariants(self, definition: Definition, item: Item, loc: str, type_code: str | None) -> None:
        if not definition.constraints:
            return
        path = definition.path
        if definition.choice and type_code:
            # a primitive of a choice is typed by its type's name: fhirpathpy's model does not type the renamed
            # element (``Observation.effectiveDateTime``), and ``$this as dateTime`` (vs-1) would be empty
            path = type_code if type_code[:1].islower() else path[:-3] + type_code[:1].upper() + type_code[1:]
        for constraint in definition.constraints:
            outcome, reason = evaluate(constraint, item.value, item.extra, path, self.resource, self.root)
            if outcome is Outcome.FAILS:
                self.add(constraint.severity, "invariant", loc, f"{definition.id}: constraint {constraint.key} failed: "
                         f"{constraint.human or constraint.expression}")
            elif outcome is Outcome.NOT_RUN:
                self.run.not_run(constraint.key, constraint.expression, loc, reason)

    def _host_path(self, host_loc: str) -> str:
        relative = host_loc[len(self.resource_loc):]
        return str(self.resource.get("resourceType", "")) + _OF_TYPE.sub("", _INDEX.sub("", relative))

    def extension(self, definition: Definition | None, value: Any, loc: str, host_loc: str,
                  host_type: str | None, modifier: bool) -> None:
        """An extension: against the element it sits in (a slice, when constrained) and its own definition."""
        if definition is not None and definition.children:
            self.object(definition, value, loc, "Extension")
        url = value.get("url") if isinstance(value, dict) else None
        structure = None
        if isinstance(url, str) and (":" in url):
            structure = self.run.structure(url, None)
            if structure is None:
                if modifier:
                    self.add("error", "extension", loc,
                             f"modifier extension {url} is not known here: the resource cannot be safely processed")
                else:
                    self.add("warning", "extension", loc, f"extension {url} is not known here, not checked")
            else:
                self._extension_use(structure, loc, host_loc, host_type, modifier)
        if structure is None:
            if definition is None or not definition.children:
                base = self.run.structure("Extension", None)
                if base is not None:
                    Walk(self.run, base, self.resource, self.root, self.resource_loc).whole(value, loc, "Extension")
            return
        Walk(self.run, structure, self.resource, self.root, self.resource_loc).whole(value, loc, "Extension")

    def _extension_use(self, structure: Structure, loc: str, host_loc: str, host_type: str | None,
                       modifier: bool) -> None:
        host_path = self._host_path(host_loc)
        if structure.root.is_modifier != modifier:
            kind = "a modifier extension" if structure.root.is_modifier else "not a modifier extension"
            self.add("error", "extension", loc, f"extension {structure.url} is {kind}; found in "
                     f"{'modifierExtension' if modifier else 'extension'}")
        if not structure.contexts or any(_context_allows(kind, expression, host_path, host_type)
                                         for kind, expression in structure.contexts):
            return
        allowed = ", ".join(expression for _, expression in structure.contexts)
        self.add("error", "extension", loc,
                 f"extension {structure.url} is not allowed on {host_path} (contexts of use: {allowed})")

    def _reference(self, definition: Definition, value: dict[str, Any], loc: str) -> None:
        targets = [p for t in definition.types if t.code == "Reference" for p in t.target_profiles]
        reference = value.get("reference")
        if not targets or not isinstance(reference, str):
            return
        found = self.run.bundle_type(reference)
        if found is None:
            match = _RELATIVE_REFERENCE.fullmatch(reference)
            found = match.group(1) if match else None
        if found is None and reference.startswith("#"):
            found = next((str(c.get("resourceType")) for c in self.resource.get("contained", ())
                          if isinstance(c, dict) and c.get("id") == reference[1:]), None)
        if found is None:
            return
        allowed = {self.run.profile_type(url) for url in targets} - {None}
        if allowed and found not in allowed and not allowed & set(_RESOURCE_TYPES):
            self.add("error", "value", loc, f"{definition.id}: reference to a {found}, "
                     f"expected {' or '.join(sorted(str(a) for a in allowed))}")


def _context_allows(kind: str, expression: str, host_path: str, host_type: str | None) -> bool:
    """Extension contexts of use (R4 StructureDefinition.context), for the element kind and FHIRPath ones."""
    if kind != "element":
        return True  # "extension" and "fhirpath" contexts are not checked here
    if expression in ("Element", "Base") or expression in (host_path, host_type):
        return True
    if "." not in host_path and expression in _RESOURCE_TYPES:
        return True
    return host_type == "BackboneElement" and expression == "BackboneElement"
