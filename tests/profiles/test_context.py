"""Context: base R4 by url and type name, packages before shipped definitions before base, transcriptions."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fhir_profiles import base
from fhir_profiles import context as context_module
from fhir_profiles.context import BASE_PACKAGE, TRANSCRIPTION_EXTENSION, Context, shipped_source
from fhir_profiles.package import Package, read_package
from tests.conftest import conformance_dir

R4 = "http://hl7.org/fhir/StructureDefinition/"
TDDUI_PATIENT = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-patient"


def sd(url: str, version: str = "1.0.0", **more: Any) -> dict[str, Any]:
    return {"resourceType": "StructureDefinition", "url": url, "version": version, "type": "Patient",
            "kind": "resource", "derivation": "constraint", "baseDefinition": R4 + "Patient", **more}


def shipping(monkeypatch: pytest.MonkeyPatch, *resources: dict[str, Any]) -> None:
    monkeypatch.setattr(context_module, "definitions", lambda: list(resources))


def test_base_r4_by_url_version_and_type_name() -> None:
    ctx = Context(shipped=False)
    patient = ctx.structure_definition("Patient")
    assert patient is not None and patient["url"] == R4 + "Patient"
    assert ctx.structure_definition(R4 + "Patient") is patient
    assert ctx.structure_definition(R4 + "Patient|4.0.1") is patient
    assert ctx.structure_definition(R4 + "Patient|3.0.2") is None
    assert ctx.structure_definition("NoSuchType") is None
    assert ctx.structure_definition("HumanName")["kind"] == "complex-type"  # type: ignore[index]
    assert ctx.structure_definition("string")["kind"] == "primitive-type"  # type: ignore[index]
    # the type name gives the type, not a profile of it (SimpleQuantity is a constraint on Quantity)
    assert ctx.structure_definition("Quantity")["url"] == R4 + "Quantity"  # type: ignore[index]
    assert ctx.structure_definition(R4 + "SimpleQuantity")["derivation"] == "constraint"  # type: ignore[index]
    assert ctx.source_of(R4 + "Patient") == BASE_PACKAGE == "hl7.fhir.r4.core#4.0.1"
    assert ctx.value_set("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1") is not None
    assert ctx.code_system("http://terminology.hl7.org/CodeSystem/v3-ActCode") is not None
    assert ctx.profiles() == []


def test_base_snapshots_keep_machine_facts_only() -> None:
    patient = Context(shipped=False).structure_definition("Patient")
    assert patient is not None
    elements = {el["id"]: el for el in patient["snapshot"]["element"]}
    gender = elements["Patient.gender"]
    assert gender["binding"] == {"strength": "required",
                                 "valueSet": "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1"}
    assert gender["constraint"][0]["key"] == "ele-1" and "human" not in gender["constraint"][0]
    assert elements["Patient.link.other"]["type"][0]["targetProfile"] == [R4 + "Patient", R4 + "RelatedPerson"]
    assert not any({"short", "definition", "comment", "mapping"} & el.keys() for el in elements.values())
    # elements the redistributed copy added to R4 are left out
    meta = Context(shipped=False).structure_definition("Meta")
    assert meta is not None and "Meta.project" not in {el["path"] for el in meta["snapshot"]["element"]}
    extension = Context(shipped=False).structure_definition(R4 + "patient-birthPlace")
    assert extension is not None and extension["context"][0]["expression"] == "Patient"


def test_packages_before_shipped_before_base(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://example.org/StructureDefinition/p"
    vs = {"resourceType": "ValueSet", "url": "http://hl7.org/fhir/ValueSet/administrative-gender", "version": "x"}
    shipping(monkeypatch, sd(url, "0.9.0", name="shipped"), sd("http://example.org/StructureDefinition/own"))
    first = Package("a.first", "1.0.0", resources=(sd(url, "1.0.0", name="first"), vs))
    second = Package("a.second", "2.0.0", resources=(sd(url, "2.0.0", name="second"),))
    ctx = Context([first, second])
    assert ctx.structure_definition(url)["name"] == "first"  # type: ignore[index]
    assert ctx.source_of(url) == "a.first#1.0.0"
    assert ctx.structure_definition(url + "|2.0.0")["name"] == "second"  # type: ignore[index]
    assert ctx.structure_definition(url + "|0.9.0")["name"] == "shipped"  # type: ignore[index]
    assert ctx.structure_definition(url + "|3.0.0") is None
    assert ctx.value_set("http://hl7.org/fhir/ValueSet/administrative-gender") is vs
    assert ctx.source_of("http://example.org/StructureDefinition/own") == shipped_source()
    assert shipped_source().startswith("dui#")
    assert sorted(p["url"] + "|" + p["version"] for p in ctx.profiles()) == [
        "http://example.org/StructureDefinition/own|1.0.0", url + "|1.0.0"]
    assert Context([second], shipped=False).structure_definition(url)["name"] == "second"  # type: ignore[index]


def test_a_shipped_transcription_stands_in_for_a_missing_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = "https://dui.example.org/fhir/StructureDefinition/tddui-patient"
    transcription = sd(ours, extension=[{"url": TRANSCRIPTION_EXTENSION, "valueCanonical": TDDUI_PATIENT + "|2.2.0"}])
    shipping(monkeypatch, transcription)
    ctx = Context()
    assert ctx.structure_definition(TDDUI_PATIENT) is transcription
    assert ctx.structure_definition(TDDUI_PATIENT + "|2.2.0") is transcription
    assert ctx.structure_definition(TDDUI_PATIENT + "|2.1.0") is transcription  # a stand-in, whatever the version
    assert ctx.stands_in_for(TDDUI_PATIENT) == ours
    assert ctx.source_of(TDDUI_PATIENT) == shipped_source()
    assert ctx.stands_in_for(ours) is None  # present itself
    assert ctx.stands_in_for(R4 + "Patient") is None
    # once the published package is installed, its own definition is used
    published = sd(TDDUI_PATIENT, "2.2.0", name="published")
    ctx = Context([Package("ans.fhir.fr.tddui", "2.2.0", resources=(published,))])
    assert ctx.structure_definition(TDDUI_PATIENT) is published
    assert ctx.stands_in_for(TDDUI_PATIENT) is None


def test_missing_dependencies() -> None:
    needs = {"hl7.fhir.r4.core": "4.0.1", "ans.fr.nos": "1.3.0", "lib.wild": "2.1.x"}
    ctx = Context([Package("a", "1.0.0", dependencies=needs), Package("lib.wild", "2.1.7")], shipped=False)
    assert ctx.missing_dependencies() == {"a#1.0.0": ["ans.fr.nos#1.3.0"]}
    other_core = Package("b", "1.0.0", dependencies={"hl7.fhir.r4.core": "4.0.0", "lib.wild": "2.2.0"})
    assert Context([other_core], shipped=False).missing_dependencies() == {
        "b#1.0.0": ["hl7.fhir.r4.core#4.0.0", "lib.wild#2.2.0"]}


@pytest.mark.conformance
def test_fr_core_resolves_and_names_its_missing_dependencies() -> None:
    fr_core = read_package((conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz").read_bytes())
    ctx = Context([fr_core], shipped=False)
    assert ctx.missing_dependencies() == {
        "hl7.fhir.fr.core#2.1.0": ["hl7.terminology.r4#6.0.2", "hl7.fhir.uv.extensions.r4#5.1.0", "ans.fr.nos#1.3.0"]
    }
    patient = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
    assert ctx.structure_definition(patient + "|2.1.0")["baseDefinition"] == R4 + "Patient"  # type: ignore[index]
    assert ctx.source_of(patient) == "hl7.fhir.fr.core#2.1.0"
    profiles = {p["url"] for p in ctx.profiles()}
    assert patient in profiles and R4 + "Patient" not in profiles
    nos = Package("ans.fr.nos", "1.3.0")
    assert Context([fr_core, nos], shipped=False).missing_dependencies()["hl7.fhir.fr.core#2.1.0"] == [
        "hl7.terminology.r4#6.0.2", "hl7.fhir.uv.extensions.r4#5.1.0"]


def test_first_use_from_several_threads_loads_the_base_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_structures", None)
    reads: list[str] = []
    real_read = base._read
    monkeypatch.setattr(base, "_read", lambda name: reads.append(name) or real_read(name))
    ctx = Context(shipped=False)
    found: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        found.append(ctx.structure_definition("Observation"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reads == ["structure.json.gz"]
    assert len(found) == 8 and all(item is found[0] and item is not None for item in found)
