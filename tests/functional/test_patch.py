"""PATCH with JSON Patch and FHIRPath Patch (http://hl7.org/fhir/R4/http.html#patch,
http://hl7.org/fhir/R4/fhirpatch.html), including every FHIRPath Patch case of the official
fhir-test-cases (r4/patch/fhir-patch-tests.xml), run through the REST API.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from lxml import etree

from dui.fhir import jsontext
from dui.fhir.patch import json_patch
from dui.fhir.xml import element_to_resource
from tests.conftest import conformance_dir
from tests.helpers import FhirClient, outcome_codes, patient

JSON_PATCH = "application/json-patch+json"


def _fhir_cases() -> list[Any]:
    try:
        folder = conformance_dir("fhir-test-cases", "r4", "patch")
    except pytest.skip.Exception as absent:
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent.msg))]
    root = etree.parse(str(folder / "fhir-patch-tests.xml"), etree.XMLParser(remove_comments=True)).getroot()
    cases = []
    for case in root:
        if isinstance(case.tag, str):
            cases.append(pytest.param(case, id=case.get("name")))
    return cases


def _resource(case: Any, part: str) -> dict[str, Any]:
    return element_to_resource(next(c for c in case.find(part) if isinstance(c.tag, str)))


def _without_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


@pytest.mark.conformance
@pytest.mark.parametrize("case", _fhir_cases())
def test_fhirpath_patch_conformance_case(client: FhirClient, case: Any) -> None:
    """Create the input, PATCH it with the case's Parameters, read it back, compare with the output."""
    source = _resource(case, "input")
    source.pop("id", None)
    created = client.create(source)
    response = client.patch(f"Patient/{created['id']}", jsontext.dump(_resource(case, "diff")))
    if case.find("error") is not None:
        assert response.status_code in (400, 422), response.get_data(as_text=True)
        assert client.get(f"Patient/{created['id']}").headers["ETag"] == 'W/"1"'
        return
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = _resource(case, "output")
    stored = client.get(f"Patient/{created['id']}").get_json()
    assert _without_server_fields(stored) == json.loads(jsontext.dump(_without_server_fields(expected)))


def _json_cases() -> list[Any]:
    try:
        folder = conformance_dir("fhir-test-cases", "r4", "patch")
    except pytest.skip.Exception as absent:
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent.msg))]
    return [pytest.param(c, id=c["comment"]) for c in json.loads((folder / "json-patch-tests.json").read_text())]


@pytest.mark.conformance
@pytest.mark.parametrize("case", _json_cases())
def test_json_patch_conformance_case(case: dict[str, Any]) -> None:
    """The official JSON Patch cases are generic JSON documents: they test the patch engine itself."""
    if "error" in case:
        with pytest.raises(Exception) as failure:
            json_patch.apply(case["doc"], case["patch"])
        assert failure.type.__name__ in ("Invalid", "Unprocessable")
    else:
        assert json_patch.apply(case["doc"], case["patch"]) == case["expected"]


def test_json_patch_through_the_api(client: FhirClient) -> None:
    created = client.create(patient())
    ops = [{"op": "replace", "path": "/gender", "value": "male"},
           {"op": "add", "path": "/name/0/given/-", "value": "Marie"}]
    response = client.patch(f"Patient/{created['id']}", ops, content_type=JSON_PATCH,
                            headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200
    body = response.get_json()
    assert body["gender"] == "male"
    assert body["name"][0]["given"] == ["Hélène", "Marie"]
    assert response.headers["ETag"] == 'W/"2"'
    history = client.search(f"Patient/{created['id']}/_history")
    assert history["entry"][0]["request"]["method"] == "PATCH"


def test_patch_errors(client: FhirClient) -> None:
    created = client.create(patient())
    path = f"Patient/{created['id']}"
    stale = client.patch(path, [{"op": "remove", "path": "/gender"}], content_type=JSON_PATCH,
                         headers={"If-Match": 'W/"9"'})
    assert stale.status_code == 412
    failed_test = client.patch(path, [{"op": "test", "path": "/gender", "value": "male"}], content_type=JSON_PATCH)
    assert failed_test.status_code == 422
    invalid_result = client.patch(path, [{"op": "replace", "path": "/gender", "value": "F"}], content_type=JSON_PATCH)
    assert invalid_result.status_code == 422
    assert "code-invalid" in outcome_codes(invalid_result)
    change_id = client.patch(path, [{"op": "replace", "path": "/id", "value": "x"}], content_type=JSON_PATCH)
    assert change_id.status_code == 422
    malformed = client.patch(path, {"op": "remove"}, content_type=JSON_PATCH)
    assert malformed.status_code == 400
    wrong_type = client.patch(path, "gender=male", content_type="text/plain")
    assert wrong_type.status_code == 415
    assert client.patch("Patient/unknown", [], content_type=JSON_PATCH).status_code == 404
    assert client.get(path).headers["ETag"] == 'W/"1"'


def test_conditional_patch(client: FhirClient) -> None:
    created = client.create(patient(identifier=[{"system": "urn:ipp", "value": "7"}]))
    response = client.patch("Patient?identifier=urn:ipp|7", [{"op": "add", "path": "/active", "value": True}],
                            content_type=JSON_PATCH)
    assert response.status_code == 200
    assert client.get(f"Patient/{created['id']}").get_json()["active"] is True
    assert client.patch("Patient?identifier=urn:ipp|8", [], content_type=JSON_PATCH).status_code == 404
