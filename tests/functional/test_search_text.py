"""``_text`` (narrative) and ``_content`` (the whole resource), on SQLite (FTS5) and PostgreSQL (french full
text search): docs/fhir-api.md, "Search", "Text search"."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.helpers import FhirClient, ids, patient

LENIENT = {"Prefer": "handling=lenient"}


def note(subject: str, narrative: str, **extra: Any) -> dict[str, Any]:
    """A Condition whose narrative is ``narrative`` (XHTML) and whose other strings are in ``extra``."""
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{subject}"},
            "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{narrative}</div>'},
            **extra}


def is_pg(app: Flask) -> bool:
    return bool(app.extensions["dui"].engine.dialect.name == "postgresql")


@pytest.fixture
def resident(client: FhirClient) -> str:
    return str(client.create(patient())["id"])


def test_text_searches_the_narrative_content_every_string(client: FhirClient, resident: str) -> None:
    narrated = client.create(note(resident, "<p>Chute <b>nocturne</b> dans la salle de bain</p>",
                                  code={"text": "Fracture du col"}))["id"]
    coded = client.create(note(resident, "<p>Douleur</p>", code={"text": "Chute nocturne"},
                               note=[{"text": "escarre au talon"}]))["id"]
    assert ids(client.search("Condition?_text=nocturne")) == [narrated]
    assert sorted(ids(client.search("Condition?_content=nocturne"))) == sorted([narrated, coded])
    assert ids(client.search("Condition?_text=escarre")) == []
    assert ids(client.search("Condition?_content=escarre")) == [coded]
    assert ids(client.search("Condition?_content=fracture")) == [narrated]
    # the markup is not text: tag names and attributes are not words of the narrative
    assert ids(client.search("Condition?_text=xhtml")) == []
    assert ids(client.search("Condition?_text=div")) == []


def test_accents_and_case_do_not_matter(client: FhirClient, resident: str) -> None:
    found = client.create(note(resident, "<p>Visite de Mme Hélène LEFÈVRE, cœur régulier</p>"))["id"]
    client.create(note(resident, "<p>Visite du kinésithérapeute</p>"))
    for query in ("helene", "Hélène", "HELENE", "lefevre", "coeur", "régulier", "REGULIER"):
        assert ids(client.search(f"Condition?_text={query}")) == [found], query


def test_words_phrases_and_or(client: FhirClient, resident: str) -> None:
    a = client.create(note(resident, "<p>chute dans la chambre, relevée par l'aide-soignante</p>"))["id"]
    b = client.create(note(resident, "<p>la chambre est rangée ; pas de chute</p>"))["id"]
    c = client.create(note(resident, "<p>toux grasse</p>"))["id"]
    assert sorted(ids(client.search("Condition?_text=chute chambre"))) == sorted([a, b])  # every word
    assert sorted(ids(client.search("Condition?_text=chute AND chambre"))) == sorted([a, b])
    assert ids(client.search('Condition?_text="chute dans la chambre"')) == [a]  # a phrase: in that order
    assert ids(client.search('Condition?_text="chambre chute"')) == []
    assert sorted(ids(client.search("Condition?_text=toux OR relevée"))) == sorted([a, c])
    assert sorted(ids(client.search("Condition?_text=toux,relevee"))) == sorted([a, c])  # commas OR values
    assert ids(client.search("Condition?_text=(toux OR rangee) AND chambre")) == [b]
    assert ids(client.search("Condition?_text=chute&_text=rangée")) == [b]  # repeated: AND
    assert ids(client.search("Condition?_text=aide-soignante")) == [a]  # a hyphenated word is a phrase


def test_plural_and_stems(app: Flask, client: FhirClient, resident: str) -> None:
    falls = client.create(note(resident, "<p>Deux chutes ce mois-ci ; médicaments revus</p>"))["id"]
    # SQLite matches a word as a prefix: the singular finds the plural
    assert ids(client.search("Condition?_text=chute")) == [falls]
    assert ids(client.search("Condition?_text=medicament")) == [falls]
    if is_pg(app):  # PostgreSQL stems with the french configuration: the plural finds the singular too
        single = client.create(note(resident, "<p>Une chute, un médicament</p>"))["id"]
        assert sorted(ids(client.search("Condition?_text=chutes"))) == sorted([falls, single])
        assert sorted(ids(client.search("Condition?_text=médicaments"))) == sorted([falls, single])


def test_with_other_parameters_count_and_paging(client: FhirClient, resident: str) -> None:
    other = str(client.create(patient(family="Martin"))["id"])
    mine = [client.create(note(resident, f"<p>Pansement numéro {i}</p>"))["id"] for i in range(5)]
    client.create(note(other, "<p>Pansement refait</p>"))
    assert sorted(ids(client.search(f"Condition?_text=pansement&subject=Patient/{resident}"))) == sorted(mine)
    counted = client.search("Condition?_text=pansement&_summary=count")
    assert counted["total"] == 6 and "entry" not in counted
    seen: list[str] = []
    page = client.search(f"Condition?_content=pansement&subject=Patient/{resident}&_count=2")
    while True:
        seen += ids(page)
        following = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not following:
            break
        page = client.search(following[0].split("/fhir/", 1)[1])
    assert sorted(seen) == sorted(mine)
    # through a chain, and backwards with _has
    assert ids(client.search("Patient?_has:Condition:subject:_text=refait")) == [other]
    assert len(ids(client.search("Condition?subject:Patient._content=martin"))) == 1
    assert len(ids(client.search("Condition?subject._content=martin&_text=pansement"))) == 1
    # a search of several types
    both = client.search("?_type=Patient,Condition&_content=martin,refait")
    assert sorted(e["resource"]["resourceType"] for e in both["entry"]) == ["Condition", "Patient"]


def test_update_replaces_and_delete_removes(client: FhirClient, resident: str) -> None:
    made = client.create(note(resident, "<p>Érythème fessier</p>"))
    assert ids(client.search("Condition?_text=erytheme")) == [made["id"]]
    changed = {**made, "text": {"status": "generated",
                                "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Cicatrisation</p></div>'}}
    assert client.put(f"Condition/{made['id']}", changed).status_code == 200
    assert ids(client.search("Condition?_text=erytheme")) == []
    assert ids(client.search("Condition?_text=cicatrisation")) == [made["id"]]
    patched = client.patch(f"Condition/{made['id']}", [
        {"op": "add", "path": "/note", "value": [{"text": "surveillance quotidienne"}]}],
        content_type="application/json-patch+json")
    assert patched.status_code == 200, patched.get_data(as_text=True)
    assert ids(client.search("Condition?_content=quotidienne")) == [made["id"]]
    assert client.delete(f"Condition/{made['id']}").status_code == 204
    assert ids(client.search("Condition?_content=cicatrisation")) == []
    assert ids(client.search("Condition?_content=quotidienne")) == []


def test_transaction_writes_the_text_index(client: FhirClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5e0b3b5c-0000-4000-8000-000000000001", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": note("x", "<p>Bronchite</p>") | {"subject": {
            "reference": "urn:uuid:5e0b3b5c-0000-4000-8000-000000000001"}},
         "request": {"method": "POST", "url": "Condition"}}]}
    answer = client.post("", bundle)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert len(ids(client.search("Condition?_text=bronchite"))) == 1


@pytest.mark.parametrize("value", ['"chute', "(chute", "chute)", "chute OR", "AND chute", "()"])
def test_malformed_values_strict_and_lenient(client: FhirClient, resident: str, value: str) -> None:
    client.create(note(resident, "<p>chute</p>"))
    strict = client.get(f"Condition?_text={value}", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400, strict.get_data(as_text=True)
    assert "_text" in strict.get_data(as_text=True)
    # ignored: every Condition, and an outcome saying so
    lenient = client.search(f"Condition?_text={value}", headers=LENIENT)
    assert len(ids(lenient)) == 1
    assert any(e.get("search", {}).get("mode") == "outcome" for e in lenient["entry"])


def test_empty_value_and_modifiers(client: FhirClient, resident: str) -> None:
    client.create(note(resident, "<p>chute</p>"))
    assert len(ids(client.search("Condition?_content="))) == 1  # no value: ignored unless handling=strict
    assert client.get("Condition?_content=", headers={"Prefer": "handling=strict"}).status_code == 400
    assert client.get("Condition?_text:exact=chute").status_code == 400
    assert client.get("Binary?_text=chute", headers={"Prefer": "handling=strict"}).status_code == 400


def test_capability_statement_lists_text_where_it_works(client: FhirClient) -> None:
    statement = client.get("metadata").get_json()
    by_type = {r["type"]: {p["name"] for p in r.get("searchParam", [])} for r in statement["rest"][0]["resource"]}
    assert {"_text", "_content"} <= by_type["Condition"]
    assert {"_text", "_content"} <= by_type["Patient"]
    assert "_content" in by_type["Binary"] and "_text" not in by_type["Binary"]


def test_reindex_fills_the_text_index_of_resources_stored_before(app: Flask, client: FhirClient,
                                                                  resident: str) -> None:
    from sqlalchemy import text

    made = client.create(note(resident, "<p>Ostéoporose</p>"))["id"]
    with app.extensions["dui"].engine.begin() as conn:  # as after upgrading to revision 0020
        conn.execute(text("DELETE FROM search_text"))
        conn.execute(text("DELETE FROM maintenance_state"))
    assert ids(client.search("Condition?_text=osteoporose")) == []
    result = app.test_cli_runner().invoke(args=["reindex"])
    assert result.exit_code == 0, result.output
    assert ids(client.search("Condition?_text=osteoporose")) == [made]
    assert ids(client.search("Patient?_content=helene")) == [resident]


def test_turned_off_nothing_is_indexed_nor_searched(database_url: str, app: Flask) -> None:
    from sqlalchemy import text

    from dui.app import create_app
    from dui.settings import Settings
    from tests.conftest import empty_database
    from tests.conftest import test_settings as settings_for

    assert Settings.from_env({"DUI_TEXT_SEARCH": "off"}).text_search is False
    off = create_app(settings_for(database_url, text_search=False))
    try:
        empty_database(off)
        client = FhirClient(off.test_client())
        subject = client.create(patient())["id"]
        client.create(note(subject, "<p>Chute</p>"))
        with off.extensions["dui"].engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM search_text")).scalar_one() == 0
        assert client.get("Condition?_text=chute", headers={"Prefer": "handling=strict"}).status_code == 400
        assert client.get("Condition?_text=chute").status_code == 400  # strict is the default
        assert len(ids(client.search("Condition?_text=chute", headers=LENIENT))) == 1  # ignored, with an outcome
        statement = client.get("metadata").get_json()
        condition = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Condition")
        assert not {"_text", "_content"} & {p["name"] for p in condition["searchParam"]}
    finally:
        off.extensions["dui"].dispose()
