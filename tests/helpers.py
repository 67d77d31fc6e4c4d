"""Test helpers: a thin FHIR client over Flask's test client, and resource builders."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ins import InsKind, ins_kind

FHIR_JSON = "application/fhir+json"
INS_TYPE_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"


class FhirClient:
    """Requests against /fhir with FHIR JSON; every method returns the raw response."""

    def __init__(self, client: FlaskClient) -> None:
        self.http = client

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                content_type: str = FHIR_JSON) -> TestResponse:
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        if data is not None:
            all_headers.setdefault("Content-Type", content_type)
        return self.http.open(f"/fhir/{path.lstrip('/')}" if path else "/fhir", method=method, data=data,
                              headers=all_headers)

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> TestResponse:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> TestResponse:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> TestResponse:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> TestResponse:
        return self.request("DELETE", path, **kw)

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Create and return the stored resource (asserting 201)."""
        response = self.post(resource["resourceType"], resource)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def search(self, query: str, **kw: Any) -> dict[str, Any]:
        response = self.get(query, **kw)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()


def outcome_codes(response: TestResponse) -> list[str]:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    return [issue["code"] for issue in body["issue"]]


def diagnostics(response: TestResponse) -> str:
    return " | ".join(i.get("diagnostics", "") for i in response.get_json()["issue"])


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome"]


def ins_identifier(value: str, kind: InsKind = InsKind.TEST) -> dict[str, Any]:
    return {"use": "official", "type": {"coding": [{"system": INS_TYPE_SYSTEM, "code": kind.type_code}]},
            "system": kind.system, "value": value}


def patient(family: str = "Lefèvre", given: str = "Hélène", **extra: Any) -> dict[str, Any]:
    """A Patient; when it carries an INS, its sex and birth month agree with the matricule (INS rules)."""
    resource = {"resourceType": "Patient", "name": [{"use": "official", "family": family, "given": [given]}],
                "gender": "female", "birthDate": "1932-04-05"}
    for ident in extra.get("identifier") or []:
        codings = [(c.get("system"), c.get("code")) for c in ident.get("type", {}).get("coding", [])]
        if ins_kind(ident.get("system"), codings) is not None:
            value = ident["value"]
            resource["gender"] = "male" if value[0] in "17" else "female"
            resource["birthDate"] = f"19{value[1:3]}-{value[3:5]}-05"
    resource.update(extra)
    return resource


def observation(subject: str, code: str = "29463-7", value: Any = 62.5, when: str = "2026-11-02T09:00:00+01:00",
                unit: str = "kg") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": subject}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def consent(resident: str, org: str, **extra: Any) -> dict[str, Any]:
    """An active privacy Consent letting Organization ``org`` see Patient ``resident`` (``extra``: more of its
    provision, such as a period)."""
    return {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{resident}"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"actor": [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                "reference": {"reference": f"Organization/{org}"}}], **extra}}
