"""Criteria -> SQL over the index tables (http://hl7.org/fhir/R4/search.html).

Every criterion becomes a subquery yielding the row ids of matching resources of its type, and the
search keeps the rows of the ``resource`` table that are in all of them. Chains join the reference
index to the target resources, ``_has`` joins it the other way. Date semantics follow
http://hl7.org/fhir/R4/search.html#prefix on [low, high) ranges where NULL is open-ended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import NullType

from dui.errors import Invalid
from dui.fhir.search.fulltext import Query, QueryError, Term, fts5_query, parse_query
from dui.fhir.search.indexer import date_range, precision_range
from dui.fhir.search.normalize import normalize
from dui.fhir.search.plan import (
    CODE_SET_MODIFIERS,
    PREFIXES,
    Chain,
    Has,
    Leaf,
    Node,
    Scoped,
    SearchPlan,
    split_values,
)
from dui.fhir.tables import (
    INDEX_TABLES,
    TEXT_INDEX,
    resource,
    search_composite,
    search_date,
    search_quantity,
    search_reference,
    search_string,
    search_text,
    search_token,
    search_uri,
)


@dataclass(frozen=True)
class Matches:
    """The matching row ids: a FROM clause, its row-id column, and conditions on it."""

    source: FromClause
    rid: Any
    conditions: list[ColumnElement[bool]]

    def select(self, *columns: Any) -> Select[Any]:
        return select(*columns).select_from(self.source).where(*self.conditions)


class Criteria:
    """Builds the query of a search; one instance per query (it knows "now" for ``ap``)."""

    def __init__(self, tz: ZoneInfo, fhir_base: str, now: datetime, within: Scoped | None = None) -> None:
        self.tz = tz
        self.fhir_base = fhir_base.rstrip("/") + "/"
        self.now = now
        self.within = within  # the actor's scope, on the searched type and on every hop

    def matches(self, plan: SearchPlan) -> Matches:
        """The matching rows, driven by the criterion likely to select the fewest.

        The planner, left to itself, tends to walk every resource of the type in row-id order and
        probe each criterion (a merge semi-join): fine for a few thousand rows, linear in the size of
        the store. Starting from the row ids of one indexed criterion and joining the rest keeps the
        work proportional to the matches.
        """
        found = self._unscoped(plan)
        rtype = plan.resource_type
        if self.within is None or not self.within.hides(rtype):
            return found
        # The actor's scope last, on the rows every criterion kept (see ``Sight.keep``).
        kept = self.within.keep(rtype, found.select(found.rid.label("rid")).subquery("candidates")).subquery("kept")
        if any(k.kind in ("id", "lastUpdated") for k in plan.sort):
            return Matches(kept.join(resource, resource.c.rid == kept.c.rid), resource.c.rid, [])
        return Matches(kept, kept.c.rid, [])

    def _unscoped(self, plan: SearchPlan) -> Matches:
        nodes = sorted(plan.criteria, key=_cost)
        if not nodes:
            return Matches(resource, resource.c.rid,
                           [resource.c.res_type == plan.resource_type, resource.c.deleted == false()])
        # Every criterion yields live resources of the searched type only (index rows exist for
        # current versions alone), so the driving criterion's row ids need no join to ``resource``.
        driver = self.rids(nodes[0]).distinct().subquery("driver")
        if any(k.kind in ("id", "lastUpdated") for k in plan.sort):
            source = driver.join(resource, resource.c.rid == driver.c.rid)
            return Matches(source, resource.c.rid, [resource.c.rid.in_(self.rids(n)) for n in nodes[1:]])
        return Matches(driver, driver.c.rid, [driver.c.rid.in_(self.rids(n)) for n in nodes[1:]])

    def rids(self, node: Node) -> Select[Any]:
        """Row ids of the resources of ``node.rtype`` that match ``node``.

        Never correlated: a subquery on ``resource`` nested in a query on ``resource`` must read the
        table afresh, not the outer row (SQLAlchemy would otherwise correlate it).
        """
        if isinstance(node, Chain):
            return self._chain(node).correlate(None)
        if isinstance(node, Has):
            return self._has(node).correlate(None)
        return self._leaf(node).correlate(None)

    # -- structure ------------------------------------------------------------------------------

    def _chain(self, node: Chain) -> Select[Any]:
        ref = search_reference.alias()
        target = resource.alias()
        branches = [target.c.res_type == t for t, _ in node.inner]
        inner = [and_(target.c.res_type == t, target.c.rid.in_(self._kept(t, self.rids(n)))) for t, n in node.inner]
        return (select(ref.c.rid)
                .join(target, and_(target.c.res_type == ref.c.target_type, target.c.res_id == ref.c.target_id))
                .where(ref.c.res_type == node.rtype, ref.c.param == node.code, target.c.deleted == false(),
                       or_(*branches), or_(*inner)))

    def _has(self, node: Has) -> Select[Any]:
        ref = search_reference.alias()
        target = resource.alias()
        return (select(target.c.rid)
                .join(ref, and_(ref.c.target_type == target.c.res_type, ref.c.target_id == target.c.res_id))
                .where(ref.c.res_type == node.source, ref.c.param == node.code, target.c.res_type == node.rtype,
                       target.c.deleted == false(), ref.c.rid.in_(self._kept(node.source, self.rids(node.inner)))))

    def _kept(self, rtype: str, rows: Select[Any]) -> Select[Any]:
        """Of ``rows`` (row ids of ``rtype`` reached by a chain, ``_has`` or ``_list``), those the actor sees."""
        if self.within is None or not self.within.hides(rtype):
            return rows
        return self.within.keep(rtype, rows.subquery()).correlate(None)  # type: ignore[no-any-return]

    def _leaf(self, leaf: Leaf) -> Select[Any]:
        if leaf.kind in ("id", "lastUpdated") and leaf.modifier == "missing":  # every resource has both
            if leaf.values not in (("true",), ("false",)):
                raise Invalid(f"'{leaf.code}:missing' takes true or false", expression=f"{leaf.code}:missing")
            keep = leaf.values == ("false",)
            return select(resource.c.rid).where(resource.c.res_type == leaf.rtype, resource.c.deleted == false(),
                                                true() if keep else false())
        if leaf.kind == "id":
            return select(resource.c.rid).where(resource.c.res_type == leaf.rtype, resource.c.deleted == false(),
                                                resource.c.res_id.in_(leaf.values))
        if leaf.kind == "lastUpdated":
            column = resource.c.last_updated
            return select(resource.c.rid).where(resource.c.res_type == leaf.rtype, resource.c.deleted == false(),
                                                or_(*(self._point(v, column) for v in leaf.values)))
        if leaf.kind == "list":
            return self._list(leaf)
        if leaf.kind == "text":
            return self._text(leaf)
        if leaf.modifier == "identifier":
            return self._tokens(leaf, f"{leaf.code}:identifier", leaf.values)
        if leaf.modifier == "of-type":
            return self._of_type(leaf)
        if leaf.kind == "token" and leaf.modifier in CODE_SET_MODIFIERS:
            return self._code_set(leaf)
        table = INDEX_TABLES[leaf.kind]
        base = and_(table.c.res_type == leaf.rtype, table.c.param == leaf.code)
        if leaf.modifier == "missing":
            if len(leaf.values) != 1 or leaf.values[0] not in ("true", "false"):
                raise Invalid(f"'{leaf.code}:missing' takes true or false", expression=f"{leaf.code}:missing")
            present = select(table.c.rid).where(base)
            if leaf.values[0] == "false":
                return present
            return select(resource.c.rid).where(resource.c.res_type == leaf.rtype, resource.c.deleted == false(),
                                                resource.c.rid.not_in(present))
        if leaf.kind == "token" and leaf.modifier == "not":
            matching = select(table.c.rid).where(base, or_(*(self._token(v, None) for v in leaf.values)))
            return select(resource.c.rid).where(resource.c.res_type == leaf.rtype, resource.c.deleted == false(),
                                                resource.c.rid.not_in(matching))
        build: Any = {
            "string": self._string, "token": self._token, "reference": self._reference, "date": self._date,
            "number": self._number, "quantity": self._quantity, "uri": self._uri, "composite": self._composite,
        }[leaf.kind]
        return select(table.c.rid).where(base, or_(*(build(v, leaf) for v in leaf.values)))

    def _code_set(self, leaf: Leaf) -> Select[Any]:
        """``:in``, ``:below``, ``:above``: a code among the pairs the terminology gave; ``:not-in``: none is. One
        condition per code system, its codes in one bound JSON array: the statement's size does not grow with the
        value set's."""
        by_system: dict[str, list[str]] = {}
        for system, code in leaf.codes or ():
            by_system.setdefault(system, []).append(code)
        condition = or_(false(), *(and_(search_token.c.system == system, InList(search_token.c.code, codes))
                                   for system, codes in sorted(by_system.items())))
        matching = select(search_token.c.rid).where(search_token.c.res_type == leaf.rtype,
                                                    search_token.c.param == leaf.code, condition)
        if leaf.modifier != "not-in":
            return matching
        return select(resource.c.rid).where(resource.c.res_type == leaf.rtype, resource.c.deleted == false(),
                                            resource.c.rid.not_in(matching))

    def _list(self, leaf: Leaf) -> Select[Any]:
        ref = search_reference.alias()
        target = resource.alias()
        lists = resource.alias()
        named = select(lists.c.rid).where(lists.c.res_type == "List", lists.c.res_id.in_(leaf.values),
                                          lists.c.deleted == false())
        return (select(target.c.rid)
                .join(ref, and_(ref.c.target_type == target.c.res_type, ref.c.target_id == target.c.res_id))
                .where(ref.c.rid.in_(self._kept("List", named)), ref.c.param == "item",
                       target.c.res_type == leaf.rtype, target.c.deleted == false()))

    def _text(self, leaf: Leaf) -> Select[Any]:
        try:
            queries = tuple(parse_query(v) for v in leaf.values)
        except QueryError as exc:  # the parser let it through (a leaf built by hand): refuse it
            raise Invalid(f"'{leaf.code}' cannot be read: {exc}", expression=leaf.code) from None
        column = search_text.c.narrative if leaf.code == "_text" else search_text.c.content
        return (select(search_text.c.rid).join(resource, resource.c.rid == search_text.c.rid)
                .where(resource.c.res_type == leaf.rtype, TextMatch(column, queries)))

    def _tokens(self, leaf: Leaf, param: str, values: tuple[str, ...]) -> Select[Any]:
        return select(search_token.c.rid).where(search_token.c.res_type == leaf.rtype, search_token.c.param == param,
                                                or_(*(self._token(v, None) for v in values)))

    def _of_type(self, leaf: Leaf) -> Select[Any]:
        conditions = []
        for value in leaf.values:
            parts = split_values(value, "|")
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise Invalid(f"'{leaf.code}:of-type' takes type-system|type-code|value", expression=leaf.code)
            condition = search_token.c.code == f"{parts[1]}|{parts[2]}"[:TEXT_INDEX]
            if parts[0]:
                condition = and_(condition, search_token.c.system == parts[0])
            conditions.append(condition)
        return select(search_token.c.rid).where(search_token.c.res_type == leaf.rtype,
                                                search_token.c.param == f"{leaf.code}:of-type", or_(*conditions))

    # -- values ---------------------------------------------------------------------------------

    def _string(self, value: str, leaf: Leaf | None) -> ColumnElement[bool]:
        modifier = leaf.modifier if leaf else None
        if modifier == "exact":
            return search_string.c.exact == value[:TEXT_INDEX]
        norm = normalize(value)[:TEXT_INDEX]
        if not norm:
            raise Invalid(f"'{value}' has no letter or digit to search for", expression=leaf.code if leaf else None)
        if modifier == "contains":
            return search_string.c.value.contains(norm, autoescape=True)
        return search_string.c.value.startswith(norm, autoescape=True)

    def _token(self, value: str, leaf: Leaf | None, system_col: Any = None,
               code_col: Any = None) -> ColumnElement[bool]:
        system_col = search_token.c.system if system_col is None else system_col
        code_col = search_token.c.code if code_col is None else code_col
        if leaf is not None and leaf.modifier == "text":
            return search_token.c.text.startswith(normalize(value)[:TEXT_INDEX], autoescape=True)
        parts = split_values(value, "|")
        if len(parts) == 1:
            return code_col == parts[0]  # type: ignore[no-any-return]
        system, code = parts[0], "|".join(parts[1:])
        if system == "":
            return and_(system_col.is_(None), code_col == code)
        if code == "":
            return system_col == system  # type: ignore[no-any-return]
        return and_(system_col == system, code_col == code)

    def _reference(self, value: str, leaf: Leaf, type_col: Any = None, id_col: Any = None) -> ColumnElement[bool]:
        type_col = search_reference.c.target_type if type_col is None else type_col
        id_col = search_reference.c.target_id if id_col is None else id_col
        if leaf.modifier and leaf.modifier[0].isupper():  # :Type
            return and_(type_col == leaf.modifier, id_col == value)
        if value.startswith(self.fhir_base):
            value = value[len(self.fhir_base):]
        parts = value.split("/")
        if len(parts) == 1:
            return id_col == value  # type: ignore[no-any-return]
        if len(parts) in (2, 4) and parts[0][:1].isupper() and (len(parts) == 2 or parts[2] == "_history"):
            return and_(type_col == parts[0], id_col == parts[1])
        return search_reference.c.url == value[:TEXT_INDEX]

    def _date(self, value: str, leaf: Leaf, low: Any = None, high: Any = None) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        rng = date_range(text, self.tz)
        if rng is None or rng[1] is None:
            raise Invalid(f"'{text}' is not a valid date for '{leaf.code}'", expression=leaf.code)
        low = search_date.c.low if low is None else low
        high = search_date.c.high if high is None else high
        return range_condition(prefix, rng[0], rng[1], low, high, self.now)

    def _point(self, value: str, column: Any) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        rng = date_range(text, self.tz)
        if rng is None or rng[1] is None:
            raise Invalid(f"'{text}' is not a valid date for '_lastUpdated'", expression="_lastUpdated")
        return point_condition(prefix, rng[0], rng[1], column, self.now)

    def _number(self, value: str, leaf: Leaf) -> ColumnElement[bool]:
        prefix, text = _prefix(value)
        return number_condition(prefix, _decimal(text, leaf.code), search_quantity.c.value)

    def _quantity(self, value: str, leaf: Leaf, number_col: Any = None, system_col: Any = None,
                  code_col: Any = None) -> ColumnElement[bool]:
        number_col = search_quantity.c.value if number_col is None else number_col
        system_col = search_quantity.c.system if system_col is None else system_col
        code_col = search_quantity.c.code if code_col is None else code_col
        prefix, text = _prefix(value)
        parts = split_values(text, "|")
        if len(parts) not in (1, 3):
            raise Invalid(f"'{value}' is not number|system|code for '{leaf.code}'", expression=leaf.code)
        condition = number_condition(prefix, _decimal(parts[0], leaf.code), number_col)
        if len(parts) == 3:
            if parts[1]:
                condition = and_(condition, system_col == parts[1])
            if parts[2]:
                condition = and_(condition, code_col == parts[2])
        return condition

    def _uri(self, value: str, leaf: Leaf) -> ColumnElement[bool]:
        if leaf.modifier == "below":
            return search_uri.c.uri.startswith(value, autoescape=True)
        if leaf.modifier == "above":
            return search_uri.c.uri.in_([value[:i] for i in range(1, len(value) + 1)])
        return search_uri.c.uri == value[:TEXT_INDEX]

    def _composite(self, value: str, leaf: Leaf) -> ColumnElement[bool]:
        assert leaf.param is not None
        parts = split_values(value, "$")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise Invalid(f"'{leaf.code}' takes two values joined by $, e.g. system|code$value", expression=leaf.code)
        first, second = leaf.param.components
        c = search_composite.c
        inner = Leaf(leaf.rtype, leaf.code, first.kind, None, (parts[0],))
        if first.kind == "token":
            left = self._token(parts[0], None, c.c1_system, c.c1_code)
        else:
            left = self._reference(parts[0], inner, c.c1_system, c.c1_code)
        inner = Leaf(leaf.rtype, leaf.code, second.kind, None, (parts[1],))
        if second.kind == "token":
            right = self._token(parts[1], None, c.c2_system, c.c2_code)
        elif second.kind == "reference":
            right = self._reference(parts[1], inner, c.c2_system, c.c2_code)
        elif second.kind in ("quantity", "number"):
            right = self._quantity(parts[1], inner, c.c2_number, c.c2_system, c.c2_code)
        elif second.kind == "date":
            right = self._date(parts[1], inner, c.c2_start, c.c2_end)
        else:
            norm = normalize(parts[1])[:TEXT_INDEX]
            right = c.c2_text.startswith(norm, autoescape=True)
        return and_(left, right)


class InList(ColumnElement[bool]):
    """``column IN (the strings of one bound JSON array)``: a single bind parameter however many values (SQLite
    ``json_each``, PostgreSQL ``jsonb_array_elements_text``); elsewhere a plain ``IN``."""

    type = Boolean()
    inherit_cache = False  # the values are not part of a cache key

    def __init__(self, column: Any, values: list[str]) -> None:
        self.column = column
        self.values = sorted(set(values))
        self.array = bindparam(None, json.dumps(self.values), type_=String(), unique=True)


@compiles(InList)
def _in_list(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.values), **kw)


@compiles(InList, "sqlite")
def _in_list_sqlite(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    return (f"{compiler.process(element.column, **kw)} IN "
            f"(SELECT value FROM json_each({compiler.process(element.array, **kw)}))")


@compiles(InList, "postgresql")
def _in_list_postgresql(element: InList, compiler: SQLCompiler, **kw: Any) -> str:
    return (f"{compiler.process(element.column, **kw)} IN "
            f"(SELECT jsonb_array_elements_text(CAST({compiler.process(element.array, **kw)} AS jsonb)))")


class TextMatch(ColumnElement[Any]):
    """A full-text column matching any of ``queries``: ``@@`` a tsquery on PostgreSQL, FTS5 ``MATCH`` on SQLite."""

    inherit_cache = False
    type: Any = NullType()  # not Boolean: SQLite would compare it with 1, which FTS5 does not take

    def __init__(self, column: Any, queries: tuple[Query, ...]) -> None:
        self.column = column
        self.queries = queries


_FRENCH: ColumnElement[Any] = literal_column("'french'::regconfig")


def _tsquery(query: Query) -> Any:
    """A tsquery expression: each word through the french configuration (stem, stop words), phrases with
    ``phraseto_tsquery`` (words in that order, stop words counted), ``&&`` and ``||`` between them."""
    if isinstance(query, Term):
        build = func.phraseto_tsquery if query.phrase else func.plainto_tsquery
        return build(_FRENCH, literal(" ".join(query.words))).self_group()
    items = [_tsquery(item) for item in query.items]
    combined = items[0]
    for item in items[1:]:
        combined = combined.op("&&" if query.op == "AND" else "||")(item).self_group()
    return combined


@compiles(TextMatch, "postgresql")
def _text_match_pg(element: TextMatch, compiler: SQLCompiler, **kw: Any) -> str:
    queries = [_tsquery(q) for q in element.queries]
    combined = queries[0]
    for item in queries[1:]:
        combined = combined.op("||")(item).self_group()
    return compiler.process(element.column.op("@@")(combined), **kw)


@compiles(TextMatch)
def _text_match_fts5(element: TextMatch, compiler: SQLCompiler, **kw: Any) -> str:
    match = " OR ".join(fts5_query(q) for q in element.queries)
    return compiler.process(element.column.op("MATCH")(literal(match)), **kw)


def _cost(node: Node) -> int:
    """A rough rank of how many rows a criterion selects (lower first), to pick the driving one."""
    if isinstance(node, Leaf):
        if node.modifier in ("not", "missing", "not-in"):
            return 5
        if node.kind in ("id", "token", "reference", "uri", "composite", "list"):
            return 0 if node.modifier != "text" else 1
        if node.kind in ("string", "text"):
            return 1
        return 2
    return 3


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2:3].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _decimal(text: str, code: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise Invalid(f"'{text}' is not a number for '{code}'", expression=code) from None
    if not number.is_finite() or abs(number) >= Decimal("1e24"):
        raise Invalid(f"'{text}' is not a number this server can compare for '{code}'", expression=code)
    return number


def range_condition(prefix: str, slo: datetime, shi: datetime, low: Any, high: Any,
                    now: datetime) -> ColumnElement[bool]:
    """A target range [low, high) against the search range [slo, shi).

    Open ends are stored as far-away bounds (``MIN_INSTANT``, ``MAX_INSTANT``), so they compare
    like any date: a Period without end is after every date and never within a bounded range.
    """
    within = and_(low >= slo, high <= shi)
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not_(within)
    if prefix == "gt":
        return high > shi  # type: ignore[no-any-return]
    if prefix == "ge":
        return high > slo  # type: ignore[no-any-return]
    if prefix == "lt":
        return low < slo  # type: ignore[no-any-return]
    if prefix == "le":
        return low < shi  # type: ignore[no-any-return]
    if prefix == "sa":
        return low >= shi  # type: ignore[no-any-return]
    if prefix == "eb":
        return high <= slo  # type: ignore[no-any-return]
    margin = max(abs(now - slo) / 10, timedelta(days=1))  # ap: 10 % of the distance to now, at least a day
    return and_(high > slo - margin, low < shi + margin)


def point_condition(prefix: str, slo: datetime, shi: datetime, column: Any, now: datetime) -> ColumnElement[bool]:
    """An instant column (``meta.lastUpdated``) against the search range [slo, shi)."""
    if prefix == "eq":
        return and_(column >= slo, column < shi)
    if prefix == "ne":
        return or_(column < slo, column >= shi)
    if prefix in ("gt", "sa"):
        return column >= shi  # type: ignore[no-any-return]
    if prefix == "ge":
        return column >= slo  # type: ignore[no-any-return]
    if prefix in ("lt", "eb"):
        return column < slo  # type: ignore[no-any-return]
    if prefix == "le":
        return column < shi  # type: ignore[no-any-return]
    margin = max(abs(now - slo) / 10, timedelta(days=1))
    return and_(column >= slo - margin, column < shi + margin)


def number_condition(prefix: str, number: Decimal, column: Any) -> ColumnElement[bool]:
    """Numbers: ``eq`` within the precision of the search value; ``ap`` within 10 %."""
    lo, hi = precision_range(number)
    if prefix == "eq":
        return and_(column >= lo, column < hi)
    if prefix == "ne":
        return or_(column < lo, column >= hi)
    if prefix in ("gt", "sa"):
        return column > number  # type: ignore[no-any-return]
    if prefix in ("lt", "eb"):
        return column < number  # type: ignore[no-any-return]
    if prefix == "ge":
        return column >= number  # type: ignore[no-any-return]
    if prefix == "le":
        return column <= number  # type: ignore[no-any-return]
    margin = abs(number) / 10
    return and_(column >= number - margin, column <= number + margin)
