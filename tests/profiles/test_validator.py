"""ProfileValidator on synthetic profiles: each rule once failing, once passing."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles.validator import MAX_PROBLEMS, Problem, ProfileValidator
from tests.profiles.builders import EX, R4, context, el, extension, profile

V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
MARITAL_VS = "http://hl7.org/fhir/ValueSet/marital-status"


def check(resource: dict[str, Any], *definitions: dict[str, Any], profiles: tuple[str, ...] = ()) -> list[Problem]:
    return ProfileValidator(context(*definitions)).validate(resource, profiles)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def found(problems: list[Problem], severity: str = "error") -> list[tuple[str, str]]:
    return [(p.code, p.location) for p in problems if p.severity == severity]


NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}


def patient(profile_id: str, **content: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "meta": {"profile": [EX + profile_id]}, "text": NARRATIVE, **content}


def marital(code: str) -> dict[str, Any]:
    return {"coding": [{"system": V3_MARITAL, "code": code}]}


def test_cardinality_min_and_max() -> None:
    sd = profile("p", "Patient", el("Patient.name", min=1), el("Patient.identifier", max="1"))
    problems = check(patient("p", identifier=[{"value": "1"}, {"value": "2"}]), sd)
    assert found(problems) == [("structure", "Patient.identifier"), ("required", "Patient")]
    assert "Patient.identifier: maximum cardinality 1, found 2" in errors(problems)[0].message
    assert "Patient.name: minimum cardinality 1, found 0" in errors(problems)[1].message
    assert errors(problems)[1].message.startswith("p: ") and errors(problems)[1].profile == EX + "p"
    assert found(check(patient("p", name=[{"family": "Durand"}], identifier=[{"value": "1"}]), sd)) == []


@pytest.mark.parametrize(("strength", "code", "expected"), [
    ("required", "Q", [("error", "code-invalid")]),
    ("required", "M", []),
    ("extensible", "Q", [("warning", "code-invalid")]),
    ("extensible", "M", []),
    ("preferred", "Q", []),
    ("example", "Q", []),
])
def test_bindings_by_strength(strength: str, code: str, expected: list[tuple[str, str]]) -> None:
    sd = profile("p", "Patient", el("Patient.maritalStatus", binding={"strength": strength, "valueSet": MARITAL_VS}))
    problems = [p for p in check(patient("p", maritalStatus=marital(code)), sd) if p.code == "code-invalid"]
    assert [(p.severity, p.code) for p in problems] == expected
    if problems:
        assert problems[0].location == "Patient.maritalStatus"
        assert f"{V3_MARITAL}|Q is not in value set {MARITAL_VS} ({strength} binding)" in problems[0].message


def test_a_concept_passes_when_one_coding_is_in_and_a_code_is_checked_alone() -> None:
    sd = profile("p", "Patient", el("Patient.maritalStatus", binding={"strength": "required", "valueSet": MARITAL_VS}),
                 el("Patient.gender", binding={"strength": "required",
                                               "valueSet": "http://hl7.org/fhir/ValueSet/administrative-gender"}))
    two = {"coding": [{"system": "http://example.org/local", "code": "x"}, {"system": V3_MARITAL, "code": "M"}]}
    assert found(check(patient("p", maritalStatus=two, gender="female"), sd)) == []
    assert found(check(patient("p", gender="feminine"), sd)) == [("code-invalid", "Patient.gender")]


def test_a_value_set_not_at_hand_is_said_not_checked() -> None:
    sd = profile("p", "Patient", el("Patient.maritalStatus", binding={"strength": "required",
                                                                      "valueSet": "http://example.org/vs/none"}))
    problems = check(patient("p", maritalStatus=marital("M")), sd)
    assert found(problems) == []
    notes = [p for p in problems if p.severity == "information" and p.location == "Patient.maritalStatus"]
    assert notes and "not checked" in notes[0].message and "http://example.org/vs/none" in notes[0].message


def test_invariants_fail_hold_or_are_not_run() -> None:
    sd = profile("p", "Patient", el("Patient", constraint=[
        {"key": "ex-1", "severity": "error", "human": "a name is needed", "expression": "name.exists()"},
        {"key": "ex-2", "severity": "warning", "expression": "birthDate.exists()"},
        {"key": "ex-3", "severity": "error", "expression": "conformsTo('http://example.org/x')"},
    ]), el("Patient.name", constraint=[{"key": "ex-4", "severity": "error", "expression": "family.exists()"}]))
    problems = check(patient("p", name=[{"given": ["Ana"]}, {"family": "Durand"}]), sd)
    assert found(problems) == [("invariant", "Patient.name[0]")]
    assert "constraint ex-4 failed: family.exists()" in errors(problems)[0].message
    problems = check(patient("p"), sd)
    assert found(problems) == [("invariant", "Patient")] and "a name is needed" in errors(problems)[0].message
    assert found(problems, "warning") == [("invariant", "Patient")]
    skipped = [p for p in problems if p.severity == "information" and "ex-3" in p.message]
    assert len(skipped) == 1 and "cannot be evaluated" in skipped[0].message
    assert found(check(patient("p", name=[{"family": "Durand"}], birthDate="1950-01-01"), sd)) == []


def test_unknown_elements_are_errors() -> None:
    sd = profile("p", "Patient")
    problems = check(patient("p", colour="green", name=[{"family": "D", "nickname": "x"}]), sd)
    assert found(problems) == [("structure", "Patient.colour"), ("structure", "Patient.name[0].nickname")]
    assert "unknown element 'colour'" in errors(problems)[0].message
    assert found(check(patient("p", name=[{"family": "D"}]), sd)) == []


def test_fixed_values_are_exact_and_patterns_are_contained() -> None:
    sd = profile(
        "p", "Patient",
        el("Patient.identifier.system", fixedUri="urn:oid:1.2.3"),
        el("Patient.maritalStatus", patternCodeableConcept={"coding": [{"system": V3_MARITAL, "code": "M"}]}),
    )
    good = patient("p", identifier=[{"system": "urn:oid:1.2.3"}],
                   maritalStatus={"coding": [{"system": "x", "code": "y"}, {"system": V3_MARITAL, "code": "M",
                                                                             "display": "Married"}], "text": "m"})
    assert found(check(good, sd)) == []
    bad = patient("p", identifier=[{"system": "urn:oid:1.2.4"}], maritalStatus=marital("S"))
    problems = check(bad, sd)
    assert found(problems) == [("value", "Patient.identifier[0].system"), ("value", "Patient.maritalStatus")]
    assert 'fixedUri "urn:oid:1.2.3" expected, found "urn:oid:1.2.4"' in errors(problems)[0].message


IDENTIFIER_SLICES = (
    el("Patient.identifier", slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}),
    el("Patient.identifier:nir", min=1, max="1"),
    el("Patient.identifier:nir.system", fixedUri="urn:oid:1.2.250.1.213.1.4.8"),
    el("Patient.identifier:local", max="1"),
    el("Patient.identifier:local.system", patternUri="urn:oid:9.9"),
    el("Patient.identifier:local.value", min=1),
)


def test_slices_closed_rules_and_slice_content() -> None:
    sd = profile("p", "Patient", *IDENTIFIER_SLICES)
    nir = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}
    assert found(check(patient("p", identifier=[nir, {"system": "urn:oid:9.9", "value": "a"}]), sd)) == []
    problems = check(patient("p", identifier=[{"system": "urn:oid:7"}, {"system": "urn:oid:9.9"}]), sd)
    assert found(problems) == [
        ("required", "Patient.identifier"),  # slice nir: at least 1
        ("structure", "Patient.identifier[0]"),  # matches no slice of a closed slicing
        ("required", "Patient.identifier[1]"),  # local.value is required in that slice
    ]
    assert "slice Patient.identifier:nir needs at least 1" in errors(problems)[0].message
    assert "matches none of its slices (nir, local)" in errors(problems)[1].message


def test_ordered_and_open_at_end_slicing() -> None:
    slicing = {"discriminator": [{"type": "value", "path": "system"}], "rules": "openAtEnd", "ordered": True}
    sd = profile("p", "Patient", el("Patient.identifier", slicing=slicing), *IDENTIFIER_SLICES[1:])
    nir, local, other = ({"system": "urn:oid:1.2.250.1.213.1.4.8"}, {"system": "urn:oid:9.9", "value": "a"},
                         {"system": "urn:oid:7"})
    assert found(check(patient("p", identifier=[nir, local, other]), sd)) == []
    problems = errors(check(patient("p", identifier=[local, other, nir]), sd))
    assert [p.location for p in problems] == ["Patient.identifier[2]"] * 2
    assert "openAtEnd: occurrence in slice nir after one in no slice" in problems[0].message
    assert "sliced in order: slice nir comes after local" in problems[1].message


def test_choice_types() -> None:
    sd = profile("o", "Observation", el("Observation.value[x]", type=[{"code": "Quantity"}]))
    base = {"resourceType": "Observation", "meta": {"profile": [EX + "o"]}, "status": "final", "code": {"text": "t"},
            "text": NARRATIVE}
    problems = check(base | {"valueString": "high"}, sd)
    assert found(problems) == [("structure", "Observation.value.ofType(String)")]
    assert "type String is not allowed (allowed: Quantity)" in errors(problems)[0].message
    assert found(check(base | {"valueQuantity": {"value": 1}}, sd)) == []
    problems = found(check(base | {"valueQuantity": {"value": 1, "colour": 2}}, sd))
    assert problems == [("structure", "Observation.value.ofType(Quantity).colour")]


def test_extensions_by_url() -> None:
    flag = extension("flag", ["boolean"], contexts=("Patient",))
    sd = profile("p", "Patient")
    ok = patient("p", extension=[{"url": EX + "flag", "valueBoolean": True}])
    assert found(check(ok, sd, flag)) == []
    wrong_type = patient("p", extension=[{"url": EX + "flag", "valueString": "yes"}])
    problems = check(wrong_type, sd, flag)
    assert found(problems) == [("structure", "Patient.extension[0].value.ofType(String)")]
    assert "Extension.value[x]: type String is not allowed (allowed: boolean)" in errors(problems)[0].message
    wrong_place = patient("p", name=[{"extension": [{"url": EX + "flag", "valueBoolean": True}]}])
    problems = check(wrong_place, sd, flag)
    assert found(problems) == [("extension", "Patient.name[0].extension[0]")]
    assert "not allowed on Patient.name (contexts of use: Patient)" in errors(problems)[0].message
    unknown = patient("p", extension=[{"url": EX + "nowhere", "valueBoolean": True}],
                      modifierExtension=[{"url": EX + "nowhere-mod", "valueBoolean": True}])
    problems = check(unknown, sd, flag)
    assert found(problems) == [("extension", "Patient.modifierExtension[0]")]
    assert found(problems, "warning") == [("extension", "Patient.extension[0]")]


def test_extension_slices_and_primitive_extensions() -> None:
    flag = extension("flag", ["boolean"])
    sd = profile("p", "Patient", el("Patient.extension:flag", min=1, max="1",
                                    type=[{"code": "Extension", "profile": [EX + "flag"]}]))
    assert found(check(patient("p", extension=[{"url": EX + "flag", "valueBoolean": True}]), sd, flag)) == []
    problems = check(patient("p", _birthDate={"extension": [{"url": EX + "flag", "valueInteger": 1}]},
                             birthDate="1950"), sd, flag)
    assert found(problems) == [("required", "Patient.extension"),  # the flag slice, 1..1
                               ("structure", "Patient.birthDate.extension[0].value.ofType(Integer)")]


def test_meta_profile_unknown_or_for_another_type() -> None:
    sd = profile("o", "Observation")
    problems = check({"resourceType": "Patient", "meta": {"profile": [EX + "nowhere", EX + "o"]}}, sd)
    warnings = [p for p in problems if p.code == "not-found"]
    assert [(p.severity, p.location) for p in warnings] == [("warning", "Patient")]
    assert "profile http://example.org/fhir/StructureDefinition/nowhere: not known here, not checked" in \
        warnings[0].message
    assert found(problems) == [("structure", "Patient")]
    # the profiles asked for by the caller count as well
    required_name = profile("p", "Patient", el("Patient.name", min=1))
    assert found(check({"resourceType": "Patient"}, required_name, profiles=(EX + "p",))) == [("required", "Patient")]


def test_contained_and_bundled_resources_are_validated_with_their_locations() -> None:
    sd = profile("p", "Patient", el("Patient.name", min=1))
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "name": [{"family": "D"}],
                                                "meta": {"profile": [EX + "p"]}}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Patient", "meta": {"profile": [EX + "p"]},
                                                "contained": [{"resourceType": "Patient", "id": "c",
                                                               "meta": {"profile": [EX + "p"]}}],
                                                "link": [{"other": {"reference": "#c"}, "type": "seealso"}],
                                                "name": [{"family": "E"}]}},
    ]}
    assert found(check(bundle, sd)) == [("required", "Bundle.entry[1].resource.contained[0]")]


def test_reference_target_types() -> None:
    sd = profile("p", "Patient", el("Patient.managingOrganization",
                                    type=[{"code": "Reference", "targetProfile": [R4 + "Organization"]}]))
    problems = check(patient("p", managingOrganization={"reference": "Practitioner/1"}), sd)
    assert found(problems) == [("value", "Patient.managingOrganization")]
    assert "reference to a Practitioner, expected Organization" in errors(problems)[0].message
    for fine in ("Organization/1", "http://elsewhere.example/Practitioner/1", "urn:uuid:0"):
        assert found(check(patient("p", managingOrganization={"reference": fine}), sd)) == []


def test_problems_are_capped() -> None:
    sd = profile("p", "Patient")
    problems = check(patient("p", **{f"x{i}": 1 for i in range(MAX_PROBLEMS + 50)}), sd)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1].severity == "information" and problems[-1].code == "too-costly"
    assert problems[-1].message.endswith("more problem(s) not listed (the first 200 are)")


def test_the_base_type_applies_without_profiles_and_resources_are_not_modified() -> None:
    resource = {"resourceType": "Patient", "colour": "green", "name": [{"family": "D"}]}
    copy = {**resource}
    problems = ProfileValidator(context()).validate(resource)
    assert found(problems) == [("structure", "Patient.colour")] and errors(problems)[0].message.startswith("Patient: ")
    assert resource == copy
