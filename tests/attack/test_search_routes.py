"""Hole 1: a search reaches no resource type its caller may not search, by any route.

POST ``_search`` with a form body was authorized on the URL's query alone while the search read the form too.
Every type a request can return or test (``_include``, ``_revinclude``, ``:iterate``, chains and ``_has`` on
every hop, ``_list``, the criteria of conditional interactions and of conditional references in a transaction)
is checked against the caller's role and scopes before any SQL runs.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.attack.conftest import TILLEULS_ORG, World, tilleuls_residents

FORM = "application/x-www-form-urlencoded"
# Each query reaches Condition, MedicationRequest or DocumentReference (medical data) from Patient or Observation.
REACHING_MEDICAL = [
    [("_revinclude", "Condition:subject")],
    [("_revinclude", "MedicationRequest:subject")],
    [("_has:Condition:subject:code", "G30.9")],
    [("_has:Observation:subject:focus:Condition.code", "I10")],  # a chain inside _has
    [("_revinclude", "Observation:subject"), ("_include:iterate", "Observation:focus")],
    [("general-practitioner:Practitioner._has:DocumentReference:author:status", "current")],  # a chain, then _has
    [("_revinclude:iterate", "DocumentReference:subject")],
]
# Callers that may search Patient but not medical data: a nursing assistant, the direction, a client scoped
# system/Patient.rs.
CALLERS = ["t.aide-soignant", "t.direction", "t.client"]


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("query", REACHING_MEDICAL, ids=lambda q: urlencode(q))
def test_post_search_is_authorized_on_its_form(world: World, who: str, query: list[tuple[str, str]]) -> None:
    by_get = world.get(who, f"Patient?{urlencode(query)}")
    assert by_get.status_code == 403, by_get.get_data(as_text=True)
    by_form = world.call(who, "POST", "Patient/_search", urlencode(query), content_type=FORM)
    assert by_form.status_code == 403, by_form.get_data(as_text=True)
    assert by_form.get_json()["issue"][0]["code"] == "forbidden"
    split = world.call(who, "POST", f"Patient/_search?{urlencode(query[:1])}", urlencode(query[1:]),
                       content_type=FORM)  # half in the URL, half in the form
    assert split.status_code == 403, split.get_data(as_text=True)


def test_post_search_answers_what_get_answers_when_allowed(world: World) -> None:
    query = urlencode([("_revinclude", "Condition:subject"), ("_count", "50")])
    by_get = world.ids("t.medecin", f"Patient?{query}")
    by_form = world.call("t.medecin", "POST", "Patient/_search", query, content_type=FORM)
    assert by_form.status_code == 200
    assert {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in by_form.get_json()["entry"]} == by_get
    assert any(i.startswith("Condition/") for i in by_get)


def test_conditional_criteria_are_authorized(world: World) -> None:
    resident = tilleuls_residents()[0]
    # If-None-Exist and conditional update criteria that test Condition (medical data), by callers who may
    # create Patients (administrative staff) or update Observations (nursing assistants) but not search Conditions
    probe = {"resourceType": "Patient", "name": [{"family": "Sonde"}], "gender": "female", "birthDate": "1930-01-01",
             "managingOrganization": {"reference": f"Organization/{TILLEULS_ORG}"}}
    created = world.call("t.administratif", "POST", "Patient", probe,
                         headers={"If-None-Exist": "_has:Condition:subject:code=G30.9"})
    assert created.status_code == 403, created.get_data(as_text=True)
    updated = world.call("t.aide-soignant", "PUT", "Observation?subject:Patient._has:Condition:subject:code=I10",
                         {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": f"Patient/{resident}"}})
    assert updated.status_code == 403, updated.get_data(as_text=True)


def test_transaction_conditional_references_are_authorized(world: World) -> None:
    resident = tilleuls_residents()[0]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:9b0c1a5e-0000-4000-8000-000000000001",
        "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
                     "subject": {"reference": f"Patient?_id={resident}&_has:Condition:subject:code=G30.9"},
                     "valueQuantity": {"value": 60, "unit": "kg", "system": "http://unitsofmeasure.org",
                                       "code": "kg"}},
        "request": {"method": "POST", "url": "Observation"}}]}
    answer = world.call("t.aide-soignant", "POST", "", bundle)
    assert answer.status_code == 403, answer.get_data(as_text=True)
