"""history at instance, type and system level (http://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

import time

from tests.helpers import FhirClient, observation, patient


def _entries(bundle: dict) -> list[dict]:
    return bundle.get("entry", [])


def test_instance_history_lists_every_version_newest_first(client: FhirClient) -> None:
    created = client.create(patient())
    path = f"Patient/{created['id']}"
    client.put(path, dict(created, active=True))
    client.delete(path)
    bundle = client.search(f"{path}/_history")
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    entries = _entries(bundle)
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["active"] is True
    assert entries[2]["response"]["status"].startswith("201")
    assert entries[2]["fullUrl"] == f"http://testserver/fhir/{path}"


def test_type_and_system_history(client: FhirClient) -> None:
    p = client.create(patient())
    client.create(observation(f"Patient/{p['id']}"))
    assert [e["resource"]["resourceType"] for e in _entries(client.search("Patient/_history"))] == ["Patient"]
    assert [e["resource"]["resourceType"] for e in _entries(client.search("_history"))] == ["Observation", "Patient"]


def test_history_paging_and_since(client: FhirClient) -> None:
    made = [client.create(patient(family=f"P{i}"))["id"] for i in range(5)]
    first = client.search("Patient/_history?_count=2")
    assert [e["resource"]["id"] for e in _entries(first)] == made[:-3:-1]
    next_url = next(lk["url"] for lk in first["link"] if lk["relation"] == "next")
    client.create(patient(family="Late"))  # a write between pages does not shift them
    second = client.search(next_url.replace("http://testserver/fhir/", ""))
    assert [e["resource"]["id"] for e in _entries(second)] == [made[2], made[1]]
    time.sleep(0.01)
    since = client.search("Patient/_history")["entry"][0]["response"]["lastModified"]
    recent = client.search(f"Patient/_history?_since={since}")
    assert [e["resource"]["name"][0]["family"] for e in _entries(recent)] == ["Late"]


def test_history_errors(client: FhirClient) -> None:
    assert client.get("Patient/unknown/_history").status_code == 404
    assert client.get("Patient/_history?_since=yesterday").status_code == 400
    assert client.get("_history?_count=x").status_code == 400
    assert client.get("_history?_sort=x", headers={"Prefer": "handling=strict"}).status_code == 400
    assert client.request("POST", "Patient/_history", {}).status_code == 405
