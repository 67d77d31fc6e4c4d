"""dui-resident: the residents of the demo and those the identity code builds conform to it, with no package
installed; a resident breaking it is caught."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from dui.demo.data import resident_bundle
from dui.residents import mapping
from fhir_profiles import CANONICAL
from fhir_profiles.context import Context
from ins import InsKind
from ins.status import Evidence, IdentityStatus
from ins.traits import InsTraits

RESIDENT = f"{CANONICAL}/StructureDefinition/dui-resident"


def validate(patient: dict[str, Any]) -> list[Any]:
    module = pytest.importorskip("fhir_profiles.validator", reason="the profile validator has not landed yet")
    problems: list[Any] = module.ProfileValidator(Context()).validate(patient, [RESIDENT])
    return [p for p in problems if p.severity == "error"]


def demo_residents() -> list[dict[str, Any]]:
    bundles = [resident_bundle(index, date(2026, 1, 15)) for index in range(1, 21)]
    return [e["resource"] for b in bundles for e in b["entry"] if e["resource"]["resourceType"] == "Patient"]


def built_resident() -> dict[str, Any]:
    traits = InsTraits(birth_family="MARTIN", birth_given_names=("Jeanne", "Marie"), birth_date="1938-05-12",
                       sex="F", birth_place="69123")
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [{
        "use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]},
        "system": "https://identifiant-medicosocial-localusager.esante.gouv.fr", "value": "3690000001/000042"}]}
    patient = mapping.with_traits(patient, traits)
    patient = mapping.with_ins(patient, InsKind.TEST, "238056912312345")
    return mapping.with_identity(patient, IdentityStatus.QUAL,
                                 Evidence(document="CN", document_date=date(2024, 3, 1), insi_date=date(2024, 3, 1)))


def test_every_demo_resident_conforms() -> None:
    residents = demo_residents()
    assert len(residents) >= 10
    statuses = {mapping.status_of(r) for r in residents}
    assert IdentityStatus.QUAL in statuses and IdentityStatus.PROV in statuses
    for resident in residents:
        assert validate(resident) == [], resident["id"]


def test_a_resident_built_by_the_identity_code_conforms() -> None:
    resident = built_resident()
    assert mapping.stated_status(resident) is IdentityStatus.QUAL
    assert validate(resident) == []
    provisional = mapping.with_identity(mapping.without_active_ins(resident), IdentityStatus.PROV, Evidence())
    assert validate(provisional) == []


def test_a_resident_breaking_the_profile_is_caught() -> None:
    resident = built_resident()
    replaced = copy.deepcopy(resident)  # a matricule replaced at re-verification stays, with use = old
    replaced["identifier"].append({**replaced["identifier"][0], "use": "old", "value": "238056912312346"})
    assert validate(replaced) == []
    valueless = copy.deepcopy(resident)
    del valueless["identifier"][0]["value"]  # value 1..1 in the INS slices
    assert any(p.location == "Patient.identifier[0]" and "value" in p.message for p in validate(valueless))
    unknown = copy.deepcopy(resident)
    unknown["extension"][0]["valueCoding"]["code"] = "DOUBTFUL"  # required binding of dui-identity-status
    assert validate(unknown)
    nameless = copy.deepcopy(resident)
    del nameless["name"]  # name 1..*
    assert validate(nameless)
