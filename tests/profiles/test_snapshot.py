"""Snapshot generation from differentials over core R4 types (profiling.html, "Differentials and snapshots")."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles.snapshot import SnapshotError, generate_snapshot
from tests.profiles.builders import EX, R4, context, el, profile


def by_id(elements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in elements}


def test_a_child_of_a_datatype_expands_the_type_under_the_path() -> None:
    sd = profile("p", "Patient", el("Patient.identifier.system", min=1))
    snapshot = generate_snapshot(sd, context(sd))
    ids = [e["id"] for e in snapshot]
    start = ids.index("Patient.identifier")
    assert ids[start + 1:start + 9] == [f"Patient.identifier.{n}" for n in
                                        ("id", "extension", "use", "type", "system", "value", "period", "assigner")]
    system = by_id(snapshot)["Patient.identifier.system"]
    assert system["min"] == 1 and system["path"] == "Patient.identifier.system" and system["type"][0]["code"] == "uri"
    assert by_id(snapshot)["Patient.name"]["min"] == 0  # untouched elements as the base has them


def test_slices_start_from_the_base_element_and_follow_the_unsliced_element() -> None:
    sd = profile(
        "p", "Patient",
        el("Patient.identifier", slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"},
           min=1),
        el("Patient.identifier:nir", min=1, max="1"),
        el("Patient.identifier:nir.system", fixedUri="urn:oid:1.2.250.1.213.1.4.8"),
    )
    snapshot = generate_snapshot(sd, context(sd))
    ids = [e["id"] for e in snapshot]
    elements = by_id(snapshot)
    assert ids.index("Patient.identifier:nir") > ids.index("Patient.identifier")
    assert ids[ids.index("Patient.identifier:nir") + 5] == "Patient.identifier:nir.system"
    nir = elements["Patient.identifier:nir"]
    assert (nir["sliceName"], nir["min"], nir["max"], nir["path"]) == ("nir", 1, "1", "Patient.identifier")
    assert "slicing" not in nir  # the slicing belongs to the sliced element
    assert elements["Patient.identifier"]["slicing"]["rules"] == "closed"
    assert elements["Patient.identifier:nir.system"]["fixedUri"] == "urn:oid:1.2.250.1.213.1.4.8"
    assert elements["Patient.identifier"]["min"] == 1 and "Patient.identifier.system" not in elements


def test_a_reslice_is_a_slice_of_its_slice() -> None:
    sd = profile(
        "p", "Patient",
        el("Patient.identifier", slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}),
        el("Patient.identifier:a", slicing={"discriminator": [{"type": "value", "path": "use"}], "rules": "open"}),
        el("Patient.identifier:a/b", max="1"),
    )
    elements = by_id(generate_snapshot(sd, context(sd)))
    assert elements["Patient.identifier:a/b"]["sliceName"] == "a/b"
    assert elements["Patient.identifier:a/b"]["max"] == "1"


def test_an_extension_slice_expands_from_the_extension_definition() -> None:
    sd = profile(
        "p", "Patient",
        el("Patient.extension:birthPlace", type=[{"code": "Extension", "profile": [R4 + "patient-birthPlace"]}]),
        el("Patient.extension:birthPlace.value[x]", type=[{"code": "Address", "profile": [EX + "addr"]}]),
    )
    elements = by_id(generate_snapshot(sd, context(sd)))
    # the slicing an extension always has is added; the children come from patient-birthPlace
    assert elements["Patient.extension"]["slicing"]["discriminator"] == [{"type": "value", "path": "url"}]
    assert elements["Patient.extension:birthPlace.url"]["fixedUri"] == R4 + "patient-birthPlace"
    assert elements["Patient.extension:birthPlace.extension"]["max"] == "0"
    assert elements["Patient.extension:birthPlace.value[x]"]["type"] == [{"code": "Address", "profile": [EX + "addr"]}]


def test_choice_renames_and_type_slices() -> None:
    sd = profile(
        "o", "Observation",
        el("Observation.valueQuantity", min=1),
        el("Observation.effective[x]:effectiveDateTime", min=1),
    )
    elements = by_id(generate_snapshot(sd, context(sd)))
    value = elements["Observation.value[x]"]
    assert [t["code"] for t in value["type"]] == ["Quantity"] and value["min"] == 1
    typed = elements["Observation.effective[x]:effectiveDateTime"]
    assert [t["code"] for t in typed["type"]] == ["dateTime"]
    assert elements["Observation.effective[x]"]["slicing"]["discriminator"] == [{"type": "type", "path": "$this"}]


def test_a_content_reference_expands_what_it_refers_to() -> None:
    sd = profile("q", "Questionnaire", el("Questionnaire.item.item.text", min=1))
    elements = by_id(generate_snapshot(sd, context(sd)))
    assert elements["Questionnaire.item.item.text"]["min"] == 1
    assert elements["Questionnaire.item.item.linkId"]["path"] == "Questionnaire.item.item.linkId"


def test_a_base_with_only_a_differential_is_generated_first() -> None:
    parent = profile("parent", "Patient", el("Patient.name", min=1),
                     el("Patient.identifier.system", min=1))
    child = profile("child", "Patient", el("Patient.name", max="1"), base=EX + "parent")
    elements = by_id(generate_snapshot(child, context(parent, child)))
    assert (elements["Patient.name"]["min"], elements["Patient.name"]["max"]) == (1, "1")
    assert elements["Patient.identifier.system"]["min"] == 1


def test_merging_keeps_what_the_differential_does_not_say() -> None:
    sd = profile(
        "p", "Patient",
        el("Patient.maritalStatus", binding={"strength": "required"}),
        el("Patient", constraint=[{"key": "ex-1", "severity": "error", "expression": "name.exists()"}]),
    )
    elements = by_id(generate_snapshot(sd, context(sd)))
    binding = elements["Patient.maritalStatus"]["binding"]
    assert binding["strength"] == "required" and binding["valueSet"].startswith("http://hl7.org/fhir/ValueSet/")
    keys = [c["key"] for c in elements["Patient"]["constraint"]]
    assert "dom-2" in keys and keys[-1] == "ex-1"


@pytest.mark.parametrize(("elements", "base", "message"), [
    ((), EX + "nowhere", "base http://example.org/fhir/StructureDefinition/nowhere not found"),
    ((el("Patient.colour", min=1),), None, "Patient has no element colour"),
    ((el("Patient.identifier:x.system", min=1),), None, "no slice x on Patient.identifier"),
    ((el("Patient.name:x", min=1),), None, "slice x of Patient.name, which has no slicing"),
    ((el("Patient.deceased[x].value", min=1),), None, "cannot constrain inside Patient.deceased[x]"),
    ((el("Patient.extension:e", type=[{"code": "Extension", "profile": [EX + "nowhere"]}]),
      el("Patient.extension:e.value[x]", min=1)), None, f"needs the definition of {EX}nowhere, not found"),
])
def test_what_cannot_be_generated_says_why(elements: tuple[dict[str, Any], ...], base: str | None,
                                            message: str) -> None:
    sd = profile("p", "Patient", *elements, base=base)
    with pytest.raises(SnapshotError) as caught:
        generate_snapshot(sd, context(sd))
    assert message in str(caught.value) and str(caught.value).startswith(EX + "p: ")


def test_a_circular_base_is_refused() -> None:
    a = profile("a", "Patient", base=EX + "b")
    b = profile("b", "Patient", base=EX + "a")
    with pytest.raises(SnapshotError, match="comes back to it"):
        generate_snapshot(a, context(a, b))
