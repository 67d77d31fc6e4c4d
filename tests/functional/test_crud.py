"""read, vread, create, update, delete (http://hl7.org/fhir/R4/http.html).

Each test asserts the HTTP status and, for errors, the OperationOutcome issue code.
"""

from __future__ import annotations

from tests.helpers import FhirClient, diagnostics, outcome_codes, patient


def test_create_answers_201_with_location_etag_and_server_meta(client: FhirClient) -> None:
    """create: 201, Location with the version, ETag, server-assigned id and meta (http.html#create)."""
    response = client.post("Patient", patient(id="client-chosen", meta={"versionId": "99"}))
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] != "client-chosen"  # the server ignores an id sent with create
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_current_version_with_etag(client: FhirClient) -> None:
    created = client.create(patient())
    response = client.get(f"Patient/{created['id']}")
    assert response.status_code == 200
    assert response.get_json() == created
    assert response.headers["ETag"] == 'W/"1"'


def test_stored_json_keeps_decimal_text_and_client_order(client: FhirClient) -> None:
    """Decimals keep their precision (datatypes.html#decimal): 37.50 stays 37.50, 1e3 stays 1e3."""
    body = ('{"resourceType":"Observation","status":"final","code":{"text":"T"},'
            '"valueQuantity":{"value":37.50,"unit":"Cel"},"component":[{"code":{"text":"x"},'
            '"valueQuantity":{"value":1e3}}]}')
    response = client.post("Observation", body)
    assert response.status_code == 201
    read = client.get(f"Observation/{response.get_json()['id']}").get_data(as_text=True)
    assert '"value":37.50' in read
    assert '"value":1e3' in read


def test_read_unknown_is_404_not_found(client: FhirClient) -> None:
    response = client.get("Patient/does-not-exist")
    assert response.status_code == 404
    assert outcome_codes(response) == ["not-found"]


def test_read_invalid_id_is_400(client: FhirClient) -> None:
    response = client.get("Patient/" + "x" * 65)
    assert response.status_code == 400
    assert outcome_codes(response) == ["invalid"]


def test_unknown_resource_type_is_404(client: FhirClient) -> None:
    response = client.get("Patients/1")
    assert response.status_code == 404
    assert outcome_codes(response) == ["not-supported"]
    assert "case-sensitive" in diagnostics(response)


def test_every_r4_resource_type_can_be_stored(client: FhirClient) -> None:
    """R4-only types (absent from the R4B models) are stored too, checked by the R4 tables."""
    for resource in (
        {"resourceType": "MedicinalProduct", "name": [{"productName": "Doliprane"}]},
        {"resourceType": "Basic", "code": {"text": "note"}},
        {"resourceType": "Flag", "status": "active", "code": {"text": "Risque de chute"},
         "subject": {"reference": "Patient/x"}},
    ):
        response = client.post(resource["resourceType"], resource)
        assert response.status_code == 201, response.get_data(as_text=True)


def test_parameters_is_not_stored(client: FhirClient) -> None:
    response = client.post("Parameters", {"resourceType": "Parameters"})
    assert response.status_code == 404
    assert outcome_codes(response) == ["not-supported"]


def test_vread_returns_old_versions_unchanged(client: FhirClient) -> None:
    """History is never rewritten: version 1 reads the same after an update (http.html#vread)."""
    created = client.create(patient())
    changed = dict(created, gender="male")
    assert client.put(f"Patient/{created['id']}", changed).status_code == 200
    v1 = client.get(f"Patient/{created['id']}/_history/1")
    assert v1.status_code == 200
    assert v1.get_json()["gender"] == "female"
    assert v1.headers["ETag"] == 'W/"1"'
    v2 = client.get(f"Patient/{created['id']}/_history/2").get_json()
    assert v2["gender"] == "male"
    assert v2["meta"]["versionId"] == "2"


def test_vread_unknown_version_is_404(client: FhirClient) -> None:
    created = client.create(patient())
    assert client.get(f"Patient/{created['id']}/_history/7").status_code == 404
    response = client.get(f"Patient/{created['id']}/_history/abc")
    assert response.status_code == 400


def test_conditional_read(client: FhirClient) -> None:
    """If-None-Match and If-Modified-Since answer 304 when the client's copy is current (http.html#cread)."""
    created = client.create(patient())
    path = f"Patient/{created['id']}"
    assert client.get(path, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(path, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    last_modified = client.get(path).headers["Last-Modified"]
    assert client.get(path, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert client.get(path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_update_writes_next_version(client: FhirClient) -> None:
    created = client.create(patient())
    response = client.put(f"Patient/{created['id']}", dict(created, active=True))
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"2"'
    assert response.get_json()["active"] is True


def test_update_as_create_with_client_id(client: FhirClient) -> None:
    response = client.put("Patient/resident-42", patient(id="resident-42"))
    assert response.status_code == 201
    assert response.headers["Location"].endswith("/Patient/resident-42/_history/1")


def test_update_requires_matching_id(client: FhirClient) -> None:
    """The body's id must equal the URL's (http.html#update): 400 otherwise."""
    missing = client.put("Patient/a", patient())
    assert missing.status_code == 400
    assert outcome_codes(missing) == ["invalid"]
    different = client.put("Patient/a", patient(id="b"))
    assert different.status_code == 400
    assert "differs" in diagnostics(different)


def test_update_unchanged_writes_no_version(client: FhirClient) -> None:
    created = client.create(patient())
    again = client.put(f"Patient/{created['id']}", created)
    assert again.status_code == 200
    assert again.headers["ETag"] == 'W/"1"'
    history = client.search(f"Patient/{created['id']}/_history")
    assert history["total"] == 1


def test_if_match_current_version_updates(client: FhirClient) -> None:
    created = client.create(patient())
    response = client.put(f"Patient/{created['id']}", dict(created, active=True), headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200


def test_if_match_stale_version_is_412(client: FhirClient) -> None:
    """Optimistic locking: a stale If-Match gets 412 and writes nothing (http.html#concurrency)."""
    created = client.create(patient())
    client.put(f"Patient/{created['id']}", dict(created, active=True))
    response = client.put(f"Patient/{created['id']}", dict(created, active=False), headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert outcome_codes(response) == ["conflict"]
    assert client.get(f"Patient/{created['id']}").get_json()["active"] is True


def test_if_match_malformed_is_400(client: FhirClient) -> None:
    created = client.create(patient())
    response = client.put(f"Patient/{created['id']}", created, headers={"If-Match": "yesterday"})
    assert response.status_code == 400


def test_delete_then_read_is_410(client: FhirClient) -> None:
    """delete writes a tombstone; read answers 410 Gone (http.html#delete)."""
    created = client.create(patient())
    response = client.delete(f"Patient/{created['id']}")
    assert response.status_code == 204
    assert response.headers["ETag"] == 'W/"2"'
    gone = client.get(f"Patient/{created['id']}")
    assert gone.status_code == 410
    assert outcome_codes(gone) == ["deleted"]
    assert client.get(f"Patient/{created['id']}/_history/1").status_code == 200
    assert client.get(f"Patient/{created['id']}/_history/2").status_code == 410


def test_delete_is_idempotent_and_unknown_is_404(client: FhirClient) -> None:
    created = client.create(patient())
    assert client.delete(f"Patient/{created['id']}").status_code == 204
    again = client.delete(f"Patient/{created['id']}")
    assert again.status_code == 204 and "Content-Type" not in again.headers
    assert again.headers["ETag"] == 'W/"2"'  # no new version
    assert client.delete("Patient/never-existed").status_code == 404


def test_deleted_resource_leaves_search_and_can_be_recreated(client: FhirClient) -> None:
    created = client.create(patient(family="Zébulon"))
    client.delete(f"Patient/{created['id']}")
    assert client.search("Patient?family=zebulon")["total"] == 0
    again = client.put(f"Patient/{created['id']}", dict(created))
    assert again.status_code == 201
    assert again.headers["ETag"] == 'W/"3"'


def test_delete_with_stale_if_match_is_412(client: FhirClient) -> None:
    created = client.create(patient())
    response = client.delete(f"Patient/{created['id']}", headers={"If-Match": 'W/"5"'})
    assert response.status_code == 412
    assert client.get(f"Patient/{created['id']}").status_code == 200


def test_prefer_return(client: FhirClient) -> None:
    """Prefer: return=minimal | representation | OperationOutcome (http.html#ops)."""
    minimal = client.post("Patient", patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.get_data() == b""
    assert "Location" in minimal.headers
    assert "Content-Type" not in minimal.headers  # no body, no type (not text/html)
    outcome = client.post("Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.get_json()["resourceType"] == "OperationOutcome"
    assert outcome.get_json()["issue"][0]["severity"] == "information"
    full = client.post("Patient", patient(), headers={"Prefer": "return=representation"})
    assert full.get_json()["resourceType"] == "Patient"


def test_head_returns_headers_only(client: FhirClient) -> None:
    created = client.create(patient())
    response = client.request("HEAD", f"Patient/{created['id']}")
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"1"'
    assert response.get_data() == b""
