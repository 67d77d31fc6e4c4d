"""The R4 structure checker, on hand-made cases and on every published French example."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dui.fhir import jsontext
from dui.fhir.model import model_issues
from dui.fhir.structure import StructureChecker
from tests.conftest import CONFORMANCE, conformance_dir

checker = StructureChecker()


def codes(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.code or "", i.expression[0] if i.expression else "") for i in checker.check(resource)]


def test_valid_patient_passes() -> None:
    assert checker.check({"resourceType": "Patient", "name": [{"family": "Martin", "given": ["Jeanne"]}],
                          "_birthDate": {"extension": [{"url": "u", "valueDateTime": "1930-01-01T10:00:00Z"}]},
                          "birthDate": "1930-01-01", "deceasedBoolean": False}) == []


@pytest.mark.parametrize(("resource", "expected"), [
    ({"resourceType": "Patient", "deceasedString": "x"}, ("structure", "Patient.deceasedString")),
    ({"resourceType": "Patient", "deceased": True}, ("structure", "Patient.deceased")),
    ({"resourceType": "Patient", "active": "true"}, ("value", "Patient.active")),
    ({"resourceType": "Patient", "name": {"family": "x"}}, ("structure", "Patient.name")),
    ({"resourceType": "Patient", "gender": ["male"]}, ("structure", "Patient.gender")),
    ({"resourceType": "Observation", "code": {"text": "x"}}, ("required", "Observation")),
    ({"resourceType": "Observation", "status": "done", "code": {"text": "x"}}, ("code-invalid", "Observation.status")),
    ({"resourceType": "Patient", "_gender": {"extension": []}}, ("structure", "Patient.gender.extension")),
    ({"resourceType": "Patient", "name": [{"_family": "x"}]}, ("structure", "Patient.name[0].family")),
    ({"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "1", "type": "group",
      "item": [{"linkId": "1.1", "type": "nope"}]}]}, ("code-invalid", "Questionnaire.item[0].item[0].type")),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]},
     ("not-supported", "Bundle.entry[0].resource")),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "active": 1}]},
     ("value", "Patient.contained[0].active")),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": 1.5},
     ("value", "Observation.valueInteger")),
    ({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01T10:00:00"}},
     ("value", "Patient.meta.lastUpdated")),
])
def test_problems_are_found_where_they_are(resource: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in codes(jsontext.parse(json.dumps(resource)))


def test_primitive_arrays_with_extensions_align() -> None:
    ok = {"resourceType": "Patient", "name": [{"given": ["a", None], "_given": [None, {"extension": [
        {"url": "u", "valueString": "b"}]}]}]}
    assert checker.check(ok) == []
    misaligned = {"resourceType": "Patient", "name": [{"given": ["a", None]}]}
    assert ("structure", "Patient.name[0].given[1]") in codes(misaligned)


def test_model_check_adds_nothing_on_valid_r4() -> None:
    assert model_issues({"resourceType": "Patient", "gender": "female"}) == []


def _examples() -> list[Any]:
    try:
        folder = conformance_dir("ans")
    except pytest.skip.Exception as absent:
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent.msg))]
    paths = sorted(folder.rglob("*.json"))
    out = []
    for path in paths:
        if path.name.endswith(".openapi.json") or path.name in ("package.json", ".index.json"):
            continue
        out.append(pytest.param(path, id=str(path.relative_to(CONFORMANCE))))
    return out


# Published artefacts that do not conform to base R4 themselves: StructureDefinitions whose
# differential bindings leave out the required 'strength' (allowed in a differential only).
KNOWN_NONCONFORMING = {"StructureDefinition-fr-core-service-type-duration.json",
                       "StructureDefinition-fr-core-schedule-availability-time.json"}


@pytest.mark.conformance
@pytest.mark.parametrize("path", _examples())
def test_published_french_resources_conform_to_base_r4(path: Any) -> None:
    """Every JSON resource of the ANS material (FR Core, TDDUI, PDSm) passes the base R4 check."""
    conformance_dir("ans")
    resource = jsontext.parse(path.read_bytes())
    if not isinstance(resource, dict) or "resourceType" not in resource:
        pytest.skip("not a resource")
    issues = checker.check(resource)
    if path.name in KNOWN_NONCONFORMING:
        assert issues and all(i.code == "required" for i in issues)
    else:
        assert issues == [], [i.diagnostics for i in issues[:5]]
