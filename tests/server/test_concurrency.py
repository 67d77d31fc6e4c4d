"""Races against a real server with several workers: the database keeps the store consistent.

Several major FHIR servers create duplicates on concurrent conditional creates (PEERS.md §2.3);
here the criteria are locked before they are searched, and the INS is a UNIQUE constraint.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from ins import InsKind
from tests.helpers import ins_identifier, patient

pytestmark = pytest.mark.server
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _race(n: int, call: Any) -> list[requests.Response]:
    barrier = threading.Barrier(n)

    def run(i: int) -> requests.Response:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _count(fhir_base: str, query: str) -> int:
    return int(requests.get(f"{fhir_base}/{query}", headers=JSON, timeout=30).json()["total"])


def test_fifty_identical_conditional_creates_leave_exactly_one(fhir_base: str) -> None:
    query = "identifier=urn:ehpad:ipp|R-0042"
    body = patient(identifier=[{"system": "urn:ehpad:ipp", "value": "R-0042"}])
    responses = _race(50, lambda i: requests.post(f"{fhir_base}/Patient", json=body, timeout=60,
                                                  headers={**JSON, "If-None-Exist": query}))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 49}, statuses
    assert len({r.json()["id"] for r in responses}) == 1
    assert _count(fhir_base, f"Patient?{query}") == 1


def test_fifty_conditional_creates_on_the_ins(fhir_base: str) -> None:
    ins = "279035121518989"
    query = f"identifier={InsKind.TEST.system}|{ins}"
    body = patient(identifier=[ins_identifier(ins)])
    responses = _race(50, lambda i: requests.post(f"{fhir_base}/Patient", json=body, timeout=60,
                                                  headers={**JSON, "If-None-Exist": query}))
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 49}
    assert len({r.json()["id"] for r in responses}) == 1


def test_concurrent_plain_creates_of_one_ins_give_one_resident(fhir_base: str) -> None:
    body = patient(identifier=[ins_identifier("185057512345673")])
    responses = _race(20, lambda i: requests.post(f"{fhir_base}/Patient", json=body, headers=JSON, timeout=60))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 19}, statuses
    assert all(r.json()["issue"][0]["code"] == "duplicate" for r in responses if r.status_code == 409)
    assert _count(fhir_base, "Patient") == 1


def test_concurrent_updates_with_the_same_if_match(fhir_base: str) -> None:
    """Optimistic locking under contention: one update wins, the others get 412."""
    created = requests.post(f"{fhir_base}/Patient", json=patient(), headers=JSON, timeout=30).json()
    url = f"{fhir_base}/Patient/{created['id']}"
    responses = _race(10, lambda i: requests.put(url, json=dict(created, birthDate=f"1930-01-{i + 1:02d}"),
                                                 headers={**JSON, "If-Match": 'W/"1"'}, timeout=60))
    assert Counter(r.status_code for r in responses) == {200: 1, 412: 9}
    assert requests.get(url, headers=JSON, timeout=30).headers["ETag"] == 'W/"2"'


def test_concurrent_updates_without_if_match_all_land_in_order(fhir_base: str) -> None:
    created = requests.post(f"{fhir_base}/Patient", json=patient(), headers=JSON, timeout=30).json()
    url = f"{fhir_base}/Patient/{created['id']}"
    responses = _race(10, lambda i: requests.put(url, json=dict(created, birthDate=f"1930-02-{i + 1:02d}"),
                                                 headers=JSON, timeout=60))
    assert Counter(r.status_code for r in responses) == {200: 10}
    versions = sorted(int(r.headers["ETag"][3:-1]) for r in responses)
    assert versions == list(range(2, 12))
    history = requests.get(f"{url}/_history?_count=50", headers=JSON, timeout=30).json()
    assert history["total"] == 11


def test_concurrent_update_as_create_of_one_id(fhir_base: str) -> None:
    responses = _race(10, lambda i: requests.put(f"{fhir_base}/Patient/same-id", json=patient(id="same-id",
                      birthDate=f"1931-03-{i + 1:02d}"), headers=JSON, timeout=60))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 200: 9}, statuses


def _parameters(**refs: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": name.replace("_", "-"), "valueReference": {"reference": f"Patient/{pid}"}}
        for name, pid in refs.items()]}


def _resident(fhir_base: str, **extra: Any) -> str:
    from tests.functional.test_identity import resident

    response = requests.post(f"{fhir_base}/Patient", json=resident(**extra), headers=JSON, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_twenty_concurrent_merges_in_both_directions_leave_one_record(fhir_base: str) -> None:
    """Merges of the same two records, half one way and half the other: one wins, nothing lost or doubled."""
    a, b = _resident(fhir_base), _resident(fhir_base)
    observations = []
    for pid in (a, b):
        for i in range(3):
            body = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "valueQuantity": {"value": 60 + i, "unit": "kg"}}
            observations.append(requests.post(f"{fhir_base}/Observation", json=body, headers=JSON,
                                              timeout=30).json()["id"])
    responses = _race(20, lambda i: requests.post(
        f"{fhir_base}/Patient/$merge", headers=JSON, timeout=60,
        json=_parameters(source_patient=a, target_patient=b) if i % 2 else _parameters(source_patient=b,
                                                                                       target_patient=a)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 19}, statuses
    winner = next(r.json() for r in responses if r.status_code == 200)
    survivor = next(p["resource"]["id"] for p in winner["parameter"] if p["name"] == "result")
    subjects = {requests.get(f"{fhir_base}/Observation/{oid}", headers=JSON, timeout=30).json()["subject"]["reference"]
                for oid in observations}
    assert subjects == {f"Patient/{survivor}"}
    assert _count(fhir_base, "Patient") == 2 and _count(fhir_base, "Patient?active=false") == 1
    assert _count(fhir_base, "Observation") == 6
    assert _count(fhir_base, f"Provenance?target=Patient/{survivor}") == 1


def test_concurrent_insi_fetches_never_give_one_ins_to_two_records(fhir_base: str) -> None:
    """Two records of one person ask INSi at once: one gets the INS, the other is told it is a duplicate."""
    first, second = _resident(fhir_base), _resident(fhir_base)
    responses = _race(20, lambda i: requests.post(f"{fhir_base}/Patient/{(first, second)[i % 2]}/$ins-fetch",
                                                  headers=JSON, timeout=60))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 409} and statuses[200] >= 1 and statuses[409] >= 1, statuses
    assert all(r.json()["issue"][0]["code"] == "duplicate" for r in responses if r.status_code == 409)
    holders = {r.url.split("/")[-2] for r in responses if r.status_code == 200}
    assert len(holders) == 1
    from ins.insi.table import LYON

    assert _count(fhir_base, f"Patient?identifier={LYON.identity.matricule}") == 1
