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

from dui.fhir.definitions import R4, r4, search_parameter_table
from dui.fhir.fhirpath import compile_fhirpath, split_steps, unwrap
from dui.fhir.search.paths import Evaluator, compile_path

INDEXED_TYPES = frozenset({"string", "token", "reference", "date", "quantity", "number", "uri"})
# Parameters answered from the resource table itself.
COLUMN_PARAMETERS = frozenset({"_id", "_lastUpdated"})

@dataclass(frozen=True)
class Extraction:
    """One branch of a parameter's expression: what to evaluate and how to read the result."""

    expression: str
    target: str | None  # keep only references to this resource type (resolve() is T)
    value_types: tuple[str, ...]  # FHIR types the expression yields, when the path tells
    fast: Evaluator | None = field(default=None, compare=False, repr=False)  # see dui.fhir.search.paths

    def evaluate(self, resource: dict[str, Any]) -> list[Any]:
        if self.fast is not None:
            return self.fast(resource)
        return [v for v in compile_fhirpath(self.expression)(resource) if v is not None]


@dataclass(frozen=True)
class SearchParameter:
    code: str
    type: str
    resource_type: str
    extractions: tuple[Extraction, ...]
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()
    modifiers: tuple[str, ...] = field(default=())
    url: str | None = None

    @property
    def indexed(self) -> bool:
        return self.type in INDEXED_TYPES and self.code not in COLUMN_PARAMETERS


class SearchParameterRegistry:
    """Search parameters per resource type. One instance per process."""

    def __init__(self, defs: R4 | None = None, table: dict[str, dict[str, Any]] | None = None) -> None:
        self.defs = defs or r4()
        raw = search_parameter_table() if table is None else table
        self._by_type: dict[str, dict[str, SearchParameter]] = {}
        for rtype, params in raw.items():
            self._by_type[rtype] = {code: self._build(rtype, code, row) for code, row in params.items()}
        self._indexed: dict[str, tuple[SearchParameter, ...]] = {}

    def _build(self, rtype: str, code: str, row: dict[str, Any]) -> SearchParameter:
        extractions = tuple(
            Extraction(expr, target, infer_types(self.defs, rtype, expr), compile_path(self.defs, expr, rtype))
            for expr, target in row["expr"]
        )
        return SearchParameter(
            code=code,
            type=row["type"],
            resource_type=rtype,
            extractions=extractions,
            targets=tuple(row.get("target", ())),
            components=tuple((c, e) for c, e in row.get("component", ())),
            modifiers=tuple(row.get("modifier", ())),
            url=row.get("url"),
        )

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
    expr = expression.strip()
    as_type = None
    m = re.fullmatch(r"\((.*) as ([A-Za-z]+)\)", expr)
    if m:
        expr, as_type = m.group(1).strip(), m.group(2)
    expr = unwrap(expr)
    if expr.endswith(".exists()"):
        return ("boolean",)
    parts = split_steps(expr)
    if not parts or parts[0] != rtype:
        return ()
    path = rtype
    types: tuple[str, ...] = ()
    for step in parts[1:]:
        if step.startswith("where("):
            continue
        if step.startswith("ofType(") and step.endswith(")"):
            wanted = step[7:-1]
            if wanted not in types:
                return ()
            types = (wanted,)
            path = wanted
            continue
        if not _STEP.fullmatch(step):
            return ()
        name = _STEP.fullmatch(step).group(1)  # type: ignore[union-attr]
        el = defs.children(path).get(name)
        if el is None:
            return ()
        if el.content_ref:
            path, types = el.content_ref, ("BackboneElement",)
        elif el.types in (("BackboneElement",), ("Element",)):
            path, types = el.path, el.types
        else:
            types = el.types
            path = types[0] if len(types) == 1 else path
    if as_type:
        return (as_type,) if as_type in types else ()
    return types
