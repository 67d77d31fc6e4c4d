"""Search query string -> ``SearchPlan`` (http://hl7.org/fhir/R4/search.html).

Criteria form a small tree: a ``Leaf`` is one parameter with its values (ORed), a ``Chain`` follows
a reference to criteria on the target (``subject:Patient.name=...``, up to three links), a ``Has``
follows references backwards (``_has:Observation:patient:code=...``, nestable). Top-level criteria
are ANDed.

A parameter the server does not know is refused with 400 unless the client asks ``Prefer: handling=lenient``
(``FhirRequest.strict``): then it is ignored and left out of the self link. An unsupported modifier is always
refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from dui.errors import Invalid
from dui.fhir.search.fulltext import QueryError, parse_query
from dui.fhir.search.parameters import SearchParameter, SearchParameterRegistry
from dui.fhir.structure import CONTROL
from dui.settings import Limits

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "missing", "of-type", "in", "not-in", "below", "above"},
    "reference": {"missing", "identifier"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}
SUMMARY_MODES = ("true", "false", "text", "data", "count")
TOTAL_MODES = ("none", "estimate", "accurate")
SORTABLE = frozenset({"string", "token", "date", "number", "quantity", "uri", "reference"})
NOT_SUPPORTED = frozenset({"_contained", "_containedType", "_query", "_filter", "_type"})
TEXT_PARAMETERS = frozenset({"_text", "_content"})
# Types without a narrative (not DomainResources): ``_text`` does not apply to them.
NO_NARRATIVE = frozenset({"Binary", "Bundle", "Parameters"})
CONTROL_PARAMETERS = frozenset({"_count", "_cursor", "_sort", "_include", "_revinclude", "_summary", "_elements",
                                "_total", "_format", "_pretty"})
MAX_CHAIN = 3
# Token modifiers answered from the terminology in force: value-set membership and subsumption.
CODE_SET_MODIFIERS = frozenset({"in", "not-in", "below", "above"})


class Undecidable(Exception):
    """A terminology criterion the data at hand cannot answer in full (a value set that cannot be expanded, a code
    system not at hand): refused unless ``Prefer: handling=lenient``, which ignores it with a warning."""


class CodeSets(Protocol):
    """The terminology a search reads its ``:in``, ``:not-in``, ``:below`` and ``:above`` values with: the
    (system, code) pairs one value stands for. Raises ``Undecidable``, or ``Invalid`` for a wrong value."""

    def codes(self, modifier: str, value: str) -> frozenset[tuple[str, str]]: ...


@dataclass(frozen=True)
class Leaf:
    """One parameter of ``rtype``; its values are ORed."""

    rtype: str
    code: str
    kind: str  # a search parameter type, or "id", "lastUpdated", "list", "text" (``_text``, ``_content``)
    modifier: str | None
    values: tuple[str, ...]
    param: SearchParameter | None = None
    codes: frozenset[tuple[str, str]] | None = None  # ``:in``, ``:not-in``, ``:below``, ``:above``: the pairs meant


@dataclass(frozen=True)
class Chain:
    """``code`` (a reference of ``rtype``) points at a resource matching ``inner`` (one per target type)."""

    rtype: str
    code: str
    inner: tuple[tuple[str, Node], ...]  # (target type, criteria on it)


@dataclass(frozen=True)
class Has:
    """Some ``source`` resource whose reference ``code`` points here matches ``inner``."""

    rtype: str
    source: str
    code: str
    inner: Node


Node = Leaf | Chain | Has


class Scoped(Protocol):
    """The actor's scope in SQL (``dui.fhir.scope.Sight``): whether it hides resources of a type, and, of a
    subquery of row ids of that type, a query of those it sees."""

    def hides(self, rtype: str) -> bool: ...

    def keep(self, rtype: str, candidates: Any) -> Any: ...

    def page_scope(self, rtype: str) -> dict[str, Any] | None:
        """The parameters of ``dui.fhir.scope.SEEN_PATIENT_ROWS`` when ``keep`` on ``rtype`` is exactly that
        condition (a prebuilt page statement can then carry it); None otherwise."""
        ...


@dataclass(frozen=True)
class SortKey:
    code: str
    descending: bool
    kind: str  # "id", "lastUpdated" or a parameter type


@dataclass(frozen=True)
class Include:
    source: str  # "*" for any type (``_revinclude=*``)
    code: str  # "*" for every reference parameter of the source
    target: str | None
    reverse: bool
    iterate: bool
    reaches: tuple[str, ...] = ()  # the types it can bring in: the source (reverse), else the targets; () for "*"


@dataclass
class SearchPlan:
    resource_type: str
    criteria: list[Node] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    total: str | None = None  # None: accurate on the first page only
    count: int = 20
    cursor: dict[str, Any] | None = None
    kept: list[tuple[str, str]] = field(default_factory=list)  # for the self link
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # why parameters were ignored, when it is not the usual
    # The actor's scope, applied to the searched type and to every hop of chains, ``_has`` and ``_list``.
    within: Scoped | None = None

    @property
    def first_page(self) -> bool:
        return self.cursor is None

    def touched_types(self) -> set[str] | None:
        """Every resource type the search tests or returns besides its own: chain targets and ``_has`` sources on
        every hop, ``_list``, and what ``_include`` / ``_revinclude`` bring in. None when a wildcard ``_include``
        could bring in any type. Authorization checks them all before the search runs."""
        found: set[str] = set()
        pending: list[Node] = list(self.criteria)
        while pending:
            node = pending.pop()
            if isinstance(node, Chain):
                for target, inner in node.inner:
                    found.add(target)
                    pending.append(inner)
            elif isinstance(node, Has):
                found.add(node.source)
                pending.append(node.inner)
            elif isinstance(node, Leaf) and node.kind == "list":
                found.add("List")
        for include in self.includes:
            if not include.reaches:
                return None
            found.update(include.reaches)
        found.discard(self.resource_type)
        return found


class Parser:
    def __init__(self, registry: SearchParameterRegistry, limits: Limits, strict: bool,
                 code_sets: CodeSets | None = None, ignore_empty: bool = False) -> None:
        self.registry = registry
        self.limits = limits
        self.strict = strict
        self.ignore_empty = ignore_empty
        self.code_sets = code_sets
        self.warnings: list[str] = []

    def parse(self, rtype: str, params: list[tuple[str, str]]) -> SearchPlan:
        plan = SearchPlan(rtype, count=self.limits.default_count)
        for name, raw in params:
            if CONTROL.search(raw) or CONTROL.search(name):
                raise Invalid(f"Search parameter '{name[:60]}' contains a control character", expression=name[:60])
            if name in CONTROL_PARAMETERS or name.split(":")[0] in ("_include", "_revinclude"):
                self._control(plan, name, raw)
                continue
            # No value at all: ignored (search.html#errors) in a client's search unless it asked handling=strict;
            # refused where strictness is forced (conditional criteria: ignoring would widen the match)
            if raw == "":
                node = None if self.ignore_empty else self._skip(name, f"Search parameter '{name}' has no value")
            else:
                node = self.criterion(rtype, name, raw, depth=0)
            if node is None:
                plan.ignored.append(name)
                continue
            plan.criteria.append(node)
            plan.kept.append((name, raw))
        plan.warnings = self.warnings
        return plan

    # -- result parameters --------------------------------------------------------------------

    def _control(self, plan: SearchPlan, name: str, raw: str) -> None:
        base, _, modifier = name.partition(":")
        if name == "_count":
            plan.count = min(_integer(name, raw, minimum=0), self.limits.max_count)
            plan.kept.append((name, str(plan.count)))
        elif name == "_cursor":
            plan.cursor = decode_cursor(raw)
        elif name == "_sort":
            plan.sort = self._sort(plan.resource_type, raw)
            plan.kept.append((name, raw))
        elif base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise Invalid(f"'{name}' takes no modifier other than :iterate", expression=name)
            for value in raw.split(","):
                plan.includes.append(self._include(plan.resource_type, value, base == "_revinclude",
                                                   modifier in ("iterate", "recurse"), name))
            plan.kept.append((name, raw))
        elif name == "_summary":
            plan.summary = one_of(name, raw, SUMMARY_MODES)
            plan.kept.append((name, raw))
        elif name == "_elements":
            plan.elements = element_names(raw)
            plan.kept.append((name, raw))
        elif name == "_total":
            plan.total = one_of(name, raw, TOTAL_MODES)
            plan.kept.append((name, raw))

    def _sort(self, rtype: str, raw: str) -> list[SortKey]:
        keys = []
        for item in raw.split(","):
            item = item.strip()
            descending = item.startswith("-")
            code = item.lstrip("-")
            if code in ("_id", "_lastUpdated"):
                keys.append(SortKey(code, descending, "id" if code == "_id" else "lastUpdated"))
                continue
            param = self.registry.get(rtype, code)
            if param is None or param.type not in SORTABLE:
                raise Invalid(f"Cannot sort {rtype} by '{code}': not a sortable search parameter of {rtype}",
                              code="not-supported", expression="_sort")
            keys.append(SortKey(code, descending, param.type))
        if len(keys) > 4:
            raise Invalid("_sort takes at most 4 keys", expression="_sort")
        return keys

    def _include(self, rtype: str, value: str, reverse: bool, iterate: bool, name: str) -> Include:
        if value == "*":  # every reference: from the results (_include), or to them from any type (_revinclude)
            return Include("*" if reverse else rtype, "*", None, reverse, iterate)  # reaches any type
        parts = value.split(":")
        if len(parts) not in (2, 3):
            raise Invalid(f"{name}={value}: expected SourceType:parameter[:TargetType]", expression=name)
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source not in set(self.registry.resource_types()):
            raise Invalid(f"{name}={value}: unknown resource type {source}", expression=name)
        if code != "*":
            param = self.registry.get(source, code)
            if param is None or param.type != "reference":
                raise Invalid(f"{name}={value}: '{code}' is not a reference parameter of {source}",
                              code="not-supported", expression=name)
            if target and param.targets and target not in param.targets:
                raise Invalid(f"{name}={value}: {source}.{code} does not point at {target}", expression=name)
        if not iterate and not reverse and source != rtype:
            raise Invalid(f"_include={value}: the source must be {rtype} (or use _include:iterate)", expression=name)
        if reverse:
            reaches: tuple[str, ...] = (source,)
        elif target:
            reaches = (target,)
        else:
            param = self.registry.get(source, code) if code != "*" else None
            reaches = tuple(param.targets) if param is not None and param.targets else ()
        return Include(source, code, target, reverse, iterate, reaches)

    # -- criteria -----------------------------------------------------------------------------

    def criterion(self, rtype: str, name: str, raw: str, depth: int) -> Node | None:
        if name.startswith("_has:"):
            return self._has(rtype, name, raw, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        if code in NOT_SUPPORTED:
            return self._skip(name, f"'{code}' is not supported by this server")
        if dot:
            return self._chain(rtype, code, modifier, rest, raw, depth, name)
        if code in TEXT_PARAMETERS:
            return self._text(rtype, code, modifier, raw, name)
        if code in ("_id", "_lastUpdated", "_list"):
            kind = {"_id": "id", "_lastUpdated": "lastUpdated", "_list": "list"}[code]
            allowed = {"missing"} if kind in ("id", "lastUpdated") else set()  # never missing: false keeps all
            if modifier and modifier not in allowed:
                raise Invalid(f"Modifier ':{modifier}' is not supported on '{code}'", code="not-supported",
                              expression=name)
            return Leaf(rtype, code, kind, modifier or None, _values(name, raw))
        param = self.registry.get(rtype, code)
        if param is None:
            return self._skip(name, f"Unknown search parameter '{code}' for {rtype}")
        if param.type not in MODIFIERS:
            return self._skip(name, f"Search parameter '{code}' ({param.type}) is not supported")
        if param.type == "composite" and not param.indexed:  # e.g. three components: not in the composite index
            return self._skip(name, f"Search parameter '{code}' (a composite of {len(param.components)} "
                                    "components) is not supported")
        if modifier:
            type_modifier = param.type == "reference" and modifier in param.targets
            if modifier not in MODIFIERS[param.type] and not type_modifier:
                raise Invalid(f"Modifier ':{modifier}' is not supported on '{code}' ({param.type})",
                              code="not-supported", expression=name)
        if param.type == "token" and modifier in CODE_SET_MODIFIERS:
            return self._code_set(rtype, code, modifier, name, raw, param)
        return Leaf(rtype, code, param.type, modifier or None, _values(name, raw), param)

    def _code_set(self, rtype: str, code: str, modifier: str, name: str, raw: str,
                  param: SearchParameter) -> Node | None:
        values = _values(name, raw)
        if self.code_sets is None:
            raise Invalid(f"'{name}': the :{modifier} modifier is not available here", code="not-supported",
                          expression=name)
        pairs: set[tuple[str, str]] = set()
        try:
            for value in values:
                pairs |= self.code_sets.codes(modifier, value)
        except Undecidable as err:
            node = self._skip(name, f"'{name}={raw[:200]}': {err}")
            if node is None:
                self.warnings.append(f"Ignored {name}: {err}")
            return node
        return Leaf(rtype, code, param.type, modifier, values, param, frozenset(pairs))

    def _chain(self, rtype: str, code: str, type_modifier: str, rest: str, raw: str, depth: int,
               name: str) -> Node | None:
        if depth + 1 >= MAX_CHAIN:
            raise Invalid(f"'{name}': chains are limited to {MAX_CHAIN - 1} links", code="too-costly", expression=name)
        param = self.registry.get(rtype, code)
        if param is None or param.type != "reference":
            return self._skip(name, f"'{code}' is not a reference parameter of {rtype}; it cannot be chained")
        targets = [type_modifier] if type_modifier else list(param.targets)
        inner: list[tuple[str, Node]] = []
        for target in targets:
            if target not in set(self.registry.resource_types()):
                raise Invalid(f"'{name}': {target} is not a resource type", expression=name)
            next_code = rest.split(".")[0].split(":")[0]
            if next_code not in ("_id", "_lastUpdated", *TEXT_PARAMETERS) and next_code != "_has" and \
                    self.registry.get(target, next_code) is None:
                continue
            node = self.criterion(target, rest, raw, depth + 1)
            if node is not None:
                inner.append((target, node))
        if not inner:
            return self._skip(name, f"'{rest.split('.')[0]}' is not a search parameter of "
                                           f"{' or '.join(targets) or 'the target'}")
        return Chain(rtype, code, tuple(inner))

    def _has(self, rtype: str, name: str, raw: str, depth: int) -> Node | None:
        parts = name.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise Invalid(f"'{name}': expected _has:Type:reference:parameter", expression=name)
        _, source, code, rest = parts
        if depth + 1 >= MAX_CHAIN + 1:
            raise Invalid(f"'{name}': _has is nested too deeply", code="too-costly", expression=name)
        if source not in set(self.registry.resource_types()):
            raise Invalid(f"'{name}': {source} is not a resource type", expression=name)
        param = self.registry.get(source, code)
        if param is None or param.type != "reference":
            return self._skip(name, f"'{code}' is not a reference parameter of {source}")
        if param.targets and rtype not in param.targets:
            raise Invalid(f"'{name}': {source}.{code} does not point at {rtype}", expression=name)
        inner = self.criterion(source, rest, raw, depth + 1)
        if inner is None:
            return None
        return Has(rtype, source, code, inner)

    def _text(self, rtype: str, code: str, modifier: str, raw: str, name: str) -> Node | None:
        """``_text`` (narrative) or ``_content`` (the whole resource): a malformed value is refused under
        strict handling and ignored under lenient, as an unknown parameter is."""
        if modifier:
            raise Invalid(f"Modifier ':{modifier}' is not supported on '{code}'", code="not-supported",
                          expression=name)
        if not self.registry.full_text:
            return self._skip(name, f"'{code}' is turned off on this server (DUI_TEXT_SEARCH)")
        if code == "_text" and rtype in NO_NARRATIVE:
            return self._skip(name, f"{rtype} has no narrative: '_text' does not apply to it")
        values = tuple(split_values(raw))
        for value in values:
            try:
                parse_query(value)
            except QueryError as exc:
                return self._skip(name, f"'{code}' cannot be read: {exc}")
        return Leaf(rtype, code, "text", None, values)

    def _skip(self, name: str, message: str) -> Node | None:
        """Refuse (strict handling) or ignore (lenient) a parameter the server cannot honour."""
        if self.strict:
            raise Invalid(message + " (Prefer: handling=lenient would ignore it)", code="not-supported",
                          expression=name)
        return None


def parse_search(rtype: str, params: list[tuple[str, str]], registry: SearchParameterRegistry, limits: Limits,
                 strict: bool, code_sets: CodeSets | None = None, ignore_empty: bool = False) -> SearchPlan:
    """Read a query string into a plan; raise ``Invalid`` for what cannot be honoured. ``code_sets``: the
    terminology for ``:in``, ``:not-in``, ``:below`` and ``:above`` (refused without it). ``ignore_empty``: a
    parameter without a value is ignored (listed in ``plan.ignored``) even when ``strict``."""
    return Parser(registry, limits, strict, code_sets, ignore_empty).parse(rtype, params)


def _values(name: str, raw: str) -> tuple[str, ...]:
    values = tuple(split_values(raw))
    if not values or any(v == "" for v in values):
        raise Invalid(f"Search parameter '{name}' has an empty value", expression=name)
    return values


def split_values(raw: str, separator: str = ",") -> list[str]:
    """Split on a separator not escaped with a backslash; unescape ``\\,``, ``\\|``, ``\\$``, ``\\\\``."""
    values, current, escaped = [], "", False
    for ch in raw:
        if escaped:
            current += ch if ch in ",|$\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current + ("\\" if escaped else ""))
    return values


def one_of(name: str, raw: str, modes: tuple[str, ...]) -> str:
    """``raw`` if it is one of ``modes``, else a 400 naming them."""
    if raw not in modes:
        raise Invalid(f"{name} takes one of {', '.join(modes)}", expression=name)
    return raw


def element_names(raw: str) -> tuple[str, ...]:
    """The names of an ``_elements`` value."""
    return tuple(e.strip() for e in raw.split(",") if e.strip())


def _integer(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer, not {raw[:40]!r}", expression=name) from None
    if value < minimum:
        raise Invalid(f"{name} must be at least {minimum}", expression=name)
    return value


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Invalid("_cursor is not a cursor given by this server (follow the links of the Bundle)",
                      expression="_cursor") from None
    if not isinstance(data, dict) or not isinstance(data.get("r"), int) or not isinstance(data.get("k", []), list):
        raise Invalid("_cursor is not a cursor given by this server", expression="_cursor")
    return data
