"""The invariants answered without FHIRPath (``fhir_profiles.invariants._DIRECT``) give fhirpathpy's answer.

Every (invariant, value) the validator meets over the ANS examples and over crafted edge cases is answered both
ways: where the direct answer is given, it must equal fhirpathpy's; where the value is not plain, no direct answer
may be given. The cases are chosen so that each direct rule answers both "holds" and "fails" at least once.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from fhir_profiles import invariants, walker
from fhir_profiles.context import Context
from fhir_profiles.elements import Constraint
from fhir_profiles.invariants import Outcome
from fhir_profiles.validator import ProfileValidator
from fhir_profiles.vitals import vital_sign_profiles
from tests.conftest import CONFORMANCE

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITALS = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
DIV = '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'


def vital(code: str, **content: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "category": [{"coding": [VITALS]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/a"},
            "effectiveDateTime": "2026-03-02T08:00:00+01:00", **content}


WEIGHT = {"value": 71.5, "unit": "kg", "system": UCUM, "code": "kg"}
ABSENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}]}
BP = [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
       "valueQuantity": {"value": 130, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
      {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
       "valueQuantity": {"value": 80, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}]


def crafted() -> Iterator[dict[str, Any]]:
    """Shapes that make each direct rule hold, fail, or step aside."""
    yield vital("29463-7", valueQuantity=WEIGHT)  # holds everywhere
    yield vital("29463-7", valueQuantity=WEIGHT, text={"status": "generated", "div": DIV})  # dom-6 holds
    yield vital("29463-7", valueQuantity=WEIGHT, dataAbsentReason=ABSENT)  # obs-6 fails
    yield vital("29463-7")  # vs-2 fails: no value, no reason, no component
    yield vital("29463-7", dataAbsentReason=ABSENT)  # vs-2 holds by the reason
    yield vital("29463-7", valueQuantity={})  # not plain: an empty object
    yield vital("29463-7", valueQuantity={"id": "q"})  # an object with an id only
    yield vital("29463-7", valueString="", _valueString={"extension": [{"url": "http://example.org/x",
                                                                        "valueCode": "a"}]})  # _valueX
    yield vital("29463-7", valueQuantity=WEIGHT, effectiveDateTime="2026-03")  # vs-1 fails: to the month
    yield vital("29463-7", valueQuantity=WEIGHT, effectiveDateTime="2026")
    yield vital("29463-7", valueQuantity=WEIGHT, effectiveDateTime="2026-03-02")
    yield vital("29463-7", valueQuantity=WEIGHT, effectiveDateTime="not a date")  # not plain
    yield vital("29463-7", valueQuantity=WEIGHT, effectivePeriod={"start": "2026-03-02"})
    yield vital("85354-9", component=BP)  # a blood pressure: components, no value
    yield vital("85354-9", component=[{"code": BP[0]["code"]}, BP[1]])  # vs-3 fails on a component
    yield vital("85354-9", component=[{"code": BP[0]["code"], "dataAbsentReason": ABSENT}, BP[1]])
    yield vital("85354-9", component=[{"code": BP[0]["code"], "valueQuantity": {}}, BP[1]])  # not plain
    yield vital("85354-9", component=BP, valueQuantity=WEIGHT)  # obs-7 in FHIRPath: a value and components
    yield vital("85354-9", component=[], valueQuantity=WEIGHT)  # an empty list: not plain
    yield vital("85354-9", hasMember=[{"reference": "Observation/b"}])  # vs-2 holds by its members
    yield vital("29463-7", valueQuantity=WEIGHT, text={"status": "generated"})  # a narrative without its div
    yield vital("29463-7", valueQuantity=WEIGHT, text={"status": "generated", "div": ""})
    contained = vital("29463-7", valueQuantity=WEIGHT, performer=[{"reference": "#p"}])
    contained["contained"] = [{"resourceType": "Practitioner", "id": "p", "meta": {"versionId": "1"}}]
    yield contained  # dom-2..dom-5 in FHIRPath; dom-4 fails there
    nested = copy.deepcopy(contained)
    nested["contained"][0]["contained"] = [{"resourceType": "Organization", "id": "o", "name": "x"}]
    yield nested  # dom-2 fails in FHIRPath
    yield {"resourceType": "Patient", "name": [{"family": "Durand"}]}  # no narrative: dom-6 fails
    yield {"resourceType": "Patient", "contained": [], "name": [{"family": "Durand"}]}


def examples() -> Iterator[dict[str, Any]]:
    """The ANS examples at hand (none when the conformance material is absent: the crafted cases still run)."""
    for folder in sorted(CONFORMANCE.joinpath("ans").glob("*/*/extracted/package/example")):
        for path in sorted(folder.glob("*.json")):
            resource = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                yield resource


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return ProfileValidator(Context([]), implied=vital_sign_profiles)


def both_ways(validator: ProfileValidator, monkeypatch: pytest.MonkeyPatch,
              cases: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Validate ``cases``, answering every direct invariant both ways; (key, what happened) counted."""
    seen: Counter[tuple[str, str]] = Counter()

    def evaluate(constraint: Constraint, value: Any, extra: dict[str, Any] | None, path: str,
                 resource: dict[str, Any], root: dict[str, Any]) -> tuple[Outcome, str]:
        answer = invariants.direct(constraint, value)
        if constraint.expression in invariants._DIRECT:
            outcome, _ = invariants.in_fhirpath(constraint, value, extra, path, resource, root)
            if answer is None:
                seen[constraint.key, "left to FHIRPath"] += 1
            else:
                expected = Outcome.HOLDS if answer else Outcome.FAILS
                assert outcome is expected, (constraint.key, value)
                seen[constraint.key, outcome.value] += 1
        return invariants.evaluate(constraint, value, extra, path, resource, root)

    monkeypatch.setattr(walker, "evaluate", evaluate)
    for case in cases:
        validator.validate(case, ())
    return seen


def test_every_direct_rule_is_the_r4_expression_of_its_invariant() -> None:
    """A rule keyed by an expression that no definition carries would never answer: each is R4's own text."""
    base = json.loads(gzip.decompress(resources.files("fhir_profiles").joinpath("r4", "structure.json.gz")
                                      .read_bytes()))["structureDefinitions"]
    folder = resources.files("fhir_profiles").joinpath("definitions")
    shipped = [json.loads(p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".json")]
    elements = [element for sd in base + shipped for part in ("snapshot", "differential")
                for element in sd.get(part, {}).get("element", [])]
    expressions = {c.get("expression") for element in elements for c in element.get("constraint", [])}
    assert set(invariants._DIRECT) <= expressions


def test_direct_answers_equal_fhirpath_on_crafted_cases(validator: ProfileValidator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = both_ways(validator, monkeypatch, list(crafted()))
    for key in ("dom-6", "obs-6", "vs-1", "vs-2", "vs-3"):
        assert seen[key, "holds"] and seen[key, "fails"], (key, seen)
    for key in ("dom-2", "dom-3", "dom-4", "dom-5", "obs-7"):
        assert seen[key, "holds"] and seen[key, "left to FHIRPath"], (key, seen)
    for key in ("dom-6", "obs-6", "vs-1", "vs-2", "vs-3"):
        assert seen[key, "left to FHIRPath"], (key, seen)


def test_direct_answers_equal_fhirpath_on_the_ans_examples(validator: ProfileValidator,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cases = list(examples())
    if not cases:
        pytest.skip(f"conformance material absent: {CONFORMANCE / 'ans'} (../shared/conformance)")
    seen = both_ways(validator, monkeypatch, cases)
    assert seen["dom-3", "holds"] > 30 and seen["vs-1", "holds"] > 5, seen
