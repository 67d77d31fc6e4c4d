"""Real FHIR clients from PyPI (fhirpy, fhirclient) against ``dui serve``."""

from __future__ import annotations

import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle as SmartBundle
from fhirclient.models.patient import Patient as SmartPatient
from fhirpy import SyncFHIRClient

from tests.helpers import patient

pytestmark = pytest.mark.server


def test_fhirpy_create_read_search_update_with_if_match_history(fhir_base: str) -> None:
    client = SyncFHIRClient(fhir_base, extra_headers={"Accept": "application/fhir+json"})
    resident = client.resource("Patient", **patient(family="Lefèvre", given="Hélène"))
    resident.save()
    assert resident.id and resident.meta.versionId == "1"

    fetched = client.reference("Patient", resident.id).to_resource()
    assert fetched.name[0].family == "Lefèvre"

    found = client.resources("Patient").search(name="helene").fetch()
    assert [p.id for p in found] == [resident.id]

    fetched.active = True
    fetched.save()  # fhirpy sends If-Match with the version it read
    assert fetched.meta.versionId == "2"

    stale = client.resource("Patient", **{**patient(), "id": resident.id, "meta": {"versionId": "1"}})
    response = requests.put(f"{fhir_base}/Patient/{resident.id}", json=stale.serialize(),
                            headers={"If-Match": 'W/"1"', "Content-Type": "application/fhir+json"}, timeout=30)
    assert response.status_code == 412

    history = requests.get(f"{fhir_base}/Patient/{resident.id}/_history", timeout=30).json()
    assert history["total"] == 2


def test_fhirpy_transaction(fhir_base: str) -> None:
    client = SyncFHIRClient(fhir_base)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1b6c1f7e-5d2b-4a6f-9f43-2c1e9a7d0b01", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Poids"},
                      "subject": {"reference": "urn:uuid:1b6c1f7e-5d2b-4a6f-9f43-2c1e9a7d0b01"},
                      "valueQuantity": {"value": 61.2, "unit": "kg"}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    result = client.execute("", method="post", data=bundle)
    assert result["type"] == "transaction-response"
    patient_id = result["entry"][0]["resource"]["id"]
    observations = client.resources("Observation").search(subject=f"Patient/{patient_id}").fetch_all()
    assert len(observations) == 1
    assert str(observations[0].valueQuantity.value) == "61.2"


def test_fhirclient_create_read_search(fhir_base: str) -> None:
    smart = smart_client.FHIRClient(settings={"app_id": "dui-tests", "api_base": fhir_base + "/"})
    resident = SmartPatient(patient(family="Dupont", given="Jean-Pierre"))
    created = resident.create(smart.server)
    assert created["resourceType"] == "Patient"
    read = SmartPatient.read(created["id"], smart.server)
    assert read.name[0].given == ["Jean-Pierre"]
    bundle = SmartPatient.where(struct={"given": "jean pierre"}).perform(smart.server)
    assert isinstance(bundle, SmartBundle)
    assert [e.resource.id for e in bundle.entry] == [created["id"]]
    read.gender = "male"
    read.update(smart.server)
    assert SmartPatient.read(created["id"], smart.server).gender == "male"
