"""Slicing: each occurrence of a sliced element assigned to its slice, and the slicing rules checked.

profiling.html, "Slicing" and "Discriminator": an occurrence belongs to the first slice whose discriminators all
match it (then, for a resliced slice, to its reslice the same way):

- ``value`` / ``pattern``: the value at the discriminator path equals the slice's fixed value there, or contains its
  pattern (a required binding there also decides, by value-set membership);
- ``exists``: the slice requires (min >= 1) or forbids (max = 0) a value at the path;
- ``type``: the value's type is one the slice allows;
- ``profile``: the value conforms to a profile the slice names.

Paths are the restricted FHIRPath of discriminators: element names, ``$this``, ``extension('url')`` and
``ofType(Type)``; ``resolve()`` cannot be followed here, so such a discriminator matches nothing. Then the rules:
per-slice cardinality, ``closed`` (every occurrence in a slice), ``openAtEnd`` (the others after them all) and
``ordered`` (occurrences in the order of the slices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fhir_profiles.elements import Definition
from fhir_profiles.values import Item, contains_pattern, matches_fixed, step_values

__all__ = ["SliceProblem", "Slices", "assign", "definitions_at", "slice_problems"]


class Slices(Protocol):
    """What slicing needs from the validator."""

    def children_of(self, definition: Definition, type_code: str | None = None) -> Definition | None: ...

    def conforms(self, value: Any, profile: str) -> bool: ...

    def member(self, value_set: str, type_code: str, value: Any) -> bool: ...


@dataclass(frozen=True)
class SliceProblem:
    severity: str
    code: str
    index: int | None  # the occurrence at fault, None for the element as a whole
    message: str


def _steps(path: str) -> list[str]:
    steps, depth, quote, current = [], 0, False, ""
    for ch in path:
        if ch == "'":
            quote = not quote
        elif not quote and ch in "()":
            depth += 1 if ch == "(" else -1
        if ch == "." and depth == 0 and not quote:
            steps.append(current.strip())
            current = ""
        else:
            current += ch
    steps.append(current.strip())
    return [s for s in steps if s and s != "$this"]


def _argument(step: str) -> str:
    return step[step.index("(") + 1:-1].strip().strip("'\"")


def _with_slices(definition: Definition) -> list[Definition]:
    out = [definition]
    for sliced in definition.slices:
        out.extend(_with_slices(sliced))
    return out


def definitions_at(slices: Slices, definition: Definition, path: str) -> list[Definition]:
    """The element definitions a discriminator path reaches from ``definition`` (a slice): the element first,
    then its slices (a path through a sliced element, ``code.coding.code``, finds fixed values in the slices)."""
    current = [definition]
    for step in _steps(path):
        if step == "resolve()":
            return []
        if step.startswith("ofType("):
            continue
        reached: list[Definition] = []
        for candidate in current:
            holder = candidate if candidate.children else slices.children_of(candidate)
            if holder is None:
                continue
            if step.startswith("extension("):
                url = _argument(step)
                extension = holder.child("extension")
                reached.extend(s for s in (extension.slices if extension else [])
                               if any(url in t.profiles for t in s.types))
            else:
                child = holder.child(step[:-3] if step.endswith("[x]") else step)
                if child is not None:
                    reached.extend(_with_slices(child))
        current = reached
    return current


def _values(item: Item, path: str) -> list[tuple[Any, str | None]]:
    current: list[tuple[Any, str | None]] = [(item.value, item.type_code)]
    for step in _steps(path):
        if step == "resolve()":
            return []
        if step.startswith("ofType("):
            wanted = _argument(step)
            current = [(v, t) for v, t in current
                       if t == wanted or (isinstance(v, dict) and v.get("resourceType") == wanted)]
            continue
        current = [found for value, _ in current for found in step_values(value, step)]
    return current


def _type_of(value: Any, type_code: str | None) -> str | None:
    if isinstance(value, dict) and "resourceType" in value:
        return str(value["resourceType"])
    return type_code


def _matches(slices: Slices, candidate: Definition, item: Item, kind: str, path: str) -> bool:
    targets = definitions_at(slices, candidate, path)
    if not targets:
        return False
    values = _values(item, path)
    if kind in ("value", "pattern"):
        decided = False
        for target in targets:
            if target.fixed is not None:
                decided = True
                if any(matches_fixed(v, target.fixed) for v, _ in values):
                    return True
            elif target.pattern is not None:
                decided = True
                if any(contains_pattern(v, target.pattern) for v, _ in values):
                    return True
            elif not decided and target.binding and target.binding[0] == "required" and len(target.types) == 1:
                return any(slices.member(target.binding[1], target.types[0].code, v) for v, _ in values)
        return False
    target = targets[0]
    if kind == "exists":
        if target.max == 0:
            return not values
        return bool(values) if target.min >= 1 else True
    if kind == "type":
        allowed = {t.code for t in target.types}
        return any(_type_of(v, t) in allowed for v, t in values)
    if kind == "profile":
        profiles = [p for t in target.types for p in t.profiles]
        return any(slices.conforms(v, p) for v, _ in values for p in profiles)
    return False


def _slice_for(slices: Slices, definition: Definition, item: Item) -> Definition | None:
    if definition.slicing is None:
        return None
    for candidate in definition.slices:
        if all(_matches(slices, candidate, item, kind, path) for kind, path in definition.slicing.discriminators):
            deeper = _slice_for(slices, candidate, item) if candidate.slices else None
            return deeper or candidate
    return None


def assign(slices: Slices, definition: Definition, items: Sequence[Item]) -> list[Definition | None]:
    """The slice of each occurrence (None: in no slice)."""
    return [_slice_for(slices, definition, item) for item in items]


def _all_slices(definition: Definition) -> list[Definition]:
    out: list[Definition] = []
    for sliced in definition.slices:
        out.append(sliced)
        out.extend(_all_slices(sliced))
    return out


def slice_problems(definition: Definition, items: Sequence[Item],
                   assigned: Sequence[Definition | None]) -> list[SliceProblem]:
    """Per-slice cardinality and the slicing rules (closed, openAtEnd, ordered)."""
    problems: list[SliceProblem] = []
    slicing = definition.slicing
    names = [a.slice_name or "" if a else None for a in assigned]
    for sliced in _all_slices(definition):
        own = sliced.slice_name or ""
        count = sum(1 for n in names if n is not None and (n == own or n.startswith(own + "/")))
        if count < sliced.min:
            problems.append(SliceProblem(
                "error", "required", None,
                f"slice {sliced.id} needs at least {sliced.min} occurrence(s), found {count}"))
        if sliced.max is not None and count > sliced.max:
            problems.append(SliceProblem(
                "error", "structure", None,
                f"slice {sliced.id} allows at most {sliced.max} occurrence(s), found {count}"))
    if slicing is None:
        return problems
    order = [s.slice_name or "" for s in definition.slices]
    last_slice, seen_unsliced = -1, False
    for position, (item, name) in enumerate(zip(items, names, strict=True)):
        index = item.index if item.index is not None else position
        if name is None:
            seen_unsliced = True
            if slicing.rules == "closed":
                problems.append(SliceProblem(
                    "error", "structure", index,
                    f"{definition.id} is sliced (closed) and this occurrence matches none of its slices "
                    f"({', '.join(order)})"))
            continue
        if slicing.rules == "openAtEnd" and seen_unsliced:
            problems.append(SliceProblem(
                "error", "structure", index,
                f"{definition.id} is sliced openAtEnd: occurrence in slice {name} after one in no slice"))
        top = order.index(name.split("/")[0]) if name.split("/")[0] in order else -1
        if slicing.ordered and top < last_slice:
            problems.append(SliceProblem(
                "error", "structure", index,
                f"{definition.id} is sliced in order: slice {name} comes after {order[last_slice]}"))
        last_slice = max(last_slice, top)
    return problems
