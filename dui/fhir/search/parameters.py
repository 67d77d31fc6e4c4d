"""The registry of search parameters: name, type and FHIRPath expression per resource type.

Built from the R4 core SearchParameters (``dui.fhir.definitions``); custom parameters (from
``fhir_profiles``) will be added through ``SearchParameterRegistry.add``. FHIRPath expressions are
compiled once, with the R4 model (without it, choice elements silently yield nothing), and cached.

``_id`` and ``_lastUpdated`` are columns of the ``resource`` table, not index rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dui.fhir.definitions import R4, ElementDef, r4, search_parameter_table, value_set_systems
from dui.fhir.fhirpath import compile_fhirpath, split_steps, unwrap
from dui.fhir.search.paths import Evaluator, compile_path, top_keys

INDEXED_TYPES = frozenset({"string", "token", "reference", "date", "quantity", "number", "uri"})
# Composite parameters indexed: two components, the first a token or reference, the second any of these.
COMPOSITE_FIRST = frozenset({"token", "reference"})
COMPOSITE_SECOND = frozenset({"token", "quantity", "number", "date", "string", "reference"})
# Parameters answered from the resource table itself.
COLUMN_PARAMETERS = frozenset({"_id", "_lastUpdated"})

@dataclass(frozen=True)
class Extraction:
    """One branch of a parameter's expression: what to evaluate and how to read the result."""

    expression: str
    target: str | None  # keep only references to this resource type (resolve() is T)
    value_types: tuple[str, ...]  # FHIR types the expression yields, when the path tells
    fast: Evaluator | None = field(default=None, compare=False, repr=False)  # see dui.fhir.search.paths
    code_system: str | None = None  # the system a bare ``code`` value belongs to (its required binding)
    root: str | None = None  # type (or backbone path) of the values, for composite components
    needs: frozenset[str] | None = None  # top-level keys without which the expression yields nothing

    def evaluate(self, resource: dict[str, Any]) -> list[Any]:
        if self.fast is not None:
            return self.fast(resource)
        return [v for v in compile_fhirpath(self.expression)(resource) if v is not None]


@dataclass(frozen=True)
class Component:
    """One part of a composite parameter: a parameter of the same type, evaluated on each base value."""

    code: str
    kind: str
    expression: str


@dataclass(frozen=True)
class SearchParameter:
    code: str
    type: str
    resource_type: str
    extractions: tuple[Extraction, ...]
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    modifiers: tuple[str, ...] = field(default=())
    url: str | None = None

    @property
    def indexed(self) -> bool:
        if self.type == "composite":
            return len(self.components) == 2 and self.components[0].kind in COMPOSITE_FIRST \
                and self.components[1].kind in COMPOSITE_SECOND
        return self.type in INDEXED_TYPES and self.code not in COLUMN_PARAMETERS


class SearchParameterRegistry:
    """Search parameters per resource type. One instance per process."""

    def __init__(self, defs: R4 | None = None, table: dict[str, dict[str, Any]] | None = None) -> None:
        self.defs = defs or r4()
        raw = search_parameter_table() if table is None else table
        self._by_type: dict[str, dict[str, SearchParameter]] = {}
        for rtype, params in raw.items():
            self._by_type[rtype] = {code: self._build(rtype, code, row, raw) for code, row in params.items()}
        self._indexed: dict[str, tuple[SearchParameter, ...]] = {}
        # ``_text`` and ``_content`` (``dui.fhir.search.fulltext``): indexed and searchable, or neither
        # (``DUI_TEXT_SEARCH``)
        self.full_text = True

    def _build(self, rtype: str, code: str, row: dict[str, Any],
               table: dict[str, dict[str, Any]]) -> SearchParameter:
        extractions = tuple(self._extraction(rtype, expr, target) for expr, target in row["expr"])
        components = tuple(
            Component(c, table.get(rtype, {}).get(c, {}).get("type", "?"), e) for c, e in row.get("component", ())
        )
        return SearchParameter(
            code=code,
            type=row["type"],
            resource_type=rtype,
            extractions=extractions,
            targets=tuple(row.get("target", ())),
            components=components,
            modifiers=tuple(row.get("modifier", ())),
            url=row.get("url"),
        )

    def _extraction(self, rtype: str, expr: str, target: str | None) -> Extraction:
        element, types = infer_element(self.defs, rtype, expr)
        system = None
        if element is not None and element.value_set and types == ("code",):
            system = value_set_systems().get(element.value_set)
        root = None
        if types == ("BackboneElement",) and element is not None:
            root = element.path
        elif len(types) == 1 and not self.defs.is_primitive(types[0]):
            root = types[0]
        elif unwrap(expr) == rtype:
            root = rtype
        fast = compile_path(self.defs, expr, rtype)
        needs = top_keys(self.defs, expr, rtype) if fast is not None else None
        return Extraction(expr, target, types, fast, system, root, needs)

    def add_definitions(self, resources: Iterable[dict[str, Any]]) -> None:
        """Register the SearchParameter resources among ``resources`` (the DUI's own, from ``fhir_profiles``)."""
        for sp in resources:
            if sp.get("resourceType") != "SearchParameter" or sp.get("status") == "retired":
                continue
            row = {"type": sp["type"], "expr": [[sp["expression"], None]], "url": sp.get("url")}
            for rtype in sp.get("base", []):
                self._by_type.setdefault(rtype, {})[sp["code"]] = self._build(rtype, sp["code"], row, {})
                self._indexed.pop(rtype, None)

    def add(self, parameter: SearchParameter) -> None:
        """Register a custom parameter (run ``dui reindex`` afterwards)."""
        self._by_type.setdefault(parameter.resource_type, {})[parameter.code] = parameter
        self._indexed.pop(parameter.resource_type, None)

    def for_type(self, rtype: str) -> dict[str, SearchParameter]:
        return self._by_type.get(rtype, {})

    def get(self, rtype: str, code: str) -> SearchParameter | None:
        return self._by_type.get(rtype, {}).get(code)

    def indexed(self, rtype: str) -> tuple[SearchParameter, ...]:
        """Parameters whose values are written to the index on every write of ``rtype``."""
        params = self._indexed.get(rtype)
        if params is None:
            params = self._indexed[rtype] = tuple(p for p in self.for_type(rtype).values() if p.indexed)
        return params

    def resource_types(self) -> Iterable[str]:
        return self._by_type.keys()


_STEP = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)(\[[0-9]+\])?")


def infer_types(defs: R4, rtype: str, expression: str) -> tuple[str, ...]:
    """The FHIR types an expression yields, read from its path; () when the path is not plain.

    Handles ``Type.a.b``, ``.where(...)`` filters, ``.ofType(T)``, ``(X as T)`` and ``.exists()``.
    """
    return infer_element(defs, rtype, expression)[1]


def infer_element(defs: R4, rtype: str, expression: str) -> tuple[ElementDef | None, tuple[str, ...]]:
    """The last element an expression reaches and the types it yields (see ``infer_types``)."""
    expr = expression.strip()
    as_type = None
    m = re.fullmatch(r"\((.*) as ([A-Za-z]+)\)", expr)
    if m:
        expr, as_type = m.group(1).strip(), m.group(2)
    expr = unwrap(expr)
    if expr.endswith(".exists()"):
        return None, ("boolean",)
    parts = split_steps(expr)
    if not parts or parts[0] != rtype:
        return None, ()
    path = rtype
    types: tuple[str, ...] = ()
    element: ElementDef | None = None
    for step in parts[1:]:
        if step.startswith("where("):
            continue
        if step.startswith("ofType(") and step.endswith(")"):
            wanted = next((t for t in types if t.lower() == step[7:-1].lower()), None)
            if wanted is None:
                return None, ()
            types = (wanted,)
            path = wanted
            continue
        match = _STEP.fullmatch(step)
        if not match:
            return None, ()
        element = defs.children(path).get(match.group(1))
        if element is None:
            return None, ()
        if element.content_ref:
            path, types = element.content_ref, ("BackboneElement",)
        elif element.types in (("BackboneElement",), ("Element",)):
            path, types = element.path, ("BackboneElement",)
        else:
            types = element.types
            path = types[0] if len(types) == 1 else path
    if as_type:
        return element, ((as_type,) if as_type in types else ())
    return element, types
