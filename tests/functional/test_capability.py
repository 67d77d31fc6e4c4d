"""The CapabilityStatement says what the server does, and the server does what it says
(http://hl7.org/fhir/R4/capabilitystatement.html)."""

from __future__ import annotations

import fhir_profiles
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.search.plan import NO_NARRATIVE
from tests.helpers import FhirClient, patient


def test_metadata_describes_a_fhir_4_0_1_json_server(client: FhirClient) -> None:
    response = client.get("metadata")
    assert response.status_code == 200
    cs = response.get_json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert cs["format"] == ["application/fhir+json", "json", "application/fhir+xml", "xml"]
    assert cs["implementation"]["url"] == "http://testserver/fhir"
    rest = cs["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system", "search-system"}
    types = {r["type"] for r in rest["resource"]}
    assert {"Patient", "Observation", "MedicationRequest", "DocumentReference", "MedicinalProduct"} <= types
    assert "Parameters" not in types
    assert "SubscriptionStatus" not in types  # R4B and later: not a resource type of 4.0.1
    assert {"Evidence", "EvidenceVariable", "EffectEvidenceSynthesis"} <= types  # these are R4's
    later = client.post("SubscriptionStatus", {"resourceType": "SubscriptionStatus", "status": "active"})
    assert later.status_code in (400, 404) and later.get_json()["resourceType"] == "OperationOutcome"


def test_every_listed_patient_interaction_is_served(client: FhirClient) -> None:
    rest = client.get("metadata").get_json()["rest"][0]
    patient_cs = next(r for r in rest["resource"] if r["type"] == "Patient")
    created = client.create(patient(identifier=[{"system": "urn:ipp", "value": "1"}]))
    path = f"Patient/{created['id']}"
    calls = {
        "read": lambda: client.get(path),
        "vread": lambda: client.get(f"{path}/_history/1"),
        "update": lambda: client.put(path, dict(created, active=True)),
        "patch": lambda: client.patch(path, [{"op": "add", "path": "/active", "value": False}],
                                      content_type="application/json-patch+json"),
        "history-instance": lambda: client.get(f"{path}/_history"),
        "history-type": lambda: client.get("Patient/_history"),
        "create": lambda: client.post("Patient", patient()),
        "search-type": lambda: client.get("Patient?identifier=urn:ipp|1"),
        "delete": lambda: client.delete(path),
    }
    listed = [i["code"] for i in patient_cs["interaction"]]
    assert set(listed) == set(calls)
    for code in listed:
        assert calls[code]().status_code in (200, 201, 204), code
    assert patient_cs["conditionalDelete"] == "single"
    assert patient_cs["versioning"] == "versioned-update"


# The resource types a resident's record is made of (issue 3's list).
DUI_TYPES = ("Patient", "RelatedPerson", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter",
             "EpisodeOfCare", "Observation", "Condition", "AllergyIntolerance", "MedicationRequest",
             "MedicationAdministration", "MedicationStatement", "Immunization", "Procedure", "CarePlan", "Goal",
             "ServiceRequest", "Task", "QuestionnaireResponse", "Questionnaire", "Consent", "DocumentReference",
             "Composition", "Flag", "Communication", "Device", "Appointment", "Provenance", "AuditEvent", "List")


def test_every_listed_search_parameter_is_accepted_strictly(client: FhirClient) -> None:
    """No parameter is advertised that strict handling would refuse, on every type the DUI uses."""
    rest = client.get("metadata").get_json()["rest"][0]
    samples = {"string": "a", "token": "a", "reference": "Patient/a", "date": "2026", "number": "1",
               "quantity": "1", "uri": "http://a"}
    registry = SearchParameterRegistry()
    registry.add_definitions(fhir_profiles.definitions())  # the DUI's own parameters, as the service does
    for rtype in DUI_TYPES:
        resource = next(r for r in rest["resource"] if r["type"] == rtype)
        text = {"_content"} | ({"_text"} if rtype not in NO_NARRATIVE else set())  # not in the registry
        assert len(resource["searchParam"]) == len(registry.for_type(rtype)) + len(text), rtype
        for param in resource["searchParam"]:
            sample = samples.get(param["type"])
            if param["type"] == "composite":
                first, second = registry.get(rtype, param["name"]).components
                sample = f"{samples[first.kind]}${samples[second.kind]}"
            response = client.get(f"{rtype}?{param['name']}={sample}", headers={"Prefer": "handling=strict"})
            assert response.status_code == 200, (rtype, param, response.get_data(as_text=True))


def test_metadata_says_how_to_authenticate(client: FhirClient) -> None:
    security = client.get("metadata").get_json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]["extension"]
    assert uris == [{"url": "token", "valueUri": "http://testserver/auth/token"}]
