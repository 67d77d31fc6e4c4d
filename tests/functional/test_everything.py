"""Patient/$everything (http://hl7.org/fhir/R4/patient-operation-everything.html)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.helpers import FhirClient, observation, outcome_codes, patient


def _all_pages(client: FhirClient, url: str) -> list[dict[str, Any]]:
    pages = [client.search(url)]
    while (nxt := next((lk["url"] for lk in pages[-1]["link"] if lk["relation"] == "next"), None)) is not None:
        pages.append(client.search(nxt.replace("http://testserver/fhir/", "")))
        assert len(pages) < 100
    return pages


@pytest.fixture
def record(client: FhirClient) -> dict[str, Any]:
    org = client.create({"resourceType": "Organization", "name": "EHPAD"})["id"]
    doctor = client.create({"resourceType": "Practitioner", "name": [{"family": "Vidal"}]})["id"]
    other_doctor = client.create({"resourceType": "Practitioner", "name": [{"family": "Autre"}]})["id"]
    alice = client.create(patient(family="Alice", managingOrganization={"reference": f"Organization/{org}"}))["id"]
    bob = client.create(patient(family="Bob"))["id"]
    obs = [client.create(dict(observation(f"Patient/{alice}", value=60 + i),
                              performer=[{"reference": f"Practitioner/{doctor}"}]))["id"] for i in range(7)]
    condition = client.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{alice}"},
                               "code": {"text": "Hypertension"}})["id"]
    stay = client.create({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "HH"},
                          "subject": {"reference": f"Patient/{alice}"},
                          "serviceProvider": {"reference": f"Organization/{org}"}})["id"]
    # Bob's record must never show up in Alice's, even through a shared reference
    client.create(dict(observation(f"Patient/{bob}"), performer=[{"reference": f"Practitioner/{other_doctor}"}]))
    client.create({"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{bob}"},
                   "name": [{"family": "Fils"}]})
    return {"alice": alice, "bob": bob, "org": org, "doctor": doctor, "obs": obs, "condition": condition,
            "stay": stay, "other_doctor": other_doctor}


def test_everything_is_the_patient_its_compartment_and_what_it_points_at(client: FhirClient,
                                                                        record: dict[str, Any]) -> None:
    pages = _all_pages(client, f"Patient/{record['alice']}/$everything")
    found = [(e["resource"]["resourceType"], e["resource"]["id"]) for p in pages for e in p.get("entry", [])]
    expected = {("Patient", record["alice"]), ("Condition", record["condition"]), ("Encounter", record["stay"]),
                ("Organization", record["org"]), ("Practitioner", record["doctor"]),
                *(("Observation", o) for o in record["obs"])}
    assert set(found) == expected
    assert len(found) == len(expected)  # no duplicate
    assert ("Patient", record["bob"]) not in found


def test_everything_pages_through_both_phases(client: FhirClient, record: dict[str, Any]) -> None:
    single = {e["resource"]["id"] for p in _all_pages(client, f"Patient/{record['alice']}/$everything")
              for e in p.get("entry", [])}
    for count in (1, 2, 3, 9, 10, 11):
        pages = _all_pages(client, f"Patient/{record['alice']}/$everything?_count={count}")
        paged = [e["resource"]["id"] for p in pages for e in p.get("entry", [])]
        assert len(paged) == len(set(paged)) == len(single), count
        assert set(paged) == single
        assert all(len(p.get("entry", [])) <= count for p in pages)
        assert pages[-1].get("entry"), "no empty last page"


def test_everything_paging_while_the_record_grows(client: FhirClient, record: dict[str, Any]) -> None:
    first = client.search(f"Patient/{record['alice']}/$everything?_count=4")
    added = client.create(observation(f"Patient/{record['alice']}", value=99))["id"]
    rest = [first]
    while (nxt := next((lk["url"] for lk in rest[-1]["link"] if lk["relation"] == "next"), None)) is not None:
        rest.append(client.search(nxt.replace("http://testserver/fhir/", "")))
    seen = [e["resource"]["id"] for p in rest for e in p.get("entry", [])]
    assert len(seen) == len(set(seen))
    assert added in seen  # newer rows come after the position already read
    assert set(record["obs"]) <= set(seen)


def test_everything_type_and_since(client: FhirClient, record: dict[str, Any]) -> None:
    only = client.search(f"Patient/{record['alice']}/$everything?_type=Condition,Encounter")
    assert {e["resource"]["resourceType"] for e in only["entry"]} == {"Condition", "Encounter"}
    time.sleep(0.01)
    marker = client.create(observation(f"Patient/{record['alice']}", value=55))
    since = marker["meta"]["lastUpdated"]
    recent = client.search(f"Patient/{record['alice']}/$everything?_since={since}")
    assert [e["resource"]["id"] for e in recent["entry"]] == [marker["id"]]


def test_everything_errors(client: FhirClient, record: dict[str, Any]) -> None:
    assert client.get("Patient/nobody/$everything").status_code == 404
    assert client.get(f"Patient/{record['alice']}/$everything?_type=Nope").status_code == 400
    assert client.get(f"Patient/{record['alice']}/$everything?_since=hier").status_code == 400
    unknown = client.get(f"Observation/{record['obs'][0]}/$everything")
    assert unknown.status_code == 404
    assert outcome_codes(unknown) == ["not-supported"]
    assert client.request("DELETE", f"Patient/{record['alice']}/$everything").status_code == 405
    client.delete(f"Patient/{record['bob']}")
    assert client.get(f"Patient/{record['bob']}/$everything").status_code == 410


def test_read_with_summary_and_elements(client: FhirClient, record: dict[str, Any]) -> None:
    read = client.get(f"Patient/{record['alice']}?_elements=name")
    assert set(read.get_json()) == {"resourceType", "id", "meta", "name"}
    assert client.get(f"Patient/{record['alice']}?_summary=nope").status_code == 400


def test_capability_lists_everything(client: FhirClient) -> None:
    rest = client.get("metadata").get_json()["rest"][0]
    patient_cs = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"} \
        in patient_cs["operation"]
    names = {op["name"] for op in patient_cs["operation"]}
    assert {"match", "merge", "unmerge", "ins-fetch", "ins-verify", "identity-check", "identity-withdraw"} <= names
    observation_cs = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert [op["name"] for op in observation_cs["operation"]] == ["validate"]  # the Patient ones stay on Patient
    assert {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"} \
        in rest["operation"]
