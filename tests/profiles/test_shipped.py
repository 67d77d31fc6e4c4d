"""The shipped definitions: well-formed, named after their ids, under our canonical; the TDDUI transcriptions
accept every TDDUI 2.2.0 example and catch broken copies of them (with FR Core 2.1.0 installed)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fhir_profiles import CANONICAL, GUIDE, definitions, guide
from fhir_profiles.context import TRANSCRIPTION_EXTENSION, Context
from fhir_profiles.package import read_package
from fhir_profiles.snapshot import generate_snapshot
from tests.conftest import conformance_dir

FOLDER = Path(__file__).resolve().parents[2] / "fhir_profiles" / "definitions"
TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/"
KINDS = {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "OperationDefinition"}


def shipped_files() -> list[Path]:
    return sorted(FOLDER.glob("*.json"))


def transcribed(resource: dict[str, Any]) -> list[str]:
    return [e.get("valueCanonical") for e in resource.get("extension", []) if e.get("url") == TRANSCRIPTION_EXTENSION]


def test_every_file_is_one_resource_named_after_its_type_and_id() -> None:
    files = shipped_files()
    assert len(files) + 1 == len(definitions()) >= 50  # and the guide made from them
    for path in files:
        resource = json.loads(path.read_text(encoding="utf-8"))
        assert resource["resourceType"] in KINDS, path.name
        assert path.name == f"{resource['resourceType']}-{resource['id']}.json"


def test_urls_are_unique_under_our_canonical_with_our_metadata() -> None:
    urls = [r["url"] for r in definitions()]
    assert len(urls) == len(set(urls))
    for resource in definitions():
        assert resource["url"] == f"{CANONICAL}/{resource['resourceType']}/{resource['id']}"
        assert (resource["version"], resource["status"], resource["publisher"]) == ("0.1.0", "active", "DUI backend")
        if resource["resourceType"] == "StructureDefinition":
            assert resource["fhirVersion"] == "4.0.1", resource["id"]
            assert resource["differential"]["element"][0]["path"] == resource["type"]


def test_the_guide_lists_every_shipped_definition_and_is_valid_r4() -> None:
    from fhir.resources.R4B.implementationguide import ImplementationGuide

    shipped = [json.loads(path.read_text(encoding="utf-8")) for path in shipped_files()]
    made = definitions()[-1]
    assert made["url"] == GUIDE and made == guide(shipped)
    listed = [entry["reference"]["reference"] for entry in made["definition"]["resource"]]
    assert sorted(listed) == sorted(f"{r['resourceType']}/{r['id']}" for r in shipped)
    assert guide(shipped[1:])["definition"]["resource"] != made["definition"]["resource"]  # made, not written
    assert [d["packageId"] for d in made["dependsOn"]] == ["hl7.fhir.fr.core"]
    ImplementationGuide.model_validate(made)


def test_every_tddui_transcription_names_one_tddui_url_of_the_same_id() -> None:
    tddui = [r for r in definitions() if r["id"].startswith("tddui-")]
    assert len(tddui) >= 45
    for resource in tddui:
        assert transcribed(resource) == [f"{TDDUI}{resource['resourceType']}/{resource['id']}"]
    # the others: R4 core's vital-sign profiles, transcribed under their own ids; the DUI's own are no transcription
    r4 = [r for r in definitions() if not r["id"].startswith("tddui-") and transcribed(r)]
    assert sorted(r["id"] for r in r4) == sorted(["vitalsigns", "vitalspanel", "bp", "bodyweight", "bodyheight",
                                                  "bodytemp", "bmi", "headcircum", "heartrate", "resprate",
                                                  "oxygensat"])
    for resource in r4:
        assert transcribed(resource) == [f"http://hl7.org/fhir/StructureDefinition/{resource['id']}"]


def test_transcribed_extensions_keep_the_tddui_url_instances_carry() -> None:
    extensions = [r for r in definitions() if r["resourceType"] == "StructureDefinition" and r["type"] == "Extension"
                  and r["id"].startswith("tddui-")]
    assert len(extensions) == 23
    for ext in extensions:
        fixed = next(e for e in ext["differential"]["element"] if e["id"] == "Extension.url")
        assert fixed["fixedUri"] == transcribed(ext)[0]


def test_the_dui_identity_status_extension_keeps_the_url_the_identity_code_writes() -> None:
    from fhir_profiles.context import Context as Ctx

    ctx = Ctx(shipped=True)
    ext = ctx.structure_definition(f"{CANONICAL}/StructureDefinition/dui-identity-status")
    assert ext is not None and ext["context"] == [{"type": "element", "expression": "Patient"}]
    value = next(e for e in ext["differential"]["element"] if e["id"] == "Extension.value[x]")
    assert value["binding"] == {"strength": "required", "valueSet": f"{CANONICAL}/ValueSet/dui-identity-status"}
    codes = [c["code"] for c in ctx.code_system(f"{CANONICAL}/CodeSystem/dui-identity-status")["concept"]]  # type: ignore[index]
    assert codes == ["PROV", "RECUP", "VALI", "QUAL"]


def test_the_dui_definitions_stand_alone() -> None:
    ctx = Context()
    for name in ("dui-resident", "dui-identity-status"):
        sd = ctx.structure_definition(f"{CANONICAL}/StructureDefinition/{name}")
        assert sd is not None
        assert sd["baseDefinition"].startswith("http://hl7.org/fhir/StructureDefinition/")
        assert generate_snapshot(sd, ctx)


# -- with FR Core 2.1.0 installed: snapshots, and the TDDUI examples -------------------------------------------


@cache
def fr_core_context() -> Context:
    package = conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz"
    return Context([read_package(package.read_bytes())])


def tddui_examples() -> list[Path]:
    return sorted(conformance_dir("ans", "tddui-2.2.0", "examples").glob("*.json"))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((conformance_dir("ans", "tddui-2.2.0", "examples") / name).read_text("utf-8"))
    return data


@pytest.mark.conformance
def test_every_shipped_structure_definition_has_a_snapshot_with_fr_core() -> None:
    ctx = fr_core_context()
    structures = [r for r in definitions() if r["resourceType"] == "StructureDefinition"]
    for sd in structures:
        snapshot = generate_snapshot(sd, ctx)
        assert snapshot[0]["path"] == sd["type"], sd["id"]


def validator() -> Any:
    module = pytest.importorskip("fhir_profiles.validator", reason="the profile validator has not landed yet")
    return module.ProfileValidator(fr_core_context())


def errors(resource: dict[str, Any]) -> list[Any]:
    return [p for p in validator().validate(resource) if p.severity == "error"]


@pytest.mark.conformance
def test_every_tddui_example_validates_against_its_profile() -> None:
    checker = validator()
    examples = tddui_examples()
    assert len(examples) == 16
    for path in examples:
        resource = json.loads(path.read_text("utf-8"))
        problems = checker.validate(resource)
        for problem in problems:
            if problem.severity != "error":
                print(f"{path.name}: {problem.severity} {problem.location}: {problem.message}")
        assert [p for p in problems if p.severity == "error"] == [], path.name


@pytest.mark.conformance
def test_a_bundle_entry_breaking_its_slice_is_caught() -> None:
    bundle = load("Bundle-tddui-bundle-example.json")
    broken = copy.deepcopy(bundle)
    del broken["entry"][0]["request"]  # DUIPatientINS: request 1..1
    assert errors(broken)
    broken = copy.deepcopy(bundle)
    broken["entry"][1]["request"]["method"] = "PUT"  # DUIOrganization: request.method = POST
    assert errors(broken)
    broken = copy.deepcopy(bundle)
    broken["type"] = "batch"
    assert any("type" in p.location for p in errors(broken))


@pytest.mark.conformance
def test_a_wrong_code_in_a_required_binding_of_a_transcription_is_caught() -> None:
    patient = load("Patient-tddui-patient-ins-example.json")
    patient["identifier"][1]["type"]["coding"][0] = {"system": "https://interop.esante.gouv.fr/ig/fhir/tddui/"
                                                               "CodeSystem/tddui-identifier", "code": "NOPE"}
    assert any("identifier" in p.location for p in errors(patient))
    task = load("Task-tddui-task-transport-usager-example.json")
    task["input"][0]["type"]["coding"][0]["code"] = "teleportation"
    assert any("input" in p.location for p in errors(task))


@pytest.mark.conformance
def test_an_unknown_element_and_a_broken_cardinality_are_caught() -> None:
    organization = load("Organization-tddui-organization-example.json")
    organization["colour"] = "green"
    assert any("colour" in p.location or "colour" in p.message for p in errors(organization))
    organization = load("Organization-tddui-organization-example.json")
    del organization["identifier"]  # identifier[idNatSt] 1..1
    assert errors(organization)
    event = load("Encounter-tddui-encounter-evenement-example.json")
    del event["period"]["end"]  # period.end 1..1
    assert any("period" in p.location for p in errors(event))
