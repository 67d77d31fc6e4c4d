"""Search: query string -> ``SearchPlan`` -> SQL over the index tables.

Implements http://hl7.org/fhir/R4/search.html for string (default, ``:exact``, ``:contains``),
token (``system|code``, ``code``, ``|code``, ``system|``, ``:not``, ``:text``), reference (``id``,
``Type/id``, absolute URL, ``:Type``), date (every prefix, any precision), number and quantity
(prefixes, ``value|system|code``), uri (``:below``, ``:above``), ``:missing``, ``_id`` and
``_lastUpdated``. Parameters repeated are ANDed, comma-separated values ORed.

A parameter the server does not know is refused with 400 under ``Prefer: handling=strict`` and
otherwise ignored and left out of the self link. A modifier the server does not support is always
refused (the spec requires it). Results are ordered by row id, which keeps pages stable while others
write: a page continues after the last row id of the previous one (``_cursor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, select, true

from dui.errors import Invalid
from dui.fhir.search.indexer import date_range, precision_range
from dui.fhir.search.normalize import normalize
from dui.fhir.search.parameters import SearchParameter, SearchParameterRegistry
from dui.fhir.structure import CONTROL
from dui.fhir.tables import (
    INDEX_TABLES,
    TEXT_INDEX,
    resource,
    search_date,
    search_quantity,
    search_reference,
    search_string,
    search_token,
    search_uri,
)
from dui.settings import Limits

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Result parameters and features the full search engine adds (refused under handling=strict).
NOT_YET = frozenset({
    "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_contained",
    "_containedType", "_has", "_list", "_text", "_content", "_query", "_filter", "_type", "_offset",
})  # fmt: skip
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "missing"},
    "reference": {"missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
}


@dataclass(frozen=True)
class Criterion:
    """One search parameter occurrence: its values are ORed."""

    code: str
    modifier: str | None
    values: tuple[str, ...]
    param: SearchParameter | None  # None for _id and _lastUpdated


@dataclass
class SearchPlan:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 20
    cursor: int | None = None
    # (name, value) pairs that shaped the result, for the self link
    kept: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def parse_search(rtype: str, params: list[tuple[str, str]], registry: SearchParameterRegistry,
                 limits: Limits, strict: bool) -> SearchPlan:
    """Read a query string into a plan; raise ``Invalid`` for what cannot be honoured."""
    plan = SearchPlan(rtype, count=limits.default_count)
    for name, raw in params:
        if name in ("_format", "_pretty"):
            continue
        if name == "_count":
            plan.count = _count(raw, limits)
            plan.kept.append((name, str(plan.count)))
            continue
        if name == "_cursor":
            plan.cursor = _int_param(name, raw)
            continue
        code, _, modifier = name.partition(":")
        if name in NOT_YET or code in NOT_YET or "." in code:
            _unsupported(plan, name, strict, f"'{name}' is not supported by this server yet")
            continue
        if code in ("_id", "_lastUpdated"):
            param = None
            kind = "token" if code == "_id" else "date"
        else:
            param = registry.get(rtype, code)
            if param is None:
                _unsupported(plan, name, strict, f"Unknown search parameter '{code}' for {rtype}")
                continue
            kind = param.type
            if kind not in MODIFIERS:
                _unsupported(plan, name, strict, f"Search parameter '{code}' ({kind}) is not supported yet")
                continue
        if modifier:
            allowed = MODIFIERS.get(kind, set())
            is_type_modifier = kind == "reference" and param is not None and modifier in param.targets
            if modifier not in allowed and not is_type_modifier:
                raise Invalid(f"Modifier ':{modifier}' is not supported on '{code}' ({kind})",
                              code="not-supported", expression=name)
        values = tuple(_split_values(raw))
        if not values or any(v == "" for v in values):
            raise Invalid(f"Search parameter '{name}' has an empty value", expression=name)
        if CONTROL.search(raw):
            raise Invalid(f"Search parameter '{name}' contains a control character", expression=name)
        plan.criteria.append(Criterion(code, modifier or None, values, param))
        plan.kept.append((name, raw))
    return plan


def _unsupported(plan: SearchPlan, name: str, strict: bool, message: str) -> None:
    if strict:
        raise Invalid(message + " (Prefer: handling=strict)", code="not-supported", expression=name)
    plan.ignored.append(name)


def _count(raw: str, limits: Limits) -> int:
    value = _int_param("_count", raw)
    if value < 0:
        raise Invalid("_count must not be negative", expression="_count")
    return min(value, limits.max_count)


def _int_param(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer, not {raw[:40]!r}", expression=name) from None


def _split_values(raw: str) -> list[str]:
    """Split on commas not escaped with a backslash; unescape ``\\,``, ``\\|``, ``\\$``, ``\\\\``."""
    values, current, escaped = [], "", False
    for ch in raw:
        if escaped:
            current += ch if ch in ",|$\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current + ("\\" if escaped else ""))
    return values


# -- SQL ------------------------------------------------------------------------------------------


class SqlBuilder:
    """Turns a plan into a WHERE clause on the ``resource`` table."""

    def __init__(self, tz: ZoneInfo, fhir_base: str, now: datetime) -> None:
        self.tz = tz
        self.fhir_base = fhir_base.rstrip("/") + "/"
        self.now = now

    def where(self, plan: SearchPlan) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [
            resource.c.res_type == plan.resource_type,
            resource.c.deleted == false(),
        ]
        for criterion in plan.criteria:
            conditions.append(self.criterion(plan.resource_type, criterion))
        return conditions

    def select_rids(self, plan: SearchPlan) -> Select[Any]:
        stmt = select(resource.c.rid).where(*self.where(plan))
        if plan.cursor is not None:
            stmt = stmt.where(resource.c.rid > plan.cursor)
        return stmt.order_by(resource.c.rid)

    def criterion(self, rtype: str, c: Criterion) -> ColumnElement[bool]:
        if c.code == "_id":
            if c.modifier == "missing":
                return true() if c.values[0] == "false" else false()
            return resource.c.res_id.in_(c.values)
        if c.code == "_lastUpdated":
            return or_(*(self._last_updated(v) for v in c.values))
        assert c.param is not None
        kind = c.param.type
        table = INDEX_TABLES[kind]
        base = and_(table.c.res_type == rtype, table.c.param == c.code)
        if c.modifier == "missing":
            if len(c.values) != 1 or c.values[0] not in ("true", "false"):
                raise Invalid(f"'{c.code}:missing' takes true or false", expression=f"{c.code}:missing")
            present = resource.c.rid.in_(select(table.c.rid).where(base))
            return not_(present) if c.values[0] == "true" else present
        if kind == "token" and c.modifier == "not":
            matching = or_(*(self._token(v, None) for v in c.values))
            return not_(resource.c.rid.in_(select(table.c.rid).where(base, matching)))
        builder = {
            "string": self._string,
            "token": self._token,
            "reference": self._reference,
            "date": self._date,
            "number": self._number,
            "quantity": self._quantity,
            "uri": self._uri,
        }[kind]
        matching = or_(*(builder(v, c) for v in c.values))
        return resource.c.rid.in_(select(table.c.rid).where(base, matching))

    # -- per type -------------------------------------------------------------------------------

    def _string(self, value: str, c: Criterion | None) -> ColumnElement[bool]:
        modifier = c.modifier if c else None
        if modifier == "exact":
            return search_string.c.exact == value[:TEXT_INDEX]
        norm = normalize(value)[:TEXT_INDEX]
        if not norm:
            raise Invalid(f"'{value}' has no letter or digit to search for", expression=c.code if c else None)
        if modifier == "contains":
            return search_string.c.value.contains(norm, autoescape=True)
        return search_string.c.value.startswith(norm, autoescape=True)

    def _token(self, value: str, c: Criterion | None) -> ColumnElement[bool]:
        if c is not None and c.modifier == "text":
            norm = normalize(value)
            return search_token.c.text.startswith(norm[:TEXT_INDEX], autoescape=True)
        if "|" not in value:
            return search_token.c.code == value
        system, code = value.split("|", 1)
        if system == "":
            return and_(search_token.c.system.is_(None), search_token.c.code == code)
        if code == "":
            return search_token.c.system == system
        return and_(search_token.c.system == system, search_token.c.code == code)

    def _reference(self, value: str, c: Criterion) -> ColumnElement[bool]:
        assert c.param is not None
        if c.modifier:  # :Type
            return and_(search_reference.c.target_type == c.modifier, search_reference.c.target_id == value)
        if value.startswith(self.fhir_base):
            value = value[len(self.fhir_base):]
        parts = value.split("/")
        if len(parts) == 1:
            return search_reference.c.target_id == value
        if len(parts) in (2, 4) and parts[0][:1].isupper() and (len(parts) == 2 or parts[2] == "_history"):
            return and_(search_reference.c.target_type == parts[0], search_reference.c.target_id == parts[1])
        return search_reference.c.url == value[:TEXT_INDEX]

    def _date(self, value: str, c: Criterion) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        rng = date_range(text, self.tz)
        if rng is None or rng[1] is None:
            raise Invalid(f"'{text}' is not a valid date for '{c.code}'", expression=c.code)
        low, high = search_date.c.low, search_date.c.high
        return _range_condition(prefix, rng[0], rng[1], low, high, self.now)

    def _last_updated(self, value: str) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        rng = date_range(text, self.tz)
        if rng is None or rng[1] is None:
            raise Invalid(f"'{text}' is not a valid date for '_lastUpdated'", expression="_lastUpdated")
        return _point_condition(prefix, rng[0], rng[1], resource.c.last_updated, self.now)

    def _number(self, value: str, c: Criterion) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        return _number_condition(prefix, _decimal(text, c.code), search_quantity.c.value)

    def _quantity(self, value: str, c: Criterion) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        parts = text.split("|")
        if len(parts) not in (1, 3):
            raise Invalid(f"'{value}' is not number|system|code for '{c.code}'", expression=c.code)
        condition = _number_condition(prefix, _decimal(parts[0], c.code), search_quantity.c.value)
        if len(parts) == 3:
            system, code = parts[1], parts[2]
            if system:
                condition = and_(condition, search_quantity.c.system == system)
            if code:
                condition = and_(condition, search_quantity.c.code == code)
        return condition

    def _uri(self, value: str, c: Criterion) -> ColumnElement[bool]:
        if c.modifier == "below":
            return search_uri.c.uri.startswith(value, autoescape=True)
        if c.modifier == "above":
            prefixes = [value[:i] for i in range(1, len(value) + 1)]
            return search_uri.c.uri.in_(prefixes)
        return search_uri.c.uri == value[:TEXT_INDEX]


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2:3].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _decimal(text: str, code: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise Invalid(f"'{text}' is not a number for '{code}'", expression=code) from None
    if not number.is_finite():
        raise Invalid(f"'{text}' is not a finite number for '{code}'", expression=code)
    return number


def _range_condition(prefix: str, slo: datetime, shi: datetime, low: Any, high: Any, now: datetime,
                     nullable: bool = True) -> ColumnElement[bool]:
    """Date comparison of a target range [low, high) with the search range [slo, shi).

    NULL bounds are open-ended (a Period without end goes on forever). Semantics from
    http://hl7.org/fhir/R4/search.html#prefix.
    """
    def above(col: Any, value: datetime) -> ColumnElement[bool]:  # col > value, NULL = +inf
        return or_(col.is_(None), col > value) if nullable else col > value

    def below(col: Any, value: datetime) -> ColumnElement[bool]:  # col < value, NULL = -inf
        return or_(col.is_(None), col < value) if nullable else col < value

    if prefix == "eq":
        return and_(low.is_not(None), high.is_not(None), low >= slo, high <= shi)
    if prefix == "ne":
        return not_(and_(low.is_not(None), high.is_not(None), low >= slo, high <= shi))
    if prefix == "gt":
        return above(high, shi)
    if prefix == "ge":
        return above(high, slo)
    if prefix == "lt":
        return below(low, slo)
    if prefix == "le":
        return below(low, shi)
    if prefix == "sa":
        return and_(low.is_not(None), low >= shi)
    if prefix == "eb":
        return and_(high.is_not(None), high <= slo)
    # ap: overlaps the search range widened by 10 % of its distance from now (at least a day)
    margin = max(abs(now - slo) / 10, timedelta(days=1))
    return and_(above(high, slo - margin), below(low, shi + margin))


def _point_condition(prefix: str, slo: datetime, shi: datetime, column: ColumnElement[Any],
                     now: datetime) -> ColumnElement[bool]:
    """Date comparison of an instant column (``meta.lastUpdated``) with the search range [slo, shi)."""
    if prefix == "eq":
        return and_(column >= slo, column < shi)
    if prefix == "ne":
        return or_(column < slo, column >= shi)
    if prefix in ("gt", "sa"):
        return column >= shi
    if prefix == "ge":
        return column >= slo
    if prefix in ("lt", "eb"):
        return column < slo
    if prefix == "le":
        return column < shi
    margin = max(abs(now - slo) / 10, timedelta(days=1))
    return and_(column >= slo - margin, column < shi + margin)


def _number_condition(prefix: str, number: Decimal, column: ColumnElement[Any]) -> ColumnElement[bool]:
    lo, hi = precision_range(number)
    if prefix == "eq":
        return and_(column >= lo, column < hi)
    if prefix == "ne":
        return or_(column < lo, column >= hi)
    if prefix in ("gt", "sa"):
        return column > number
    if prefix in ("lt", "eb"):
        return column < number
    if prefix == "ge":
        return column >= number
    if prefix == "le":
        return column <= number
    margin = abs(number) / 10  # ap: within 10 %
    return and_(column >= number - margin, column <= number + margin)
