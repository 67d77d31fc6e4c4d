"""The codes of one CodeSystem, its hierarchy, and the value-set filters evaluated over them.

The hierarchy is read from nested concepts and from the ``child`` and ``parent``/``subsumedBy`` properties
(v3 code systems record a second parent with ``child``). Property filters (``=``) use the concept properties
present in the data; a filter the data cannot answer raises Unanswerable with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["Codes", "Unanswerable"]

_VALUE_KEYS = ("valueCode", "valueBoolean", "valueInteger", "valueString", "valueDecimal", "valueDateTime")


class Unanswerable(Exception):
    """A filter that the code system at hand cannot answer; the message says why."""


def _value_text(prop: dict[str, Any]) -> str | None:
    for key in _VALUE_KEYS:
        if key in prop:
            value = prop[key]
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
    return None


def _reach(start: str, links: dict[str, set[str]]) -> set[str]:
    """Every code reachable from ``start`` through ``links`` (cycle-safe), ``start`` excluded unless on a cycle."""
    found: set[str] = set()
    stack = [start]
    while stack:
        for nxt in links.get(stack.pop(), ()):
            if nxt not in found:
                found.add(nxt)
                stack.append(nxt)
    return found


class Codes:
    """The concepts of a CodeSystem, indexed for membership and filters."""

    def __init__(self, code_system: dict[str, Any]) -> None:
        self.url: str = code_system.get("url", "")
        self.version: str | None = code_system.get("version") if isinstance(code_system.get("version"), str) else None
        self.name: str | None = code_system.get("name") if isinstance(code_system.get("name"), str) else None
        self.language: str | None = code_system.get("language") if isinstance(code_system.get("language"), str) \
            else None
        self.content: str = code_system.get("content", "complete")
        self.case_sensitive = code_system.get("caseSensitive", True) is not False
        self.codes: list[str] = []
        self.children: dict[str, set[str]] = {}
        self.properties: dict[str, dict[str, set[str]]] = {}  # property -> code -> values
        self.displays: dict[str, str] = {}
        self.designations: dict[str, list[dict[str, Any]]] = {}  # code -> its designations, as the data has them
        self.concept_properties: dict[str, list[dict[str, Any]]] = {}  # code -> its properties, as the data has them
        self._walk(code_system.get("concept", []), None)
        self._listed = set(self.codes)
        self.order = {code: index for index, code in reversed(list(enumerate(self.codes)))}
        self._folded = {code.casefold(): code for code in self.codes}
        self.parents: dict[str, set[str]] = {}
        for parent, children in self.children.items():
            for child in children:
                self.parents.setdefault(child, set()).add(parent)

    def _walk(self, concepts: Iterable[dict[str, Any]], parent: str | None) -> None:
        for concept in concepts:
            code = concept.get("code")
            if not isinstance(code, str):
                continue
            self.codes.append(code)
            if isinstance(concept.get("display"), str):
                self.displays[code] = concept["display"]
            if concept.get("designation"):
                self.designations[code] = [d for d in concept["designation"] if isinstance(d, dict)]
            if concept.get("property"):
                self.concept_properties[code] = [p for p in concept["property"] if isinstance(p, dict)]
            if parent is not None:
                self.children.setdefault(parent, set()).add(code)
            for prop in concept.get("property", []):
                value = _value_text(prop)
                if value is None:
                    continue
                name = prop.get("code", "")
                self.properties.setdefault(name, {}).setdefault(code, set()).add(value)
                if name == "child":
                    self.children.setdefault(code, set()).add(value)
                elif name in ("parent", "subsumedBy"):
                    self.children.setdefault(value, set()).add(code)
            self._walk(concept.get("concept", []), code)

    @property
    def complete(self) -> bool:
        return self.content == "complete"

    @property
    def hierarchical(self) -> bool:
        return bool(self.children)

    def inactive(self, code: str) -> bool:
        """Whether the concept is inactive: property ``inactive`` true, or ``status`` retired or inactive."""
        return bool(self.properties.get("inactive", {}).get(code, set()) & {"true"}) or bool(
            self.properties.get("status", {}).get(code, set()) & {"retired", "inactive"})

    def abstract(self, code: str) -> bool:
        """Whether the concept is not selectable (property ``notSelectable`` true: a grouper of v3)."""
        return "true" in self.properties.get("notSelectable", {}).get(code, set())

    def canonical(self, code: str) -> str | None:
        """The code as the code system spells it, or None if it is not listed (case-insensitive systems fold)."""
        if self.case_sensitive:
            return code if code in self._listed else None
        return self._folded.get(code.casefold())

    def descendants(self, code: str) -> set[str]:
        return _reach(code, self.children)

    def ancestors(self, code: str) -> set[str]:
        return _reach(code, self.parents)

    def matching(self, prop: str, op: str, value: str) -> set[str]:
        """The codes that pass one compose filter; Unanswerable when the data cannot say."""
        if prop == "concept" or (prop == "code" and op in ("=", "in", "regex")):
            return self._concept_filter(op, value)
        if op == "=":
            if prop not in self.properties:
                raise Unanswerable(f"code system {self.url} has no property {prop!r} in the data at hand")
            return {code for code, values in self.properties[prop].items() if value in values}
        if op == "exists":
            present = set(self.properties.get(prop, {}))
            return present if value == "true" else set(self.codes) - present
        raise Unanswerable(f"filter {prop} {op} {value} on {self.url} is not evaluated here")

    def _concept_filter(self, op: str, value: str) -> set[str]:
        if op == "regex":
            pattern = re.compile(value)
            return {code for code in self.codes if pattern.fullmatch(code)}
        if op in ("=", "in", "not-in"):
            listed = {self.canonical(v.strip()) or v.strip() for v in value.split(",")}
            if op == "not-in":
                return set(self.codes) - listed
            return {code for code in listed if self.canonical(code) is not None}
        code = self.canonical(value)
        if code is None:
            raise Unanswerable(f"filter {op} {value}: code {value} is not in code system {self.url}")
        if op == "is-a":
            return {code} | self.descendants(code)
        if op == "descendent-of":
            return self.descendants(code)
        if op == "is-not-a":
            return set(self.codes) - {code} - self.descendants(code)
        if op == "generalizes":
            return {code} | self.ancestors(code)
        raise Unanswerable(f"filter concept {op} {value} on {self.url} is not evaluated here")
