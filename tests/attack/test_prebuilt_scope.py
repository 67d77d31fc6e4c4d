"""A scoped search of Patients by one identifier or one name runs on a statement built once, with the scope's
condition in it (``dui.fhir.sql``, ``Sight.page_scope``): it must see exactly what the statement built per request
sees, for every caller, on every page, with the same totals."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from dui.fhir import sql
from tests.attack.conftest import RESIDENTS, World

# Staff of both EHPADs, a hospital client, an establishment's client, the unrestricted caller of development
CALLERS = ["t.medecin", "t.infirmier", "p.infirmier", "hospital", "t.client", None]


def _pages(world: World, who: str | None, query: str) -> list[tuple[list[str], Any, list[str]]]:
    """Every page of a search, following its next links: the ids, the total and the relations of its links."""
    found = []
    path: str | None = query
    while path is not None:
        assert len(found) < 20, f"{query}: a next link past every page"
        answer = world.get(who, path)
        assert answer.status_code == 200, (who, path, answer.get_data(as_text=True))
        bundle = answer.get_json()
        found.append(([e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"],
                      bundle.get("total"), sorted(link["relation"] for link in bundle["link"])))
        following = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        path = following.split("/fhir/", 1)[1] if following else None
    return found


def _queries(world: World) -> list[str]:
    queries = []
    families = set()
    for number in range(1, RESIDENTS + 1):
        resident = world.resource(f"Patient/demo-resident-{number:03d}")
        for identifier in resident["identifier"]:  # the INS (test NIR here) and the local resident number
            system, value = quote(identifier["system"], safe=""), quote(identifier["value"], safe="")
            queries += [f"Patient?identifier={system}|{value}", f"Patient?identifier={value}&_total=accurate"]
        families.add(resident["name"][0]["family"])
    for family in sorted(families):
        queries += [f"Patient?family={quote(family[:3])}&_count=1&_total=accurate",
                    f"Patient?family:exact={quote(family)}"]
    return [*queries, "Patient?name=a&_count=2&_total=accurate", "Patient?identifier=nobody", "Patient?given=zz"]


@pytest.mark.parametrize("who", CALLERS)
def test_a_scoped_search_answers_the_same_on_its_prebuilt_statement(world: World, who: str | None,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    queries = _queries(world)
    chosen: list[dict[str, Any] | None] = []
    token, string = sql._simple_token, sql._simple_string

    def watched(choose: Any) -> Any:
        def choosing(plan: Any) -> Any:
            params = choose(plan)
            chosen.append(params)
            return params
        return choosing

    monkeypatch.setattr(sql, "_simple_token", watched(token))
    monkeypatch.setattr(sql, "_simple_string", watched(string))
    prebuilt = {q: _pages(world, who, q) for q in queries}
    taken = [params for params in chosen if params is not None]
    assert len(taken) >= len(queries)  # every search ran on a prebuilt statement
    if who is not None and who != "group":  # scoped: the scope's parameters were carried
        assert all("finess" in params for params in taken), who
    monkeypatch.setattr(sql, "_simple_token", lambda plan: None)  # the general path: built per request
    monkeypatch.setattr(sql, "_simple_string", lambda plan: None)
    general = {q: _pages(world, who, q) for q in queries}
    assert prebuilt == general
    seen = {i for pages in prebuilt.values() for ids, _, _ in pages for i in ids}
    if who is None:
        assert len(seen) == RESIDENTS
    elif who in ("t.medecin", "p.infirmier"):
        assert 0 < len(seen) < RESIDENTS  # one EHPAD's residents: the scope did keep some out


def test_whether_an_establishment_sees_one_resident_is_answered_as_for_many(world: World) -> None:
    """A read asks about one resident: its prebuilt statement (``_SEEN_ONE``, on psycopg directly in a read-only
    unit) answers as the statement for a list of residents does, for each establishment and each resident, on a
    read-only unit and on a writing one."""
    from datetime import UTC, datetime

    from dui.fhir import scope
    from tests.attack.conftest import HOSPITAL_FINESS, PARC, TILLEULS

    svc = world.app.extensions["dui"]
    residents = [f"demo-resident-{n:03d}" for n in range(1, RESIDENTS + 1)] + ["nobody"]
    asked: list[int] = []
    one = scope._SEEN_ONE

    class Counted:
        def rows(self, session: Any, params: Any) -> Any:
            asked.append(1)
            return one.rows(session, params)

    for finess in (TILLEULS, PARC, HOSPITAL_FINESS):
        for write in (False, True):
            with svc.unit_of_work(write=write) as session:
                at = scope.Scope(finess, datetime.now(UTC))
                seen_together = scope.Sight(at, session, svc.residents).seen(residents)
                singly = set()
                for resident in residents:
                    sight = scope.Sight(at, session, svc.residents)
                    scope._SEEN_ONE = Counted()  # type: ignore[assignment]
                    try:
                        singly |= sight.seen([resident])
                    finally:
                        scope._SEEN_ONE = one
                assert singly == seen_together, (finess, write)
                if finess in (TILLEULS, PARC):
                    assert 0 < len(seen_together) < RESIDENTS, finess
    assert len(asked) == 3 * 2 * len(residents)
