"""R4's vital-sign profiles applied where R4 says (http://hl7.org/fhir/R4/observation-vitalsigns.html): an
Observation whose code is a vital sign's LOINC code is checked against the matching profile on write; other
Observations are not. The service's own vital signs (staff API, demo data) conform. docs/profiles.md."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from flask import Flask

from dui.app import create_app
from dui.auth.actor import Actor
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.settings import ValidationSettings
from tests.conftest import empty_database
from tests.conftest import test_settings as settings_for
from tests.helpers import FhirClient, patient

R4 = "http://hl7.org/fhir/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VITAL = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}


def vital(subject: str, code: str, value: Any = None, unit: str = "kg", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "category": [{"coding": [VITAL]}],
        "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": "2026-11-02T09:00:00+01:00"}
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    resource.update(extra)
    return resource


def pressure(code: str, value: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}}


@pytest.fixture(scope="module")
def reject_app(database_url: str, insi_dir: str) -> Iterator[Flask]:
    """Observations that break a profile are refused."""
    validation = ValidationSettings(modes=(("Observation", "reject"), ("*", "warn")))
    application = create_app(settings_for(database_url, validation=validation))
    yield application
    application.extensions["dui"].dispose()


@pytest.fixture
def strict(reject_app: Flask) -> FhirClient:
    empty_database(reject_app)
    return FhirClient(reject_app.test_client())


@pytest.fixture
def resident(strict: FhirClient) -> str:
    return str(strict.create(patient())["id"])


def refusal(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 422, answer.get_data(as_text=True)
    issues: list[dict[str, Any]] = answer.get_json()["issue"]
    if len(issues) == 1:  # one problem: the outcome is that problem
        return issues
    assert "does not conform to its profiles" in issues[0]["diagnostics"]
    return [i for i in issues[1:] if i["severity"] == "error"]


def test_a_conforming_weight_is_stored(strict: FhirClient, resident: str) -> None:
    for unit in ("kg", "g", "[lb_av]"):
        assert strict.post("Observation", vital(resident, "29463-7", 62.5, unit)).status_code == 201, unit
    absent = vital(resident, "29463-7", dataAbsentReason={"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed"}]})
    assert strict.post("Observation", absent).status_code == 201


def test_a_weight_in_stone_is_refused_naming_the_profile_and_the_element(strict: FhirClient, resident: str) -> None:
    errors = refusal(strict.post("Observation", vital(resident, "29463-7", 10, "[stone_av]")))
    assert len(errors) == 1, errors
    assert errors[0]["expression"] == ["Observation.value.ofType(Quantity).code"]
    assert "bodyweight" in errors[0]["diagnostics"] and "[stone_av]" in errors[0]["diagnostics"]
    assert "ucum-bodyweight" in errors[0]["diagnostics"]
    assert strict.get("Observation").get_json()["total"] == 0


def test_a_vital_sign_without_category_subject_or_value_is_refused(strict: FhirClient, resident: str) -> None:
    no_category = {k: v for k, v in vital(resident, "29463-7", 62.5).items() if k != "category"}
    errors = refusal(strict.post("Observation", no_category))
    assert any("VSCat" in e["diagnostics"] and e["expression"] == ["Observation.category"] for e in errors), errors
    assert all("vitalsigns" in e["diagnostics"] or "bodyweight" in e["diagnostics"] for e in errors), errors
    other_category = vital(resident, "8867-4", 80, "/min", category=[{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}])
    assert refusal(strict.post("Observation", other_category))
    no_subject = {k: v for k, v in vital(resident, "8310-5", 37.2, "Cel").items() if k != "subject"}
    assert any("subject" in e["diagnostics"] for e in refusal(strict.post("Observation", no_subject)))
    no_value = vital(resident, "8867-4")
    assert any("vs-2" in e["diagnostics"] for e in refusal(strict.post("Observation", no_value)))
    to_the_month = vital(resident, "29463-7", 62.5, effectiveDateTime="2026-11")
    assert any("vs-1" in e["diagnostics"] for e in refusal(strict.post("Observation", to_the_month)))
    wrong_unit = vital(resident, "8867-4", 80, "{beats}/min")
    assert any('"/min"' in e["diagnostics"] for e in refusal(strict.post("Observation", wrong_unit)))


def test_blood_pressure_needs_its_two_components(strict: FhirClient, resident: str) -> None:
    both = vital(resident, "85354-9", component=[pressure("8480-6", 132), pressure("8462-4", 73)])
    assert strict.post("Observation", both).status_code == 201
    errors = refusal(strict.post("Observation", vital(resident, "85354-9")))
    assert any("SystolicBP" in e["diagnostics"] for e in errors) and any("DiastolicBP" in e["diagnostics"]
                                                                         for e in errors), errors
    errors = refusal(strict.post("Observation", vital(resident, "85354-9", component=[pressure("8480-6", 132)])))
    assert [e for e in errors if "DiastolicBP" in e["diagnostics"]] and not [
        e for e in errors if "SystolicBP" in e["diagnostics"]], errors


def test_other_observations_are_untouched(strict: FhirClient, resident: str) -> None:
    glucose = {"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
               "valueQuantity": {"value": 1.1, "unit": "g/L", "system": UCUM, "code": "g/L"}}
    assert strict.post("Observation", glucose).status_code == 201  # no category, no subject: not a vital sign
    local = {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": "urn:ehpad:codes", "code": "29463-7"}]}}  # the same digits in another system
    assert strict.post("Observation", local).status_code == 201


def test_claiming_the_r4_profiles_resolves(strict: FhirClient, resident: str) -> None:
    claimed = vital(resident, "29463-7", 62.5, meta={"profile": [R4 + "vitalsigns", R4 + "bodyweight"]})
    checked = strict.post("Observation/$validate", claimed).get_json()
    assert [i for i in checked["issue"] if i["severity"] in ("error", "warning")] == [], checked
    assert strict.post("Observation", claimed).status_code == 201
    glucose_as_vital = {"resourceType": "Observation", "status": "final", "meta": {"profile": [R4 + "vitalsigns"]},
                        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]}}
    errors = refusal(strict.post("Observation", glucose_as_vital))  # claimed: checked, whatever the code
    assert any("VSCat" in e["diagnostics"] for e in errors), errors
    asked = strict.post(f"Observation/$validate?profile={R4}heartrate", vital(resident, "8867-4", 80, "/min"))
    assert asked.status_code == 200
    assert [i for i in asked.get_json()["issue"] if i["severity"] in ("error", "warning")] == []


def test_warn_mode_stores_and_reports(client: FhirClient) -> None:
    resident = client.create(patient())["id"]
    stored = client.post("Observation", vital(resident, "29463-7", 10, "[stone_av]"),
                         headers={"Prefer": "return=OperationOutcome"})
    assert stored.status_code == 201
    assert any(i["severity"] == "error" and "bodyweight" in i["diagnostics"] for i in stored.get_json()["issue"])


def test_the_services_own_vital_signs_conform(reject_app: Flask, strict: FhirClient) -> None:
    for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30))):  # the demo's eight weeks of vitals
        answer = strict.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    demo_vitals = strict.search("Observation?category=vital-signs&_summary=count")["total"]
    assert demo_vitals > 20
    svc = reject_app.extensions["dui"]
    finess = ESTABLISHMENTS[1]["finess"]
    issued = svc.authenticator.tokens.issue(Actor("staff", f"infirmier-{finess}", frozenset({"infirmier"}), finess),
                                            svc.clock())
    answer = reject_app.test_client().post(
        "/api/residents/demo-resident-001/vital-signs", headers={"Authorization": f"Bearer {issued.token}"},
        json={"weight_kg": 61.5, "temperature_c": 37.1, "heart_rate": 72, "respiratory_rate": 16,
              "spo2_percent": 96, "systolic": 135, "diastolic": 80})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    written = [strict.get(f"Observation/{oid}").get_json() for oid in answer.get_json()["ids"]]
    codes = {c["code"] for o in written for c in o["code"]["coding"]}
    assert {"29463-7", "8310-5", "8867-4", "9279-1", "2708-6", "85354-9"} <= codes
    spo2 = next(o for o in written if o["code"]["coding"][0]["code"] == "59408-5")
    assert [c["code"] for c in spo2["code"]["coding"]] == ["59408-5", "2708-6"]
