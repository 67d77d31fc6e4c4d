"""Profiles in force over the service: `dui profiles install|list|remove`, `$validate`, write modes."""

from __future__ import annotations

import copy
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from dui.app import create_app
from dui.residents import mapping
from dui.settings import ValidationSettings
from ins.status import Evidence, IdentityStatus
from tests.conftest import BASE_URL, conformance_dir, empty_database
from tests.conftest import test_settings as settings_for
from tests.helpers import FhirClient, patient

pytestmark = pytest.mark.conformance

FR_CORE_PATIENT_INS = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"
TDDUI_BAD_KEY = "the control key of the matricule INS is wrong"


def fr_core_package() -> Path:
    return conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz"


def fr_core_example(name: str) -> dict[str, Any]:
    path = conformance_dir("ans", "fr-core", "2.1.0", "extracted", "package", "example") / name
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def install(app: Flask, path: Path) -> Any:
    return app.test_cli_runner().invoke(args=["profiles", "install", str(path)])


def profiles_list(app: Flask, *extra: str) -> str:
    result = app.test_cli_runner().invoke(args=["profiles", "list", *extra])
    assert result.exit_code == 0, result.output
    return str(result.output)


def errors(response: TestResponse) -> list[dict[str, Any]]:
    body = response.get_json()
    assert response.status_code == 200 and body["resourceType"] == "OperationOutcome", body
    return [i for i in body["issue"] if i["severity"] in ("error", "fatal")]


def tgz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def manifest(name: str = "hl7.fhir.fr.core", version: str = "9.9.9") -> bytes:
    return json.dumps({"name": name, "version": version, "fhirVersions": ["4.0.1"],
                       "dependencies": {"hl7.fhir.r4.core": "4.0.1"}}).encode()


@pytest.fixture
def fr_core(app: Flask, client: FhirClient) -> FhirClient:
    result = install(app, fr_core_package())
    assert result.exit_code == 0, result.output
    return client


def test_install_list_replace_and_remove(app: Flask, client: FhirClient) -> None:
    result = install(app, fr_core_package())
    assert result.exit_code == 0, result.output
    assert "installed hl7.fhir.fr.core#2.1.0:" in result.output
    assert "dependencies not installed: " in result.output and "ans.fr.nos#1.3.0" in result.output
    listed = profiles_list(app)
    assert "hl7.fhir.fr.core#2.1.0" in listed and "missing dependencies: " in listed
    assert "Patient" in listed and "dui-resident" in listed and "NOT IN FORCE" not in listed
    assert "write modes (DUI_VALIDATION): *=warn" in listed
    every = profiles_list(app, "--all")
    assert f"{FR_CORE_PATIENT_INS}  [hl7.fhir.fr.core#2.1.0]" in every

    again = install(app, fr_core_package())
    assert again.exit_code == 0 and "(replaces 2.1.0)" in again.output
    removed = app.test_cli_runner().invoke(args=["profiles", "remove", "hl7.fhir.fr.core"])
    assert removed.exit_code == 0 and "removed hl7.fhir.fr.core#2.1.0" in removed.output
    assert "none installed" in profiles_list(app)
    unknown = app.test_cli_runner().invoke(args=["profiles", "remove", "hl7.fhir.fr.core"])
    assert unknown.exit_code == 1 and "no package named hl7.fhir.fr.core is installed" in unknown.output


@pytest.mark.parametrize("content, message", [
    (b"not a tarball", "not a usable FHIR package"),
    ({"package/package.json": manifest(), "package/StructureDefinition-x.json": b"{"}, "StructureDefinition-x.json"),
    ({"package/package.json": manifest(), "package/StructureDefinition-x.json": json.dumps({
        "resourceType": "StructureDefinition", "url": "https://example.org/StructureDefinition/x", "name": "X",
        "status": "active", "kind": "resource", "abstract": False, "type": "Patient", "derivation": "constraint",
        "baseDefinition": "https://example.org/StructureDefinition/nowhere",
        "differential": {"element": [{"id": "Patient.name", "path": "Patient.name", "min": 1}]}}).encode()},
     "https://example.org/StructureDefinition/x cannot be used"),
])
def test_a_bad_package_is_refused_and_changes_nothing(app: Flask, fr_core: FhirClient, tmp_path: Path,
                                                      content: bytes | dict[str, bytes], message: str) -> None:
    path = tmp_path / "package.tgz"
    path.write_bytes(content if isinstance(content, bytes) else tgz(content))
    result = install(app, path)
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    listed = profiles_list(app)
    assert "hl7.fhir.fr.core#2.1.0" in listed and "9.9.9" not in listed


def test_validate_at_type_and_system_level(fr_core: FhirClient) -> None:
    example = fr_core_example("Patient-ExampleFRCorePatient001.json")
    # FR Core's example conforms to its profiles, but its fictitious NIR has a wrong key: a rule of the service
    found = errors(fr_core.post("Patient/$validate", example))
    assert [(i["code"], i["expression"]) for i in found] == [("business-rule", ["Patient.identifier[0].value"])]
    same = fr_core.post("$validate", {"resourceType": "Parameters", "parameter": [{"name": "resource",
                                                                                   "resource": example}]})
    assert errors(same) == found

    broken = copy.deepcopy(example)
    broken["gender"] = "femme"  # outside the required binding
    broken["name"][0]["unknown"] = True  # not an element of HumanName
    found = errors(fr_core.post("Patient/$validate", broken))
    where = {e for issue in found for e in issue.get("expression", [])}
    assert "Patient.gender" in where and any(w.startswith("Patient.name[0]") for w in where), found
    assert fr_core.get("Patient").get_json()["total"] == 0  # nothing stored


def test_validate_against_a_named_profile(fr_core: FhirClient) -> None:
    plain = patient()  # no INS: not an fr-core-patient-ins
    as_parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": plain}, {"name": "profile", "valueUri": FR_CORE_PATIENT_INS}]}
    found = errors(fr_core.post("Patient/$validate", as_parameters))
    assert found and all(FR_CORE_PATIENT_INS.rsplit("/", 1)[-1] in i["diagnostics"] for i in found), found
    assert errors(fr_core.post(f"Patient/$validate?profile={FR_CORE_PATIENT_INS}", plain)) == found


@pytest.mark.parametrize("path, body, status, text", [
    ("Observation/$validate", {"resourceType": "Patient"}, 400, "received a Patient"),
    ("Patient/$validate?profile=https://example.org/StructureDefinition/nope", {"resourceType": "Patient"}, 400,
     "is not in force here"),
    ("$validate", {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]}, 400,
     "mode 'delete' is not supported"),
    ("$validate", {"resourceType": "Parameters", "parameter": []}, 400, "needs the parameter 'resource'"),
    ("$validate", ["not", "a", "resource"], 400, "takes a Parameters resource"),
])
def test_validate_refuses_what_it_cannot_understand(client: FhirClient, path: str, body: Any, status: int,
                                                    text: str) -> None:
    response = client.post(path, body)
    assert response.status_code == status, response.get_data(as_text=True)
    assert text in response.get_data(as_text=True)
    assert client.get("$validate").status_code == 405


def test_tddui_examples_validate_with_only_the_wrong_nir_key(fr_core: FhirClient) -> None:
    folder = conformance_dir("ans", "tddui-2.2.0", "examples")
    seen = 0
    for path in sorted(folder.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        found = errors(fr_core.post("$validate", resource))
        if path.name in ("Patient-tddui-patient-ins-example.json", "Bundle-tddui-bundle-example.json"):
            assert len(found) == 1 and TDDUI_BAD_KEY in found[0]["diagnostics"], (path.name, found)
            prefix = "Bundle.entry[0].resource." if path.name.startswith("Bundle") else ""
            assert found[0]["expression"] == [f"{prefix}Patient.identifier[0].value"], found
        else:
            assert found == [], (path.name, found)
        seen += 1
    assert seen == 16


@pytest.fixture(scope="module")
def strict_app(database_url: str, insi_dir: str) -> Iterator[Flask]:
    """Patients are refused when they break a profile; Observations are not checked at all."""
    validation = ValidationSettings(modes=(("Patient", "reject"), ("Observation", "off"), ("*", "warn")))
    application = create_app(settings_for(database_url, validation=validation))
    yield application
    application.extensions["dui"].dispose()


def test_reject_mode_refuses_with_every_problem_and_stores_nothing(strict_app: Flask) -> None:
    empty_database(strict_app)
    client = FhirClient(strict_app.test_client())
    claimed = {**patient(), "meta": {"profile": [FR_CORE_PATIENT_INS]}}
    install(strict_app, fr_core_package())
    refused = client.post("Patient", claimed)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    issues = refused.get_json()["issue"]
    assert "does not conform to its profiles" in issues[0]["diagnostics"]
    assert len([i for i in issues[1:] if i["severity"] == "error"]) >= 2  # every problem, not the first
    assert all(i.get("expression") for i in issues[1:]), issues
    assert client.get("Patient").get_json()["total"] == 0
    assert client.post("Patient", patient()).status_code == 201  # the default profile alone is met
    odd = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "meta": {"profile": [FR_CORE_PATIENT_INS]}}  # a wrong claim, but Observation is "off"
    assert client.post("Observation", odd).status_code == 201


def test_warn_mode_stores_and_reports_the_problems(fr_core: FhirClient, caplog: pytest.LogCaptureFixture) -> None:
    claimed = {**patient(), "meta": {"profile": [FR_CORE_PATIENT_INS]}}
    with caplog.at_level(logging.WARNING, logger="dui.fhir.validation"):
        stored = fr_core.post("Patient", claimed, headers={"Prefer": "return=OperationOutcome"})
    logged = [r.getMessage() for r in caplog.records if r.name == "dui.fhir.validation"]
    assert len(logged) == 1 and "Patient stored with" in logged[0] and "(DUI_VALIDATION=warn) at Patient" in logged[0]
    assert "Lefèvre" not in logged[0]  # locations only
    assert stored.status_code == 201, stored.get_data(as_text=True)
    issues = stored.get_json()["issue"]
    assert issues[0]["severity"] == "information" and "created" in issues[0]["diagnostics"]
    assert any(i["severity"] == "error" and "fr-core-patient-ins" in i["diagnostics"] for i in issues[1:]), issues
    quiet = fr_core.post("Patient", patient(), headers={"Prefer": "return=OperationOutcome"})
    assert [i["severity"] for i in quiet.get_json()["issue"]] == ["information"]


def test_the_shipped_search_parameter_finds_residents_by_identity_status(client: FhirClient) -> None:
    pid = client.create(mapping.with_identity(patient(), IdentityStatus.PROV, Evidence()))["id"]
    client.create(patient("Martin", "Paul"))
    found = client.search("Patient?identity-status=PROV")
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    assert client.search(f"Patient?identity-status={mapping.STATUS_SYSTEM}|PROV")["total"] == 1
    assert client.search("Patient?identity-status=QUAL")["total"] == 0
    statement = client.get("metadata").get_json()
    patient_cs = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"name": "identity-status", "type": "token",
            "definition": f"{BASE_URL}/fhir/SearchParameter/Patient-identity-status"} \
        in patient_cs["searchParam"]
