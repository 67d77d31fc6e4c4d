"""``_text`` and ``_content`` go through the caller's scope like every criterion: a word written only in another
establishment's resident's record finds nothing, in entries and in totals, directly or through ``_has``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.attack.conftest import World, parc_residents, tilleuls_residents

WORD = "xylophoniste"  # in no demo record


@pytest.fixture
def parc_note(world: World) -> Iterator[str]:
    resident = parc_residents()[0]
    made = world.call(None, "POST", "Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{resident}"},
        "code": {"text": "Note de soins"},
        "note": [{"text": f"Ancienne {WORD.capitalize()}, aime la musique"}],
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>Résidente {WORD}</p></div>'}})
    assert made.status_code == 201, made.get_data(as_text=True)
    cid = made.get_json()["id"]
    yield cid
    assert world.call(None, "DELETE", f"Condition/{cid}").status_code == 204


def total(world: World, who: str, query: str) -> int:
    answer = world.get(who, query)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return int(answer.get_json()["total"])


def test_no_leak_across_establishments(world: World, parc_note: str) -> None:
    for parameter in ("_text", "_content"):
        query = f"Condition?{parameter}={WORD}"
        assert world.ids("p.infirmier", query) == {f"Condition/{parc_note}"}  # the probe works where it is seen
        for who in ("t.infirmier", "t.medecin"):
            assert world.ids(who, query) == set(), (who, parameter)
            assert total(world, who, query + "&_summary=count") == 0, (who, parameter)
            assert total(world, who, f"Patient?_has:Condition:subject:{parameter}={WORD}&_summary=count") == 0
    # the Tilleuls' own residents are found by their own words
    mine = tilleuls_residents()[0]
    own = world.call(None, "POST", "Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{mine}"}, "note": [{"text": WORD}]})
    assert own.status_code == 201
    try:
        assert world.ids("t.infirmier", f"Condition?_content={WORD}") == {f"Condition/{own.get_json()['id']}"}
        assert world.ids("p.infirmier", f"Condition?_content={WORD}") == {f"Condition/{parc_note}"}
    finally:
        world.call(None, "DELETE", f"Condition/{own.get_json()['id']}")
