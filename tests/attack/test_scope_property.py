"""Hole 3, as a property: for searches built from every parameter, modifier, chain and ``_has`` of the demo's
types, with values taken from both establishments' records, a scoped caller's answer (entries, total, or the
error) is the same whether or not the other establishment's residents exist.

Two worlds are loaded, each in a database of its own (not the package's world, which other tests write to): the
demo (Les Tilleuls and Le Parc), and the demo without Le Parc's residents (its Organization and staff are still
there). Tokens of the same accounts are asked in each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from dui import migrations
from tests.attack.conftest import RESIDENTS, World, build_world, world_app
from tests.conftest import migrated_schema

TYPES = ("Patient", "Observation", "Condition", "Encounter", "MedicationRequest", "AllergyIntolerance",
         "DocumentReference", "Organization", "Practitioner", "PractitionerRole")
CALLERS = ("t.medecin", "t.infirmier", "t.administratif", "t.aide-soignant", "t.client", "hospital")
# The accounts and clients the two worlds are made with: the callers above and the group's platform, no other (an
# account's password is hashed when it is made and when its token is asked, some 0.3 s a caller and a world).
ACCOUNTS = frozenset({*CALLERS, "group"})
EXAMPLES = int(os.environ.get("DUI_SCOPE_PROPERTY_EXAMPLES", "150"))


@contextmanager
def separate_world(database_url: str, tmp: Path, residents: list[int]) -> Iterator[World]:
    """A world in a database of its own, on the backend of ``database_url``."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp / 'dui.sqlite'}"
        migrations.upgrade(url)
        app = world_app(url, tmp)
        yield build_world(app, tmp, residents, ACCOUNTS)
        app.extensions["dui"].dispose()
        return
    with migrated_schema("dui_scope") as url:
        app = world_app(url, tmp)
        yield build_world(app, tmp, residents, ACCOUNTS)
        app.extensions["dui"].dispose()


@pytest.fixture(scope="module")
def with_parc(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with separate_world(database_url, tmp_path_factory.mktemp("with-parc"), list(range(1, RESIDENTS + 1))) as w:
        yield w


@pytest.fixture(scope="module")
def without_parc(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tilleuls_only = [i for i in range(1, RESIDENTS + 1) if i % 2 == 0]
    with separate_world(database_url, tmp_path_factory.mktemp("without-parc"), tilleuls_only) as w:
        yield w


@pytest.fixture(scope="module")
def pools(with_parc: World) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(type, parameter) -> (kind, value) pairs found in the index of the whole demo (both establishments)."""
    engine = with_parc.app.extensions["dui"].engine
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    queries = {
        "token": "SELECT res_type, param, system, code FROM search_token WHERE code IS NOT NULL",
        "string": "SELECT res_type, param, value, exact FROM search_string",
        "reference": "SELECT res_type, param, target_type, target_id FROM search_reference WHERE target_id IS NOT NULL",
        "date": "SELECT res_type, param, low, high FROM search_date",
        "quantity": "SELECT res_type, param, value, code FROM search_quantity",
    }
    with engine.connect() as conn:
        for kind, sql in queries.items():
            for rtype, param, a, b in conn.execute(text(sql)):
                if ":" in param:
                    continue
                found.setdefault((rtype, param), []).append((kind, _value(kind, a, b)))
    return {k: sorted(set(v)) for k, v in found.items()}


def _value(kind: str, a: Any, b: Any) -> str:
    if kind == "token":
        return f"{a}|{b}" if a else str(b)
    if kind == "string":
        return str(a)[:3]
    if kind == "reference":
        return f"{a}/{b}"
    if kind == "date":
        return str(a)[:10] if str(a)[:4] not in ("0001", "9999") else str(b)[:10]
    return str(a)


def _criterion(draw: Any, pools: dict[tuple[str, str], list[tuple[str, str]]], rtype: str,
               depth: int = 0) -> tuple[str, str] | None:
    params = sorted(p for (t, p) in pools if t == rtype)
    if not params:
        return None
    shape = draw(st.sampled_from(["plain", "plain", "modifier", "chain", "has"] if depth == 0 else ["plain"]))
    if shape == "chain":
        refs = [(p, v.split("/")[0]) for p in params for k, v in pools[(rtype, p)] if k == "reference"]
        targets = sorted({(p, t) for p, t in refs if t in TYPES})
        if targets:
            param, target = draw(st.sampled_from(targets))
            inner = _criterion(draw, pools, target, depth + 1)
            if inner is not None:
                return f"{param}:{target}.{inner[0]}", inner[1]
    if shape == "has":
        sources = sorted({(t, p) for (t, p), values in pools.items() for k, v in values
                          if k == "reference" and v.startswith(rtype + "/") and t in TYPES})
        if sources:
            source, param = draw(st.sampled_from(sources))
            inner = _criterion(draw, pools, source, depth + 1)
            if inner is not None:
                return f"_has:{source}:{param}:{inner[0]}", inner[1]
    param = draw(st.sampled_from(params))
    kind, value = draw(st.sampled_from(pools[(rtype, param)]))
    if shape == "modifier":
        modifier = draw(st.sampled_from({"token": [":not", ":missing", ":text"], "string": [":exact", ":contains",
                                                                                          ":missing"],
                                         "reference": [":missing"], "date": [":missing"],
                                         "quantity": [":missing"]}[kind]))
        if modifier == ":missing":
            return f"{param}:missing", draw(st.sampled_from(["true", "false"]))
        return f"{param}{modifier}", value.split("|")[-1]
    if kind == "date":
        value = draw(st.sampled_from(["", "ge", "le", "gt", "lt"])) + value
    if kind == "quantity":
        value = draw(st.sampled_from(["", "ge", "le"])) + value
    return param, value


@st.composite
def searches(draw: Any, pools: dict[tuple[str, str], list[tuple[str, str]]]) -> tuple[str, str]:
    rtype = draw(st.sampled_from(TYPES))
    pairs: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 3))):
        criterion = _criterion(draw, pools, rtype)
        if criterion is not None:
            pairs.append(criterion)
    refs = sorted({p for (t, p), values in pools.items() if t == rtype for k, _ in values if k == "reference"})
    if refs and draw(st.booleans()):
        pairs.append(("_include", f"{rtype}:{draw(st.sampled_from(refs))}"))
    back = sorted({(t, p) for (t, p), values in pools.items() for k, v in values
                   if k == "reference" and v.startswith(rtype + "/")})
    if back and draw(st.booleans()):
        source, param = draw(st.sampled_from(back))
        pairs.append(("_revinclude", f"{source}:{param}"))
    pairs += [("_total", "accurate"), ("_count", "200")]
    from urllib.parse import urlencode

    return draw(st.sampled_from(CALLERS)), f"{rtype}?{urlencode(pairs)}"


def answer(world: World, who: str, query: str) -> tuple[int, Any, Any]:
    response = world.get(who, query)
    body = response.get_json()
    if response.status_code != 200:
        return response.status_code, [i.get("diagnostics") for i in body.get("issue", [])], None
    ids = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body.get("entry", [])
                 if e.get("search", {}).get("mode") != "outcome")
    return 200, ids, body.get("total")


def test_a_scoped_answer_ignores_the_other_establishments_residents(
        with_parc: World, without_parc: World, pools: dict[tuple[str, str], list[tuple[str, str]]]) -> None:
    checked: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(searches(pools))
    def same(case: tuple[str, str]) -> None:
        who, query = case
        assert answer(with_parc, who, query) == answer(without_parc, who, query), (who, query)
        checked.append(query)

    same()
    assert len(checked) >= EXAMPLES // 2


def test_the_worlds_differ_for_the_unscoped(with_parc: World, without_parc: World) -> None:
    """The comparison above would be empty if both worlds held the same data: the group's platform (no
    establishment) sees Le Parc's residents in one world only."""
    assert answer(with_parc, "group", "Patient?_total=accurate")[2] == RESIDENTS
    assert answer(without_parc, "group", "Patient?_total=accurate")[2] == RESIDENTS // 2

