"""FHIRPath ``matches()`` and ``replaceMatches()`` on RE2: results on FHIR examples, refusals, bounded cost, and
the bounded cache of clients' expressions."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dui.fhir import fhirpath, regex
from dui.fhir.fhirpath import compile_client, compile_fhirpath
from dui.fhir.regex import UnsupportedPattern

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "232032A00400570"}],
    "name": [{"family": "Lefèvre", "given": ["Hélène", "Marie"]}, {"family": "Le Gall", "given": ["Anne"]}],
    "telecom": [{"system": "phone", "value": "0472000102"}, {"system": "email", "value": "h.lefevre@example.org"}],
    "address": [{"line": ["12 allée des Tilleuls", "Bâtiment B"], "city": "Lyon", "postalCode": "69003"}],
    "birthDate": "1932-03-14",
}
NOTE = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
        "note": [{"text": "first line\nsecond line"}]}


def run(expression: str, resource: dict[str, Any] = PATIENT) -> list[Any]:
    return compile_client(expression)(resource)


@pytest.mark.parametrize(("expression", "expected"), [
    ("Patient.name.family.where($this.matches('^Le')).count()", [2]),
    ("Patient.name.family.where($this.matches('^Le$')).count()", [0]),
    ("Patient.identifier.value.matches('^[0-9]{5}(2[AB]|[0-9]{2})[0-9]{8}$')", [True]),
    ("Patient.birthDate.toString().matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$')", [True]),
    ("Patient.telecom.where(system = 'email').value.matches('@example\\\\.org$')", [True]),
    ("Patient.address.postalCode.matches('^75')", [False]),
    ("Patient.name.given.where($this.matches('é')).count()", [1]),  # non-ASCII: UTF-8 on both sides
    ("Patient.address.line.first().matches('allée')", [True]),
    ("Patient.gender.matches('x')", []),  # empty input: empty result
])
def test_matches_on_fhir_values(expression: str, expected: list[Any]) -> None:
    assert run(expression) == expected


def test_matches_dot_matches_new_lines_as_fhirpathpy() -> None:
    assert run("Observation.note.text.matches('line.second')", NOTE) == [True]


@pytest.mark.parametrize(("expression", "expected"), [
    ("Patient.telecom.where(system = 'phone').value.replaceMatches('([0-9]{2})', '$1 ')", ["04 72 00 01 02 "]),
    ("Patient.identifier.value.replaceMatches('^([0-9]{5})([0-9A-B]{2})([0-9]{8})$', '$3-$2-$1')",
     ["00400570-2A-23203"]),
    ("Patient.name.first().family.replaceMatches('è', 'e')", ["Lefevre"]),
    ("Patient.address.postalCode.replaceMatches('^69', 'RH-')", ["RH-003"]),
    ("Patient.birthDate.toString().replaceMatches('(x)?-', '$1/')", ["1932/03/14"]),  # unmatched group: empty
    ("Patient.address.city.replaceMatches('y', '[$0]')", ["L[y]on"]),
])
def test_replace_matches_on_fhir_values(expression: str, expected: list[Any]) -> None:
    assert run(expression) == expected


def test_replace_matches_single_line_dot_as_fhirpathpy() -> None:
    """fhirpathpy's replaceMatches has no DOTALL: '.' stops at a new line."""
    assert run("Observation.note.text.replaceMatches('line.second', 'X')", NOTE) == ["first line\nsecond line"]
    assert run("Observation.note.text.replaceMatches('^first', 'First')", NOTE) == ["First line\nsecond line"]


def test_redos_pattern_answers_at_once() -> None:
    started = time.perf_counter()
    assert compile_client("'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches('^(a+)+$')")({}) == [False]
    assert compile_client(f"'{'a' * 3000}!'.replaceMatches('(a|aa)+$', 'b')")({}) == ["a" * 3000 + "!"]
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "a(?=b)", "a(?!b)", "(?<=a)b", "(?<!a)b", "a++", "(?>a)"])
def test_patterns_re2_cannot_run_are_refused_naming_them(pattern: str) -> None:
    for expression in (f"Patient.name.family.first().matches('{pattern}')",
                       f"Patient.name.family.first().replaceMatches('{pattern}', 'x')"):
        with pytest.raises(UnsupportedPattern) as refused:
            run(expression)
        assert refused.value.status == 400
        assert pattern.replace("\\\\", "\\") in refused.value.message.replace("\\\\", "\\")


def test_costly_patterns_are_refused_before_running() -> None:
    with pytest.raises(UnsupportedPattern) as long:
        regex.matches(["x"], "a" * (regex.MAX_PATTERN_CHARS + 1))
    assert long.value.code == "too-costly"
    started = time.perf_counter()
    with pytest.raises(UnsupportedPattern) as heavy:  # 8,044 instructions × 1 MB: ~9 s in one C call
        regex.matches(["ab" * 500_000], "(.{1,50}){1,20}c")
    assert heavy.value.code == "too-costly" and time.perf_counter() - started < 0.5
    assert regex.matches(["ab" * 500_000], "c$") is False  # a small program runs on the same text


def test_substitution_is_literal_but_for_groups() -> None:
    """No escape processing of re.sub (fhirpathpy's "\\n" became a new line, "\\q" an error)."""
    assert regex.replace_matches(["Lyon"], "(y)", "\\1\\n$1") == "L\\1\\nyon"


def test_substitution_naming_a_missing_group_is_refused() -> None:
    with pytest.raises(UnsupportedPattern):
        regex.replace_matches(["abc"], "(b)", "$2")


def test_client_expressions_are_bounded_and_server_expressions_stay() -> None:
    own = "Patient.name.family"
    compile_fhirpath(own)
    server_before, _ = fhirpath.cache_sizes()
    for i in range(fhirpath.CLIENT_CACHE_SIZE + 50):
        assert compile_client(f"Patient.name.where(family = 'n{i}').exists()")(PATIENT) == [False]
    server, client = fhirpath.cache_sizes()
    assert client == fhirpath.CLIENT_CACHE_SIZE
    assert server == server_before and own in fhirpath._compiled
    assert compile_client(own) is compile_fhirpath(own)  # the server's own, not a second copy
    with pytest.raises(Exception) as refused:
        compile_client("Patient.name" + ".given" * 1000)
    assert getattr(refused.value, "status", None) == 400 and getattr(refused.value, "code", None) == "too-costly"
