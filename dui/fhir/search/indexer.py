"""Resource -> search index rows, one list per index table.

Each indexed search parameter's FHIRPath expression is evaluated on the resource and every value is
turned into rows following the R4 search rules (http://hl7.org/fhir/R4/search.html):

- string: the value, or the parts of a HumanName / Address, normalised (``normalize``) and as written;
- token: (system, code) of a Coding, CodeableConcept, Identifier, ContactPoint, code or boolean,
  with the normalised display / text for ``:text``;
- reference: the target's type and id for local references (relative, or absolute on this server),
  the URL for other absolute references and canonicals; ``.where(resolve() is T)`` keeps type T only;
- date: the [low, high) instant range a date, dateTime, instant, Period or Timing covers; a value
  without a time zone is read in the service's time zone (``DUI_TIMEZONE``);
- quantity / number: the value, its implicit precision range, and system + code (or unit);
- uri: the URI as written.

Identifiers that must be unique in the store (the resident's INS) are returned separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from dui.fhir.search.fulltext import text_row
from dui.fhir.search.normalize import normalize
from dui.fhir.search.parameters import Extraction, SearchParameter, SearchParameterRegistry
from dui.fhir.search.paths import Evaluator, compile_path
from dui.fhir.tables import TEXT_INDEX
from ins import ins_kind

_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
QUANTITY_LIMIT = Decimal("1e24")  # beyond Numeric(36, 12)
# Open ends of date ranges (a Period without end...). Bounds, not NULLs: a plain comparison lets the
# planner estimate and index it, where "IS NULL OR >" does not.
MIN_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 30, tzinfo=UTC)
_MISSING: Any = object()
# executemany takes its columns from the first row: every composite row carries them all.
_EMPTY_COMPOSITE = {name: None for name in ("c1_system", "c1_code", "c2_system", "c2_code", "c2_number", "c2_low",
                                            "c2_high", "c2_start", "c2_end", "c2_text")}


@dataclass
class IndexRows:
    """Rows to insert for one resource version."""

    string: list[dict[str, Any]] = field(default_factory=list)
    token: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    date: list[dict[str, Any]] = field(default_factory=list)
    quantity: list[dict[str, Any]] = field(default_factory=list)
    uri: list[dict[str, Any]] = field(default_factory=list)
    composite: list[dict[str, Any]] = field(default_factory=list)
    unique: list[dict[str, Any]] = field(default_factory=list)
    text: dict[str, Any] | None = None  # the ``search_text`` row (``_text``, ``_content``), when asked for

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {"string": self.string, "token": self.token, "reference": self.reference,
                "date": self.date, "quantity": self.quantity, "uri": self.uri, "composite": self.composite}


class Indexer:
    """Computes index rows; holds no state but its configuration."""

    def __init__(self, registry: SearchParameterRegistry, fhir_base: str, timezone: str = "Europe/Paris") -> None:
        self.registry = registry
        self.fhir_base = fhir_base.rstrip("/") + "/"
        self.tz = ZoneInfo(timezone)
        self._components: dict[tuple[str, str], Evaluator | None] = {}

    def rows(self, rid: int, rtype: str, resource: dict[str, Any], *, text: bool = False) -> IndexRows:
        """The index rows of a resource; with ``text``, its full-text row too (what the store writes)."""
        out = IndexRows()
        memo: dict[tuple[int, str], list[Any]] = {}  # component values per (base value, expression)
        for param in self.registry.indexed(rtype):
            base = {"rid": rid, "res_type": rtype, "param": param.code}
            for extraction in param.extractions:
                if extraction.needs is not None and extraction.needs.isdisjoint(resource):
                    continue
                values = extraction.evaluate(resource)
                if param.type == "composite":
                    self._composite(out, param, extraction, base, values, memo)
                    continue
                for value in values:
                    self._add(out, param, extraction, base, value)
        if rtype == "Patient":
            out.unique = [{"rid": rid, "res_type": rtype, **key} for key in unique_identifiers(resource)]
        if text and self.registry.full_text:
            out.text = text_row(rid, resource)
        return out

    def references(self, rtype: str, resource: dict[str, Any],
                   codes: tuple[str, ...]) -> list[tuple[str, str | None, str | None]]:
        """(parameter, target type, target id) of the references the parameters ``codes`` index for ``resource``:
        the rows ``rows`` would write for them, without evaluating the others."""
        found: list[tuple[str, str | None, str | None]] = []
        for code in codes:
            param = self.registry.get(rtype, code)
            if param is None or param.type != "reference":
                continue
            for extraction in param.extractions:
                if extraction.needs is not None and extraction.needs.isdisjoint(resource):
                    continue
                for value in extraction.evaluate(resource):
                    found += [(code, t, i) for t, i, _ in self.reference_values(value, extraction.target)]
        return found

    def _add(self, out: IndexRows, param: SearchParameter, ex: Extraction, base: dict[str, Any],
             value: Any) -> None:
        kind = param.type
        if kind == "string":
            for text in string_values(value):
                norm = normalize(text)[:TEXT_INDEX]
                if norm:
                    out.string.append({**base, "value": norm, "exact": text[:TEXT_INDEX]})
        elif kind == "token":
            for system, code, display in token_values(value, ex.value_types, ex.code_system):
                out.token.append({**base, "system": _cut(system), "code": _cut(code), "text": _cut(display)})
            for system, code in of_type_values(value):
                out.token.append({**base, "param": f"{param.code}:of-type", "system": _cut(system),
                                  "code": _cut(code), "text": None})
        elif kind == "reference":
            for target_type, target_id, url in self.reference_values(value, ex.target):
                out.reference.append({**base, "target_type": target_type, "target_id": target_id, "url": _cut(url)})
            identifier = value.get("identifier") if isinstance(value, dict) else None
            if isinstance(identifier, dict):
                for system, code, _ in token_values(identifier, ("Identifier",)):
                    out.token.append({**base, "param": f"{param.code}:identifier", "system": _cut(system),
                                      "code": _cut(code), "text": None})
        elif kind == "date":
            for low, high in self.date_ranges(value):
                out.date.append({**base, "low": low, "high": high})
        elif kind in ("quantity", "number"):
            for number, system, code in quantity_values(value):
                lower, upper = precision_range(number)
                out.quantity.append({**base, "value": number, "low": lower, "high": upper,
                                     "system": _cut(system), "code": _cut(code)})
        elif kind == "uri" and isinstance(value, str):
            out.uri.append({**base, "uri": value[:TEXT_INDEX]})

    # -- composites -----------------------------------------------------------------------------

    def _composite(self, out: IndexRows, param: SearchParameter, ex: Extraction, base: dict[str, Any],
                   items: list[Any], memo: dict[tuple[int, str], list[Any]]) -> None:
        """One row per pair of values of the two components, taken from the same base value."""
        first, second = param.components
        for item in items:
            if not isinstance(item, dict) or ex.root is None:
                continue
            right_values = self._component_values(second.expression, ex.root, item, memo)
            if not right_values:
                continue
            lefts = self._first_component(first.kind, self._component_values(first.expression, ex.root, item, memo))
            rights = self._second_component(second.kind, right_values)
            out.composite.extend({**base, **_EMPTY_COMPOSITE, **left, **right} for left in lefts for right in rights)

    def _component_values(self, expression: str, root: str, item: dict[str, Any],
                          memo: dict[tuple[int, str], list[Any]]) -> list[Any]:
        key = (id(item), expression)
        if key not in memo:
            compiled = self._components.get((expression, root), _MISSING)
            if compiled is _MISSING:
                compiled = self._components[(expression, root)] = compile_path(self.registry.defs, expression, root)
            memo[key] = compiled(item) if compiled is not None else []
        return memo[key]

    def _first_component(self, kind: str, values: list[Any]) -> list[dict[str, Any]]:
        if kind == "token":
            pairs = [(s, c) for v in values for s, c, _ in token_values(v, ())]
        else:  # reference
            pairs = [(t, i) for v in values for t, i, _ in self.reference_values(v, None) if i]
        return [{"c1_system": _cut(s), "c1_code": _cut(c)} for s, c in pairs]

    def _second_component(self, kind: str, values: list[Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for value in values:
            if kind == "token":
                rows += [{"c2_system": _cut(s), "c2_code": _cut(c)} for s, c, _ in token_values(value, ())]
            elif kind == "reference":
                rows += [{"c2_system": t, "c2_code": i} for t, i, _ in self.reference_values(value, None) if i]
            elif kind in ("quantity", "number"):
                for number, system, code in quantity_values(value):
                    lower, upper = precision_range(number)
                    rows.append({"c2_number": number, "c2_low": lower, "c2_high": upper,
                                 "c2_system": _cut(system), "c2_code": _cut(code)})
            elif kind == "date":
                rows += [{"c2_start": low, "c2_end": high} for low, high in self.date_ranges(value)]
            elif kind == "string":
                rows += [{"c2_text": normalize(t)[:TEXT_INDEX]} for t in string_values(value) if normalize(t)]
        return rows

    # -- references -----------------------------------------------------------------------------

    def reference_values(self, value: Any, target: str | None) -> list[tuple[str | None, str | None, str | None]]:
        if isinstance(value, str):  # canonical, uri
            return [] if target else [(None, None, value)]
        if not isinstance(value, dict):
            return []
        ref = value.get("reference")
        if not isinstance(ref, str) or ref.startswith("#"):
            return []
        parsed = self.parse_reference(ref)
        if parsed is None:
            return [] if target else [(None, None, ref)]
        rtype, rid = parsed
        if target and rtype != target:
            return []
        return [(rtype, rid, None)]

    def parse_reference(self, ref: str) -> tuple[str, str] | None:
        """(type, id) of a reference to this server, relative or absolute; None otherwise."""
        if ref.startswith(self.fhir_base):
            ref = ref[len(self.fhir_base):]
        m = _REFERENCE.fullmatch(ref)
        return (m.group(1), m.group(2)) if m else None

    # -- dates ----------------------------------------------------------------------------------

    def date_ranges(self, value: Any) -> list[tuple[datetime, datetime]]:
        if isinstance(value, str):
            r = self.date_range(value)
            return [(r[0], r[1] or MAX_INSTANT)] if r else []
        if not isinstance(value, dict):
            return []
        if "start" in value or "end" in value:  # Period
            start = self.date_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = self.date_range(value["end"]) if isinstance(value.get("end"), str) else None
            return [(start[0] if start else MIN_INSTANT, end[1] if end and end[1] else MAX_INSTANT)]
        ranges: list[tuple[datetime, datetime]] = []
        for event in value.get("event", []) if isinstance(value.get("event"), list) else []:
            r = self.date_range(event) if isinstance(event, str) else None
            if r:
                ranges.append((r[0], r[1] or MAX_INSTANT))
        bounds = (value.get("repeat") or {}).get("boundsPeriod") if isinstance(value.get("repeat"), dict) else None
        if isinstance(bounds, dict):
            ranges.extend(self.date_ranges(bounds))
        return ranges

    def date_range(self, text: str) -> tuple[datetime, datetime | None] | None:
        """The [low, high) range of a FHIR date, dateTime or instant; None if unreadable."""
        return date_range(text, self.tz)


def date_range(text: str, tz: ZoneInfo) -> tuple[datetime, datetime | None] | None:
    """The [low, high) UTC range covered by a FHIR date/dateTime/instant string."""
    m = _DATE.fullmatch(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        if hour is None:
            start = datetime(int(year), int(month or 1), int(day or 1), tzinfo=tz)
            if day:
                end = start + timedelta(days=1)
            elif month:
                end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
            else:
                end = start.replace(year=start.year + 1)
            return _utc(start), _utc(end)
        zone_info: Any = tz
        if zone:
            zone_info = UTC if zone == "Z" else datetime.strptime(zone, "%z").tzinfo
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        start = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro,
                         tzinfo=zone_info)
        if fraction:
            step = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
        else:
            step = timedelta(seconds=1) if second else timedelta(minutes=1)
        return _utc(start), _utc(start + step)
    except (ValueError, OverflowError):
        return None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# -- strings and tokens ---------------------------------------------------------------------------

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def string_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    parts = _NAME_PARTS if ("family" in value or "given" in value or "prefix" in value) else _ADDRESS_PARTS
    out: list[str] = []
    for key in parts:
        item = value.get(key)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(x for x in item if isinstance(x, str))
    return out


def token_values(value: Any, types: tuple[str, ...],
                 code_system: str | None = None) -> list[tuple[str | None, str | None, str | None]]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [(code_system, value, None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or types == ("CodeableConcept",) or (set(value) == {"text"}):
        text = value.get("text") if isinstance(value.get("text"), str) else None
        codings = [c for c in value.get("coding", []) if isinstance(c, dict)]
        out = [(c.get("system"), c.get("code"), _norm(c.get("display") or text)) for c in codings]
        if not out and text:
            out.append((None, None, _norm(text)))
        return out
    if "value" in value and isinstance(value.get("value"), str):
        system = value.get("system")
        if "ContactPoint" in types or (system in _CONTACT_SYSTEMS and "Identifier" not in types):
            return [(system, value["value"], None)]
        type_text = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
        return [(system, value["value"], _norm(type_text))]
    if "code" in value or "system" in value:  # Coding
        return [(value.get("system"), value.get("code"), _norm(value.get("display")))]
    return []


def of_type_values(value: Any) -> list[tuple[str | None, str]]:
    """``identifier:of-type`` rows of an Identifier: (type system, "type code|value")."""
    if not isinstance(value, dict) or not isinstance(value.get("value"), str):
        return []
    if not isinstance(value.get("type"), dict):
        return []
    codings = [c for c in value["type"].get("coding", []) if isinstance(c, dict) and isinstance(c.get("code"), str)]
    return [(c.get("system"), f"{c['code']}|{value['value']}") for c in codings]


def _norm(text: Any) -> str | None:
    return normalize(text) if isinstance(text, str) and text else None


def _cut(value: Any) -> str | None:
    return value[:TEXT_INDEX] if isinstance(value, str) else None


# -- quantities -----------------------------------------------------------------------------------


def quantity_values(value: Any) -> list[tuple[Decimal, str | None, str | None]]:
    """(value, system, code or unit) of a Quantity, or (value, None, None) of a plain number."""
    if isinstance(value, dict):
        raw, system, code = value.get("value"), value.get("system"), value.get("code") or value.get("unit")
    else:
        raw, system, code = value, None, None
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
        return []
    number = Decimal(raw)
    return [(number, system, code)] if abs(number) < QUANTITY_LIMIT else []


def precision_range(number: Decimal) -> tuple[Decimal, Decimal]:
    """The range a decimal's written precision implies: 37.5 covers [37.45, 37.55)."""
    try:
        exponent = number.as_tuple().exponent
        half = Decimal(5).scaleb(int(exponent) - 1)
    except (InvalidOperation, TypeError, ValueError):
        return number, number
    return number - half, number + half


# -- unique identifiers ---------------------------------------------------------------------------


def unique_identifiers(resource: dict[str, Any]) -> list[dict[str, str]]:
    """The identifiers of a Patient that the store keeps unique: its INS (NIR, NIA, TEST, DEMO)."""
    out = []
    seen = set()
    for ident in resource.get("identifier", []):
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        type_: dict[str, Any] = ident["type"] if isinstance(ident.get("type"), dict) else {}
        codings = [(c.get("system"), c.get("code")) for c in type_.get("coding", []) if isinstance(c, dict)]
        kind = ins_kind(ident.get("system"), codings)
        if kind is not None and (kind.system, ident["value"]) not in seen:
            seen.add((kind.system, ident["value"]))
            out.append({"system": kind.system, "value": ident["value"][:TEXT_INDEX]})
    return out
