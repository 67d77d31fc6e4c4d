"""Ordering and paging: ``_sort`` keys and keyset cursors (http://hl7.org/fhir/R4/search.html#sort).

Results are ordered by the sort keys, then by row id, with missing values last in either
direction. A page is "the rows after (or before) this position", the position being the keys and
row id of the last (or first) row of the page before: unlike an offset, a position does not move
when others insert or delete, so following ``next`` links never repeats or skips a result that was
there all along.

A sort key of a parameter is, per resource, the smallest indexed value (largest when descending);
dates sort on the start of their range (end when descending), strings on their normalised form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select

from dui.errors import Invalid
from dui.fhir.search.plan import SearchPlan, SortKey
from dui.fhir.search.where import Matches
from dui.fhir.tables import INDEX_TABLES, resource

_VALUE_COLUMN = {"string": "value", "token": "code", "number": "value", "quantity": "value", "uri": "uri",
                 "reference": "target_id"}


@dataclass(frozen=True)
class Page:
    rids: list[int]
    next_cursor: dict[str, Any] | None
    previous_cursor: dict[str, Any] | None


def key_expression(plan: SearchPlan, key: SortKey, rid: Any) -> Any:
    """The sort value of a key, for the row whose id is the column ``rid``."""
    if key.kind == "id":
        return resource.c.res_id
    if key.kind == "lastUpdated":
        return resource.c.last_updated
    table = INDEX_TABLES[key.kind]
    if key.kind == "date":
        column = table.c.high if key.descending else table.c.low
    else:
        column = table.c[_VALUE_COLUMN[key.kind]]
    aggregate = func.max(column) if key.descending else func.min(column)
    return (select(aggregate)
            .where(table.c.rid == rid, table.c.param == key.code, table.c.res_type == plan.resource_type)
            .scalar_subquery())


def page_query(plan: SearchPlan, matches: Matches, limit: int,
               with_total: bool = False) -> tuple[Select[Any], bool]:
    """The query of one page (``limit`` rows) and whether it reads backwards (a previous link).

    Rows are (rid, sort keys...) and, ``with_total``, the count of all matches as a last column (a
    window count: one round trip for the first page and its total).
    """
    keys = plan.sort
    inner = matches.select(matches.rid.label("rid"),
                           *(key_expression(plan, k, matches.rid).label(f"k{i}") for i, k in enumerate(keys)))
    sub = inner.subquery("matches")
    columns = [sub.c[f"k{i}"] for i in range(len(keys))]
    cursor = plan.cursor
    backwards = bool(cursor and cursor.get("d") == "p")
    extra = [func.count().over().label("total")] if with_total else []
    stmt = select(sub.c.rid, *columns, *extra)
    if cursor is not None:
        values = [_decode(k, v) for k, v in zip(keys, cursor.get("k", []), strict=False)]
        if len(values) != len(keys):
            raise Invalid("_cursor does not belong to this search (follow the Bundle's links)", expression="_cursor")
        position = _before if backwards else _after
        stmt = stmt.where(position(keys, columns, values, sub.c.rid, int(cursor["r"])))
    order = []
    for key, column in zip(keys, columns, strict=True):
        ascending = key.descending == backwards  # reading backwards flips every direction
        order += [column.is_(None) if not backwards else column.is_not(None),
                  column.asc() if ascending else column.desc()]
    order.append(sub.c.rid.desc() if backwards else sub.c.rid.asc())
    return stmt.order_by(*order).limit(limit), backwards


def _after(keys: list[SortKey], columns: list[Any], values: list[Any], rid: Any, last: int) -> ColumnElement[bool]:
    """Rows strictly after the position (keys..., rid), missing values last."""
    alternatives = []
    for i in range(len(keys) + 1):
        equal = [_same(columns[j], values[j]) for j in range(i)]
        if i == len(keys):
            alternatives.append(and_(*equal, rid > last))
            continue
        column, value = columns[i], values[i]
        if value is None:
            continue  # nothing sorts after a missing value but other missing values
        later = column > value if not keys[i].descending else column < value
        alternatives.append(and_(*equal, or_(column.is_(None), later)))
    return or_(*alternatives) if alternatives else false()


def _before(keys: list[SortKey], columns: list[Any], values: list[Any], rid: Any, first: int) -> ColumnElement[bool]:
    """Rows strictly before the position."""
    alternatives = []
    for i in range(len(keys) + 1):
        equal = [_same(columns[j], values[j]) for j in range(i)]
        if i == len(keys):
            alternatives.append(and_(*equal, rid < first))
            continue
        column, value = columns[i], values[i]
        if value is None:
            alternatives.append(and_(*equal, column.is_not(None)))
            continue
        earlier = column < value if not keys[i].descending else column > value
        alternatives.append(and_(*equal, column.is_not(None), earlier))
    return or_(*alternatives) if alternatives else false()


def _same(column: Any, value: Any) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value  # type: ignore[no-any-return]


def position(keys: list[SortKey], row: Any, direction: str) -> dict[str, Any]:
    """The cursor of a row: its sort values and row id, and the direction to read from it."""
    return {"k": [_encode(row[i + 1]) for i in range(len(keys))], "r": int(row[0]), "d": direction}


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _decode(key: SortKey, value: Any) -> Any:
    if value is None:
        return None
    try:
        if key.kind in ("date", "lastUpdated"):
            return datetime.fromisoformat(value)
        if key.kind in ("number", "quantity"):
            return Decimal(value)
    except (TypeError, ValueError, ArithmeticError):
        raise Invalid("_cursor does not belong to this search", expression="_cursor") from None
    if not isinstance(value, str):
        raise Invalid("_cursor does not belong to this search", expression="_cursor")
    return value
