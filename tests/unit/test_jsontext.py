"""FHIR JSON in and out without losing the client's text (http://hl7.org/fhir/R4/json.html)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dui.errors import Invalid, TooLarge
from dui.fhir import jsontext


@pytest.mark.parametrize("text", ["37.50", "0.0000001", "1e3", "-0.0", "1E-7", "3.14159265358979323846264338327950288"])
def test_decimals_round_trip_verbatim(text: str) -> None:
    parsed = jsontext.parse(f'{{"v": {text}}}')
    assert isinstance(parsed["v"], Decimal)
    assert jsontext.dump(parsed) == f'{{"v":{text}}}'.encode()


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_text_survives(value: Decimal) -> None:
    text = str(value)
    document = f'{{"v": {text}}}'
    try:
        parsed = jsontext.parse(document)
    except Invalid:
        return  # Python's str() may write forms JSON does not accept (e.g. "NaN" excluded above; "1E+2" is fine)
    assert jsontext.dump(parsed) == f'{{"v":{text}}}'.encode()


def test_integers_stay_integers() -> None:
    assert jsontext.parse('{"v": 12}') == {"v": 12}
    assert type(jsontext.parse('{"v": 12}')["v"]) is int


@pytest.mark.parametrize(("text", "error"), [
    ('{"a": 1, "a": 2}', "duplicate property 'a'"),
    ('{"a": NaN}', "NaN"),
    ('{"a": Infinity}', "Infinity"),
    ("", "empty"),
    ('{"a": 1} {"b": 2}', "extra data"),
    ('{"a": }', "not valid JSON"),
])
def test_refusals(text: str, error: str) -> None:
    with pytest.raises(Invalid, match=error):
        jsontext.parse(text)


def test_depth_limit() -> None:
    jsontext.parse("[" * 10 + "]" * 10, max_depth=10)
    with pytest.raises(TooLarge):
        jsontext.parse("[" * 11 + "]" * 11, max_depth=10)
    with pytest.raises(TooLarge):
        jsontext.parse("[" * 100_000 + "]" * 100_000)


def test_stored_bodies_embed_without_parsing() -> None:
    stored = b'{"resourceType":"Patient","id":"a","x":1.50}'
    assert jsontext.dump({"entry": [{"resource": jsontext.raw(stored)}]}) == \
        b'{"entry":[{"resource":' + stored + b"}]}"


def test_lone_surrogate_is_refused_when_written() -> None:
    parsed = jsontext.parse('{"a": "\\ud800"}')
    with pytest.raises(Invalid):
        jsontext.dump(parsed)
