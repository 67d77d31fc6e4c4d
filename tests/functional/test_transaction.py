"""transaction and batch Bundles (http://hl7.org/fhir/R4/http.html#transaction)."""

from __future__ import annotations

from typing import Any

from ins import InsKind
from tests.helpers import FhirClient, diagnostics, ins_identifier, observation, outcome_codes, patient

INS = "279035121518989"


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"],
                                                               **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_transaction_resolves_urn_uuid_references(client: FhirClient) -> None:
    pid = "urn:uuid:7d7b3d5e-1b9b-4f9e-9d1a-0d3b3c2f0a11"
    response = client.post("", _bundle("transaction", _post(observation(pid)), _post(patient(), pid)))
    assert response.status_code == 200
    bundle = response.get_json()
    assert bundle["type"] == "transaction-response"
    obs_entry, patient_entry = bundle["entry"]  # same order as the request
    assert obs_entry["response"]["status"] == "201 Created"
    assert patient_entry["response"]["location"].startswith("Patient/")
    patient_id = patient_entry["resource"]["id"]
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    stored = client.get(obs_entry["response"]["location"].rsplit("/_history", 1)[0]).get_json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_reads_relative_references_against_absolute_full_urls(client: FhirClient) -> None:
    """bundle.html#references: Patient/p1 inside https://other.example/fhir/Observation/o1 is the entry
    https://other.example/fhir/Patient/p1; a reference to nothing in the bundle stays as written."""
    base = "https://other.example/fhir/"
    obs = observation("Patient/p1")
    obs["performer"] = [{"reference": "Practitioner/elsewhere"}]
    response = client.post("", _bundle("transaction", _post(obs, base + "Observation/o1"),
                                       _post(patient(), base + "Patient/p1")))
    assert response.status_code == 200, response.get_data(as_text=True)
    obs_entry, patient_entry = response.get_json()["entry"]
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{patient_entry['resource']['id']}"
    assert obs_entry["resource"]["performer"][0]["reference"] == "Practitioner/elsewhere"


def test_transaction_is_all_or_nothing(client: FhirClient) -> None:
    """One bad entry: 400 naming the entry, and nothing from the bundle is stored."""
    response = client.post("", _bundle("transaction", _post(patient(family="Premier")),
                                       _post(patient(gender="F"))))
    assert response.status_code == 400
    assert "Bundle.entry[1]" in diagnostics(response)
    assert client.search("Patient")["total"] == 0


def test_transaction_rolls_back_on_a_late_failure(client: FhirClient) -> None:
    """A failure after writes (here a duplicate INS) leaves nothing half-written."""
    client.create(patient(identifier=[ins_identifier(INS)]))
    response = client.post("", _bundle(
        "transaction",
        _post(patient(family="Nouveau")),
        {"resource": patient(id="x1", identifier=[ins_identifier(INS)]),
         "request": {"method": "PUT", "url": "Patient/x1"}},
    ))
    assert response.status_code == 409
    assert outcome_codes(response)[0] == "duplicate"
    assert client.search("Patient?family=nouveau")["total"] == 0
    assert client.get("Patient/x1").status_code == 404


def test_transaction_processing_order(client: FhirClient) -> None:
    """DELETE, then POST, then PUT, then GET, whatever the order in the bundle (http.html#trules)."""
    old = client.create(patient(family="Ancien"))
    response = client.post("", _bundle(
        "transaction",
        {"request": {"method": "GET", "url": "Patient?family=ancien"}},
        {"resource": patient(id="p2", family="Nouveau"), "request": {"method": "PUT", "url": "Patient/p2"}},
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    ))
    assert response.status_code == 200
    search_entry, put_entry, delete_entry = response.get_json()["entry"]
    assert search_entry["resource"]["total"] == 0  # the GET ran after the DELETE
    assert put_entry["response"]["status"] == "201 Created"
    assert delete_entry["response"]["status"] == "204 No Content"


def test_transaction_conditional_create_reuses_the_existing_resource(client: FhirClient) -> None:
    existing = client.create(patient(identifier=[ins_identifier(INS)]))
    pid = "urn:uuid:2f0b8f4e-7f59-4b3e-8c43-4b0e6a1e0a01"
    query = f"identifier={InsKind.TEST.system}|{INS}"
    response = client.post("", _bundle("transaction",
                                       _post(patient(identifier=[ins_identifier(INS)]), pid, ifNoneExist=query),
                                       _post(observation(pid))))
    assert response.status_code == 200
    patient_entry, obs_entry = response.get_json()["entry"]
    assert patient_entry["response"]["status"] == "200 OK"
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert client.search("Patient")["total"] == 1


def test_transaction_conditional_reference(client: FhirClient) -> None:
    existing = client.create(patient(identifier=[ins_identifier(INS)]))
    ref = f"Patient?identifier={InsKind.TEST.system}|{INS}"
    response = client.post("", _bundle("transaction", _post(observation(ref))))
    assert response.status_code == 200
    assert response.get_json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    missing = client.post("", _bundle("transaction", _post(observation("Patient?identifier=urn:x|none"))))
    assert missing.status_code == 412


def test_transaction_conditional_update_and_patch(client: FhirClient) -> None:
    existing = client.create(patient(identifier=[{"system": "urn:ipp", "value": "9"}]))
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "male"}]}]}
    response = client.post("", _bundle(
        "transaction",
        {"resource": patient(family="Créé", identifier=[{"system": "urn:ipp", "value": "10"}]),
         "request": {"method": "PUT", "url": "Patient?identifier=urn:ipp|10"}},
        {"resource": parameters, "request": {"method": "PATCH", "url": f"Patient/{existing['id']}"}},
    ))
    assert response.status_code == 200, response.get_data(as_text=True)
    created, patched = response.get_json()["entry"]
    assert created["response"]["status"] == "201 Created"
    assert patched["resource"]["gender"] == "male"


def test_transaction_refuses_unresolved_and_duplicate_targets(client: FhirClient) -> None:
    dangling = observation("urn:uuid:00000000-0000-0000-0000-000000000000")
    unresolved = client.post("", _bundle("transaction", _post(dangling)))
    assert unresolved.status_code == 400
    twice = client.post("", _bundle(
        "transaction",
        {"resource": patient(id="a"), "request": {"method": "PUT", "url": "Patient/a"}},
        {"request": {"method": "DELETE", "url": "Patient/a"}},
    ))
    assert twice.status_code == 400
    assert client.search("Patient")["total"] == 0


def test_bundle_limits_and_types(client: FhirClient) -> None:
    too_big = _bundle("transaction", *[_post(patient()) for _ in range(201)])
    response = client.post("", too_big)
    assert response.status_code == 413
    assert outcome_codes(response) == ["too-costly"]
    assert client.post("", _bundle("collection")).status_code == 400
    assert client.post("", patient()).status_code == 400
    assert client.get("").status_code == 400  # a search of several types, which names them (_type)
    assert client.request("DELETE", "").status_code == 405


def test_batch_entries_succeed_or_fail_on_their_own(client: FhirClient) -> None:
    response = client.post("", _bundle(
        "batch",
        _post(patient(family="Bon")),
        _post(patient(gender="F")),
        {"request": {"method": "GET", "url": "Patient/nope"}},
        _post(observation("urn:uuid:8c2b1d20-1111-4d4d-8a8a-111111111111")),
    ))
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "400 Bad Request"]
    assert response.get_json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert client.search("Patient")["total"] == 1


def test_batch_failed_write_is_rolled_back_alone(client: FhirClient) -> None:
    client.create(patient(identifier=[ins_identifier(INS)]))
    response = client.post("", _bundle(
        "batch",
        _post(patient(family="Doublon", identifier=[ins_identifier(INS)])),
        _post(patient(family="Seul")),
    ))
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert statuses == ["409 Conflict", "201 Created"]
    assert client.search("Patient?family=seul")["total"] == 1
    assert client.search("Patient?family=doublon")["total"] == 0


def test_transaction_prefer_minimal(client: FhirClient) -> None:
    response = client.post("", _bundle("transaction", _post(patient())), headers={"Prefer": "return=minimal"})
    entry = response.get_json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["etag"] == 'W/"1"'
