"""FHIR JSON in and out, without losing what the client wrote.

FHIR decimals carry their precision in their text (``37.50`` is not ``37.5``:
http://hl7.org/fhir/R4/datatypes.html#decimal), so numbers with a fraction or an exponent are read
as ``FhirDecimal``, a ``Decimal`` that remembers its text, and written back verbatim. Integers stay
``int``. Everything else goes out through orjson.

Parsing refuses what FHIR JSON forbids and the Python parsers accept (http://hl7.org/fhir/R4/json.html):
duplicate keys, ``NaN``/``Infinity``, a byte-order mark, nesting deeper than the configured limit; and, in what a
client sends, numbers no IEEE 754 double holds (``1e999``, ``1e-999``): every FHIR consumer reads decimals as
doubles, the search index among them, so such a number would be stored as one value and read back as another
(or as infinity). Stored bodies are read as they are.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from dui.errors import Invalid, TooLarge


class FhirDecimal(Decimal):
    """A decimal that serialises back to the exact text it was read from."""

    __slots__ = ("text",)
    text: str

    @classmethod
    def from_text(cls, text: str) -> FhirDecimal:
        try:
            value = cls(text)
        except ArithmeticError:  # an exponent beyond what Decimal represents
            raise ValueError(f"the number {text[:40]} is outside the range of a double") from None
        value.text = text
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number in FHIR")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate property {key!r}")
            seen.add(key)
    return obj


def _integer(text: str) -> int | FhirDecimal:
    # Beyond 64 bits orjson cannot write an int back; such numbers can only be FHIR decimals anyway.
    return int(text) if len(text) < 19 else FhirDecimal.from_text(text)


DOUBLE_MAX = Decimal("1.7976931348623157e308")
DOUBLE_MIN_NORMAL = Decimal("2.2250738585072014e-308")


def _double(number: FhirDecimal) -> FhirDecimal:
    if number.is_zero():
        return number
    exponent, magnitude = number.adjusted(), number.copy_abs()  # no arithmetic context: no overflow of its own
    if exponent > 308 or exponent < -308 or magnitude > DOUBLE_MAX or magnitude < DOUBLE_MIN_NORMAL:
        raise ValueError(f"the number {number.text[:40]} is outside the range of a double (magnitudes from "
                         "2.2e-308 to 1.8e308, or 0)")
    return number


_DECODER = json.JSONDecoder(  # what a client sends
    parse_float=lambda text: _double(FhirDecimal.from_text(text)),
    parse_int=lambda text: _integer(text) if len(text) < 19 else _double(FhirDecimal.from_text(text)),
    parse_constant=_reject_constant,
    object_pairs_hook=_no_duplicates,
)
_STORED = json.JSONDecoder(  # what the store holds, read as it was written
    parse_float=FhirDecimal.from_text,
    parse_int=_integer,
    parse_constant=_reject_constant,
    object_pairs_hook=_no_duplicates,
)


def parse(body: bytes | str, max_depth: int = 100, *, stored: bool = False) -> Any:
    """Parse a JSON document; raise ``Invalid`` (400) or ``TooLarge`` (413) with a precise message. ``stored``:
    a body the store holds (numbers are not checked again)."""
    if isinstance(body, bytes):
        if body.startswith(b"\xef\xbb\xbf"):
            raise Invalid("The body starts with a byte-order mark, which JSON does not allow")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid(f"The body is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = body
    if not text.strip():
        raise Invalid("The request body is empty; a JSON document was expected")
    try:
        value, end = (_STORED if stored else _DECODER).raw_decode(text, _skip_space(text, 0))
    except json.JSONDecodeError as exc:
        raise Invalid(f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise Invalid(f"The body is not valid FHIR JSON: {exc}") from None
    except RecursionError:
        raise TooLarge(f"The JSON body is nested deeper than {max_depth} levels") from None
    if _skip_space(text, end) != len(text):
        raise Invalid("The body is not valid JSON: extra data after the document")
    check_depth(value, max_depth)
    return value


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def check_depth(value: Any, max_depth: int) -> None:
    """Raise ``TooLarge`` if ``value`` nests objects and arrays deeper than ``max_depth``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise TooLarge(f"The JSON body is nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))


def fragment_default(value: Any) -> Any:
    """orjson ``default`` writing decimals verbatim (for callers that pass their own options)."""
    return _default(value)


def _default(value: Any) -> Any:
    if isinstance(value, FhirDecimal):
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("a FHIR decimal must be finite")
        text = str(value)
        if "E" in text or "e" in text:
            text = format(value, "f")
        return orjson.Fragment(text)
    raise TypeError(f"cannot write {type(value).__name__} as FHIR JSON")


def dump(value: Any) -> bytes:
    """Serialise to compact JSON bytes; decimals keep their text, stored bodies embed as-is."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError as exc:
        raise Invalid(f"The resource cannot be written as JSON: {exc}") from None


def raw(body: bytes) -> orjson.Fragment:
    """Embed already-serialised JSON (a stored resource) in a document without parsing it."""
    return orjson.Fragment(body)
