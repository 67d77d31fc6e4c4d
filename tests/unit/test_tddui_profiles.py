"""TDDUI profiles: names and URLs, the profile a stored resource is sent under, what makes a Bundle a transfer."""

from __future__ import annotations

from typing import Any

import pytest

from dui.tddui import consumer, profiles
from dui.tddui.profiles import profile_for
from tests.helpers import ins_identifier

SD = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"


def test_names_and_urls() -> None:
    assert profiles.named("TDDUIPatientINS") == profiles.PATIENT_INS
    assert profiles.PATIENT_INS.url == SD + "tddui-patient-ins"
    assert profiles.named("TDDUITaskTransportProfessionnel").url == SD + "tddui-task-transport-professionnel"
    assert profiles.named("TDDUITransportTaskUsager") is profiles.TRANSPORT_RESIDENT  # the FSH's other spelling
    assert profiles.named("TDDUIBundle") is None  # not an entry's profile
    assert profiles.named("Patient") is None
    assert profiles.by_url(SD + "tddui-bundle|2.2.0") is profiles.BUNDLE
    assert all(p.rtype[0].isupper() and p.url.startswith(SD) for p in profiles.PROFILES)
    assert len({p.name for p in profiles.PROFILES}) == len({p.id for p in profiles.PROFILES}) == len(profiles.PROFILES)


def test_patient_profile_follows_the_ins() -> None:
    with_ins = {"resourceType": "Patient", "identifier": [ins_identifier("279035121518989")]}
    without = {"resourceType": "Patient", "identifier": [{"system": "https://example.org/ipp", "value": "1"}]}
    assert profile_for(with_ins) is profiles.PATIENT_INS
    assert profile_for(without) is profiles.PATIENT
    # A stale claim does not decide: a Patient sent without its INS is tddui-patient.
    assert profile_for(without | {"meta": {"profile": [SD + "tddui-patient-ins"]}}) is profiles.PATIENT


@pytest.mark.parametrize(("resource", "expected"), [
    ({"resourceType": "Encounter"}, profiles.STAY),
    ({"resourceType": "Encounter", "partOf": {"reference": "Encounter/1"}}, profiles.EVENT),
    ({"resourceType": "Encounter", "identifier": [{"system": profiles.EVENT_SYSTEM, "value": "x"}]}, profiles.EVENT),
    ({"resourceType": "Encounter", "meta": {"profile": [SD + "tddui-encounter-evenement"]}}, profiles.EVENT),
    ({"resourceType": "Goal", "expressedBy": {"reference": "Patient/1"}}, profiles.GOAL_EXPECTATION),
    ({"resourceType": "Goal", "expressedBy": {"reference": "Practitioner/1"}}, profiles.GOAL_OBJECTIVE),
    ({"resourceType": "Goal"}, profiles.GOAL_OBJECTIVE),
    ({"resourceType": "Task", "identifier": [{"system": profiles.TRANSPORT_PROFESSIONAL_SYSTEM}]},
     profiles.TRANSPORT_PROFESSIONAL),
    ({"resourceType": "Task", "input": [{"type": {"coding": [{"system": profiles.TASK_INPUT + "bilan"}]}}]},
     profiles.TASK_REVIEW),
    ({"resourceType": "Task"}, profiles.TASK_ACTION),
    ({"resourceType": "Consent"}, profiles.CONSENT),
    ({"resourceType": "QuestionnaireResponse"}, profiles.EVALUATION),
    ({"resourceType": "Organization", "meta": {"profile": [SD + "tddui-patient"]}}, profiles.ORGANIZATION),
    ({"resourceType": "Observation"}, None),
])
def test_profile_of_a_stored_resource(resource: dict[str, Any], expected: profiles.Profile | None) -> None:
    assert profile_for(resource) is expected


def test_what_makes_a_transfer() -> None:
    by_profile = {"resourceType": "Bundle", "meta": {"profile": [SD + "tddui-bundle"]}, "type": "transaction"}
    by_name = {"resourceType": "Bundle", "type": "transaction",
               "entry": [{"request": {"method": "POST", "url": "TDDUIOrganization"}}]}
    plain = {"resourceType": "Bundle", "type": "transaction",
             "entry": [{"request": {"method": "POST", "url": "Organization"}}, "not an entry"]}
    assert consumer.is_transfer(by_profile) and consumer.is_transfer(by_name)
    assert not consumer.is_transfer(plain)
    assert not consumer.is_transfer({"resourceType": "Bundle", "meta": {"profile": "x"}, "entry": {}})
