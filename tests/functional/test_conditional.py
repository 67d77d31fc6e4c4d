"""Conditional create, update, delete and patch; the INS as a unique key of the resident.

http://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #cdelete.
"""

from __future__ import annotations

from ins import InsKind
from tests.helpers import FhirClient, diagnostics, ins_identifier, outcome_codes, patient

INS = "279035121518989"
INS_QUERY = f"identifier={InsKind.TEST.system}|{INS}"


def test_conditional_create_creates_once_then_answers_the_existing(client: FhirClient) -> None:
    body = patient(identifier=[ins_identifier(INS)])
    first = client.post("Patient", body, headers={"If-None-Exist": INS_QUERY})
    assert first.status_code == 201
    second = client.post("Patient", body, headers={"If-None-Exist": INS_QUERY})
    assert second.status_code == 200
    assert second.get_json()["id"] == first.get_json()["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert client.search("Patient")["total"] == 1


def test_conditional_create_with_several_matches_is_412(client: FhirClient) -> None:
    client.create(patient(family="Durand"))
    client.create(patient(family="Durand"))
    response = client.post("Patient", patient(family="Durand"), headers={"If-None-Exist": "family=durand"})
    assert response.status_code == 412
    assert outcome_codes(response) == ["multiple-matches"]


def test_conditional_create_criteria_are_strict(client: FhirClient) -> None:
    """An ignored criterion would widen the match: unknown parameters are refused here."""
    response = client.post("Patient", patient(), headers={"If-None-Exist": "identfier=x|1"})
    assert response.status_code == 400
    assert client.search("Patient")["total"] == 0


def test_conditional_create_must_match_its_own_criteria(client: FhirClient) -> None:
    response = client.post("Patient", patient(family="Martin"), headers={"If-None-Exist": "family=bernard"})
    assert response.status_code == 400
    assert "does not match" in diagnostics(response)
    assert client.search("Patient")["total"] == 0


def test_conditional_update(client: FhirClient) -> None:
    created = client.put(f"Patient?{INS_QUERY}", patient(identifier=[ins_identifier(INS)]))
    assert created.status_code == 201
    rid = created.get_json()["id"]
    updated = client.put(f"Patient?{INS_QUERY}", patient(identifier=[ins_identifier(INS)], active=True))
    assert updated.status_code == 200
    assert updated.get_json()["id"] == rid
    assert updated.headers["ETag"] == 'W/"2"'
    wrong_id = client.put(f"Patient?{INS_QUERY}", patient(id="other", identifier=[ins_identifier(INS)]))
    assert wrong_id.status_code == 400


def test_conditional_update_with_several_matches_is_412(client: FhirClient) -> None:
    client.create(patient(family="Durand"))
    client.create(patient(family="Durand"))
    response = client.put("Patient?family=durand", patient(family="Durand"))
    assert response.status_code == 412


def test_conditional_delete(client: FhirClient) -> None:
    created = client.create(patient(identifier=[ins_identifier(INS)]))
    assert client.delete(f"Patient?{INS_QUERY}").status_code == 204
    assert client.get(f"Patient/{created['id']}").status_code == 410
    assert client.delete(f"Patient?{INS_QUERY}").status_code == 204  # nothing left to delete
    client.create(patient(family="Durand"))
    client.create(patient(family="Durand"))
    several = client.delete("Patient?family=durand")
    assert several.status_code == 412
    assert client.search("Patient?family=durand")["total"] == 2


def test_type_level_put_without_criteria_is_405(client: FhirClient) -> None:
    response = client.put("Patient", patient())
    assert response.status_code == 405
    assert "Allow" in response.headers


def test_ins_is_unique_in_the_store(client: FhirClient) -> None:
    """Two residents cannot carry the same INS: the database refuses the second (409 duplicate)."""
    client.create(patient(identifier=[ins_identifier(INS)]))
    response = client.post("Patient", patient(family="Autre", identifier=[ins_identifier(INS)]))
    assert response.status_code == 409
    assert outcome_codes(response) == ["duplicate"]
    assert INS not in diagnostics(response).replace("system|value", "")  # the message names no INS
    assert client.search("Patient")["total"] == 1


def test_ins_uniqueness_holds_on_update_too(client: FhirClient) -> None:
    client.create(patient(identifier=[ins_identifier(INS)]))
    other = client.create(patient(family="Autre", birthDate="1979-03-05"))
    response = client.put(f"Patient/{other['id']}", dict(other, identifier=[ins_identifier(INS)]))
    assert response.status_code == 409
    assert client.get(f"Patient/{other['id']}").headers["ETag"] == 'W/"1"'


def test_each_ins_kind_is_unique_and_nss_is_not(client: FhirClient) -> None:
    """NIR, NIA, TEST and DEMO are INS; an NSS (type NH) shares the NIR's OID but is not unique."""
    for kind in InsKind:
        client.create(patient(identifier=[ins_identifier("185057512345673", kind)]))
        duplicate = client.post("Patient", patient(identifier=[ins_identifier("185057512345673", kind)]))
        assert duplicate.status_code == 409, kind
    nss = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NH"}]},
           "system": InsKind.NIR.system, "value": "285031512345659"}
    assert client.post("Patient", patient(identifier=[nss])).status_code == 201
    assert client.post("Patient", patient(identifier=[nss])).status_code == 201  # two ayants droit


def test_nia_system_alone_marks_an_ins(client: FhirClient) -> None:
    untyped = {"system": InsKind.NIA.system, "value": "785057512345664"}
    assert client.post("Patient", patient(identifier=[untyped])).status_code == 201
    assert client.post("Patient", patient(identifier=[untyped])).status_code == 409


def test_deleting_a_resident_frees_the_ins(client: FhirClient) -> None:
    created = client.create(patient(identifier=[ins_identifier(INS)]))
    client.delete(f"Patient/{created['id']}")
    assert client.post("Patient", patient(identifier=[ins_identifier(INS)])).status_code == 201


def test_ins_is_unique_only_among_patients(client: FhirClient) -> None:
    """A RelatedPerson may carry the same identifier (e.g. a copy of the resident's)."""
    client.create(patient(identifier=[ins_identifier(INS)]))
    related = {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/x"},
               "identifier": [ins_identifier(INS)]}
    assert client.post("RelatedPerson", related).status_code == 201


def test_conditional_update_criteria_keep_reserved_characters(client: FhirClient) -> None:
    """A '+' or '&' inside a criterion value stays in the value (the query is not re-encoded)."""
    created = client.create(patient(identifier=[{"system": "urn:ipp", "value": "A+B&C"}]))
    response = client.put("Patient?identifier=urn:ipp|A%2BB%26C",
                          patient(identifier=[{"system": "urn:ipp", "value": "A+B&C"}], active=True))
    assert response.status_code == 200
    assert response.get_json()["id"] == created["id"]
