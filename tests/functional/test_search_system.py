"""Search at system level, ``GET /fhir?_type=A,B&...`` (http://hl7.org/fhir/R4/http.html#search): each type's results
in ``_type`` order, pages that cross from one type to the next, parameters common to every type read strictly, and
refusals that say why. The establishment's scope: tests/attack/test_system_level.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import FhirClient, observation, patient


def pages(client: FhirClient, query: str) -> list[list[str]]:
    """Every page of a search, following its next links: the ``Type/id`` of each entry."""
    found: list[list[str]] = []
    path: str | None = query
    while path is not None:
        bundle = client.search(path)
        found.append([f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])])
        following = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        path = following.split("/fhir", 1)[1].lstrip("/") if following else None
        assert len(found) < 20
    return found


@pytest.fixture
def record(client: FhirClient) -> dict[str, list[str]]:
    residents = [client.create(patient(family=f"Systeme{i}"))["id"] for i in range(3)]
    weights = [client.create(observation(f"Patient/{p}"))["id"] for p in residents]
    return {"Patient": residents, "Observation": weights}


def test_the_types_results_in_order_across_pages(client: FhirClient, record: dict[str, list[str]]) -> None:
    first = client.search("?_type=Patient,Observation&_count=2")
    assert first["total"] == 6 and first["type"] == "searchset"
    got = pages(client, "?_type=Patient,Observation&_count=2")
    assert [len(p) for p in got] == [2, 2, 2]  # the second page holds a Patient and an Observation
    flat = [x for p in got for x in p]
    assert [x.split("/")[0] for x in flat] == ["Patient"] * 3 + ["Observation"] * 3
    assert {x.split("/")[1] for x in flat} == {*record["Patient"], *record["Observation"]}
    reverse = [x for p in pages(client, "?_type=Observation,Patient&_count=4") for x in p]
    assert [x.split("/")[0] for x in reverse] == ["Observation"] * 3 + ["Patient"] * 3


def test_parameters_common_to_every_type(client: FhirClient, record: dict[str, list[str]]) -> None:
    one = record["Observation"][0]
    found = client.search(f"?_type=Patient,Observation&_id={one},{record['Patient'][0]}")
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted([one, record["Patient"][0]])
    assert client.search("?_type=Patient,Observation&_lastUpdated=lt2000-01-01")["total"] == 0
    assert client.search("?_type=Patient&family=Systeme1")["total"] == 1  # one type: its own parameters
    shaped = client.search("?_type=Patient,Observation&_elements=id")["entry"]
    assert shaped and not any({"name", "valueQuantity", "subject"} & set(e["resource"]) for e in shaped)
    assert all(any(t["code"] == "SUBSETTED" for t in e["resource"]["meta"]["tag"]) for e in shaped)
    counted = client.search("?_type=Patient,Observation&_summary=count")
    assert counted["total"] == 6 and "entry" not in counted


@pytest.mark.parametrize(("query", "said"), [
    ("?family=x", "_type"),  # no types: a search of the whole server
    ("?_type=Patient,Nothing", "not a resource type"),
    ("?_type=Patient,Observation&family=x", "family"),  # not a parameter of Observation: refused, not ignored
    ("?_type=Patient,Observation&_sort=_id", "_sort"),
    ("?_type=Patient&_include=Patient:organization", "_include"),
    ("?_type=Patient&_cursor=abc", "_cursor"),
    ("?_type=" + ",".join(["Patient", "Observation", "Condition", "Encounter", "Flag", "Task", "Goal", "Device",
                           "Location", "Organization", "Practitioner"]), "at most"),
])
def test_what_cannot_be_honoured_is_refused(client: FhirClient, query: str, said: str) -> None:
    answer = client.get(query)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    body: Any = answer.get_json()
    assert body["resourceType"] == "OperationOutcome" and said in body["issue"][0]["diagnostics"]


def test_the_base_allows_get_and_post_only(client: FhirClient) -> None:
    answer = client.request("DELETE", "")
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, POST"
    statement = client.search("metadata")
    assert "search-system" in {i["code"] for i in statement["rest"][0]["interaction"]}
