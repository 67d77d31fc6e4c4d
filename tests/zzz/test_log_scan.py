"""No log line of the whole test session holds a resident's name, birth date or INS.

Collected last (``tests/conftest.py`` moves ``tests/zzz`` to the end). It reads every record the session
logged (``tests.logscan``) and every log of the ``dui serve`` processes the server tests started, and looks
for the identifying values the tests use: the demo residents (``dui.demo``), the INSi simulator's register
(``ins.insi.table``) and the test helpers' residents. Each name is looked for as written, in capitals, in
INSi's wire form, JSON-escaped, and in the search index's normalised form when that is a spelling of its own
(``lefevre``, ``jeanpierre``); the plain lower case of a name (``martin``) is also how staff logins are
spelt (``ide.martin``), and the actor of a line is logged by design. Each birth date is looked for in ISO
and French form, each NIR whole and without its key. A finding is fixed where the line is logged, never here.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from dui.demo.data import resident_bundle
from dui.fhir.search.normalize import normalize
from ins.insi.table import DEFAULT_IDENTITIES
from ins.insi.wire import wire_name
from tests import logscan
from tests.helpers import patient
from tests.server.conftest import SERVER_LOGS
from tests.server.test_zz_logs import SENSITIVE

DEMO_RESIDENTS = 24  # `dui demo load`'s default; the tests load 3 and 6 of them
INS_SYSTEMS = ("urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9", "urn:oid:1.2.250.1.213.1.4.10",
               "urn:oid:1.2.250.1.213.1.4.11")


class Values:
    """The identifying values to look for, by kind."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.dates: set[date] = set()
        self.nirs: set[str] = set()

    def name(self, value: str | None) -> None:
        if value:
            self.names.add(value)

    def nir(self, value: str | None) -> None:
        if value and len(value) >= 13:
            self.nirs.add(value)


def _patients(resources: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (r for r in resources if r.get("resourceType") == "Patient")


def collect() -> Values:
    values = Values()
    bundles = [resident_bundle(i, date(2026, 11, 2)) for i in range(1, DEMO_RESIDENTS + 1)]
    helpers = [patient()]
    for resource in _patients([e["resource"] for b in bundles for e in b["entry"]] + helpers):
        for name in resource.get("name", []):
            values.name(name.get("family"))
            for given in name.get("given", []):
                values.name(given)
        for extension in resource.get("extension", []):
            if extension.get("url", "").endswith("birth-list-given-name"):
                values.name(extension.get("valueString"))
        values.dates.add(date.fromisoformat(resource["birthDate"]))
        for identifier in resource.get("identifier", []):
            if identifier.get("system") in INS_SYSTEMS:
                values.nir(identifier.get("value"))
    for entry in DEFAULT_IDENTITIES:
        person = entry.identity
        values.name(person.birth_family)
        for given in person.given_names:
            values.name(given)
        values.dates.add(person.birth_date)
        values.nir(person.matricule)
        values.nir(entry.od_matricule)
        for matricule, _ in person.previous:
            values.nir(matricule)
    for value in SENSITIVE:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            values.dates.add(date.fromisoformat(value))
        elif re.fullmatch(r"\d[\dAB]{12,14}", value):
            values.nir(value)
        else:
            values.name(value)
    return values


def patterns(values: Values) -> list[tuple[str, re.Pattern[str]]]:
    """(value as found, its pattern): names between non-letters, dates between non-digits, NIR after a non-digit
    (Corsican NIR hold 2A or 2B)."""
    found: dict[str, re.Pattern[str]] = {}
    letters = r"[^\W\d_]"
    for name in values.names:
        forms = {name, name.upper(), wire_name(name), json.dumps(name)[1:-1]}
        if normalize(name) != name.lower():
            forms.add(normalize(name))
        for form in forms:
            if len(form) < 2:  # INSi's wire form of the test value 'R-0042' is 'R': in every random id, naming nobody
                continue
            found[form] = re.compile(rf"(?<!{letters}){re.escape(form)}(?!{letters})")
    for day in values.dates:
        for form in (day.isoformat(), day.strftime("%d/%m/%Y")):
            found[form] = re.compile(rf"(?<!\d){re.escape(form)}(?!\d)")
    for nir in values.nirs:
        found[nir[:13]] = re.compile(rf"(?<![0-9A-Z]){re.escape(nir[:13])}")  # with or without its key
    return sorted(found.items())


def scan(text: str, checks: list[tuple[str, re.Pattern[str]]]) -> list[tuple[int, str, str]]:
    """(line number, form, line) for every line of ``text`` (as ``str.splitlines`` cuts it, numbered from 1) and
    every pattern of ``checks`` found in it, in line order then in the order of ``checks``.

    Each pattern of ``patterns`` is its form between lookarounds, so a line it matches holds the form as written:
    one alternation of the bare forms, run once over the whole text, finds every line that can match, and only
    those lines are searched pattern by pattern (searching every line with every pattern, a few hundred thousand
    ``re.search`` per thousand lines, took 20 s of each shard). The forms hold no line break, so no match of the
    alternation runs from one line into the next and hides a form there."""
    assert all("\n" not in form and re.escape(form) in pattern.pattern for form, pattern in checks)
    lines = text.splitlines()
    starts = list(itertools.accumulate((len(line) + 1 for line in lines), initial=0))
    any_form = re.compile("|".join(re.escape(form) for form, _ in checks))
    candidates = sorted({bisect.bisect_right(starts, m.start()) - 1 for m in any_form.finditer("\n".join(lines))})
    return [(index + 1, form, lines[index]) for index in candidates for form, pattern in checks
            if pattern.search(lines[index])]


def test_the_identifying_values_are_those_of_the_tests() -> None:
    values = collect()
    assert {"Lefèvre", "Hélène", "BERTHIER", "Quintal"} <= values.names
    assert date(1931, 6, 14) in values.dates and date(1938, 4, 12) in values.dates
    assert len(values.nirs) >= DEMO_RESIDENTS
    forms = dict(patterns(values))
    assert {"lefevre", "LEFEVRE", "14/06/1931", "1931-06-14"} <= set(forms)


def test_the_scan_finds_what_every_pattern_finds_line_by_line() -> None:
    """``scan`` against the plain search of every line with every pattern, on planted lines: names as written, in
    capitals, JSON-escaped, at the start and end of a line, dates in both forms, a NIR with and without its key,
    a line cut by a form feed; and lines that must not match (a login, a name inside a word, a longer number)."""
    checks = patterns(collect())
    text = "\n".join([
        "INFO dui.access request {'method': 'GET', 'status': 200}",
        "Hélène Lefèvre est née le 14/06/1931",
        "WARNING x {'family': 'LEFEVRE'} | Traceback ... 1931-06-14",
        "json \"H\\u00e9l\\u00e8ne\" ok",
        "INFO dui.auth login ide.martin",
        "DEBUG xlefevrex 11931-06-140 and 0" + DEFAULT_IDENTITIES[0].identity.matricule[:13],
        "nir " + DEFAULT_IDENTITIES[0].identity.matricule + "\x0cBERTHIER",
        "fin Quintal",
    ])
    brute = [(number, form, line) for number, line in enumerate(text.splitlines(), 1) for form, pattern in checks
             if pattern.search(line)]
    assert scan(text, checks) == brute
    found = {(number, form) for number, form, _ in brute}
    assert {(2, "Hélène"), (2, "Lefèvre"), (2, "14/06/1931"), (3, "LEFEVRE"), (3, "1931-06-14"),
            (4, "H\\u00e9l\\u00e8ne"), (7, DEFAULT_IDENTITIES[0].identity.matricule[:13]), (8, "BERTHIER"),
            (9, "Quintal")} <= found
    assert not {number for number, _ in found} & {1, 5, 6}


def test_no_log_line_of_the_session_holds_health_data() -> None:
    logs = [logscan.SESSION_LOG, *SERVER_LOGS]
    session = logscan.SESSION_LOG.read_text(encoding="utf-8", errors="replace")
    if not session.strip() and not SERVER_LOGS:
        pytest.skip("nothing was logged in this session: run the log scan with the rest of the suite")
    checks = patterns(collect())
    findings: list[str] = []
    for path in logs:
        for number, form, line in scan(Path(path).read_text(encoding="utf-8", errors="replace"), checks):
            findings.append(f"{form!r} in {Path(path).name}:{number}: {line[:300]}")
    assert not findings, f"{len(findings)} log lines hold identifying values:\n" + "\n".join(findings[:30])
