"""Authorization of FHIR requests by role (shared professional secret), scopes and break-the-glass,
through the router that serves HTTP and bundle entries alike."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from flask import Flask

from dui.auth.actor import Actor
from dui.auth.policy import Policy
from dui.auth.scopes import ScopeSet
from dui.errors import Forbidden
from dui.fhir import jsontext, router
from dui.fhir.interactions.base import FhirRequest
from dui.services import Services
from tests.helpers import FhirClient, observation, patient

FINESS = "690002662"


def actor(*roles: str, scopes: str = "") -> Actor:
    return Actor("staff", "staff-1", frozenset(roles), FINESS, scopes=ScopeSet.parse(scopes) if scopes else ScopeSet())


def call(app: Flask, who: Actor, method: str, path: str, body: Any = None, policy: Policy | None = None,
         **headers: str) -> Any:
    svc: Services = app.extensions["dui"]
    query = ()
    if "?" in path:
        path, _, raw = path.partition("?")
        query = tuple(tuple(p.split("=", 1)) for p in raw.split("&"))  # type: ignore[misc]
    req = FhirRequest(method, path, query, {k.replace("_", "-").lower(): v for k, v in headers.items()},
                      json.dumps(body).encode() if body is not None else None)
    with svc.unit_of_work(write=method != "GET") as session:
        ctx = svc.fhir_context(session, who, req.header("x-break-glass"))
        if policy is not None:
            ctx = dataclasses.replace(ctx, policy=policy)
        result = router.handle(ctx, req)
        body_out = json.loads(result.body if isinstance(result.body, bytes) else jsontext.dump(result.body))
        return result.status, body_out


def organization(client: FhirClient, finess: str = FINESS) -> str:
    return str(client.create({"resourceType": "Organization", "name": f"EHPAD {finess}", "identifier": [
        {"system": "https://finess.esante.gouv.fr", "value": finess}]})["id"])


@pytest.fixture
def record(client: FhirClient) -> dict[str, str]:
    org = organization(client)
    pid = client.create(patient(managingOrganization={"reference": f"Organization/{org}"}))["id"]
    condition = client.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
                               "code": {"text": "Démence"}})["id"]
    obs = client.create(observation(f"Patient/{pid}"))["id"]
    return {"patient": pid, "condition": condition, "observation": obs}


def test_care_staff_read_care_data_but_not_medical_data(app: Flask, record: dict[str, str]) -> None:
    aide = actor("aide-soignant")
    assert call(app, aide, "GET", f"Observation/{record['observation']}")[0] == 200
    assert call(app, aide, "GET", f"Patient/{record['patient']}")[0] == 200
    for path in (f"Condition/{record['condition']}", "Condition", f"Condition/{record['condition']}/_history",
                 "Patient?_revinclude=Condition:subject", "Patient?_has:Condition:subject:code=x",
                 "Observation?subject.family=lefevre&_include=Observation:subject&_include=*",
                 "Patient?_revinclude=*"):
        with pytest.raises(Forbidden):
            call(app, aide, "GET", path)
    with pytest.raises(Forbidden, match="aide-soignant may not 'c' Condition"):
        call(app, aide, "POST", "Condition", {"resourceType": "Condition",
                                              "subject": {"reference": f"Patient/{record['patient']}"}})


def test_everything_returns_only_what_the_role_may_read(app: Flask, record: dict[str, str]) -> None:
    status, bundle = call(app, actor("aide-soignant"), "GET", f"Patient/{record['patient']}/$everything")
    assert status == 200
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert types == {"Patient", "Observation", "Organization"}
    status, bundle = call(app, actor("medecin"), "GET", f"Patient/{record['patient']}/$everything")
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient", "Observation", "Condition",
                                                                         "Organization"}


def test_bundle_entries_are_authorized_one_by_one(app: Flask, client: FhirClient, record: dict[str, str]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Observation"}, "resource": observation(f"Patient/{record['patient']}")},
        {"request": {"method": "POST", "url": "Condition"}, "resource": {
            "resourceType": "Condition", "subject": {"reference": f"Patient/{record['patient']}"}}},
    ]}
    with pytest.raises(Forbidden):
        call(app, actor("aide-soignant"), "POST", "", bundle)
    assert client.search("Observation")["total"] == 1  # nothing of the transaction was kept


def test_break_the_glass(app: Flask, client: FhirClient, record: dict[str, str]) -> None:
    strict = Policy.with_overrides({FINESS: {"infirmier": {"medical": ""}}})
    nurse = actor("infirmier")
    with pytest.raises(Forbidden):
        call(app, nurse, "GET", f"Condition/{record['condition']}", policy=strict)
    status, _ = call(app, nurse, "GET", f"Condition/{record['condition']}", policy=strict,
                     x_break_glass="chute de nuit, médecin injoignable")
    assert status == 200
    with pytest.raises(Forbidden):
        call(app, nurse, "PUT", f"Condition/{record['condition']}", {"resourceType": "Condition",
             "id": record["condition"], "subject": {"reference": f"Patient/{record['patient']}"}},
             policy=strict, x_break_glass="urgence")


def test_scopes_narrow_and_identity_operations_need_update_rights(app: Flask, record: dict[str, str]) -> None:
    narrowed = actor("medecin", scopes="user/Patient.rs")
    with pytest.raises(Forbidden, match="scopes"):
        call(app, narrowed, "GET", f"Observation/{record['observation']}")
    with pytest.raises(Forbidden):
        call(app, actor("aide-soignant"), "POST", f"Patient/{record['patient']}/$ins-fetch")
    assert call(app, actor("aide-soignant"), "GET", "metadata")[0] == 200
