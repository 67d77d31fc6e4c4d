"""Establishment scoping: staff and clients see only the residents of their organization, whatever the
path (read, search, include, history, $everything, operations, bundles, writes); a partner hospital sees
the residents it cares for (an active Consent, or a current stay)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from dui.auth.actor import Actor
from dui.auth.scopes import ScopeSet
from dui.errors import Forbidden, NotFound
from tests.functional.test_authorization import call, organization
from tests.helpers import FhirClient, observation, patient

LYON, VILLEURBANNE, HOSPITAL = "690002662", "690001425", "690007316"


def nurse(finess: str) -> Actor:
    return Actor("staff", f"ide-{finess}", frozenset({"infirmier"}), finess)


def hospital() -> Actor:
    return Actor("client", "hopital", frozenset(), HOSPITAL, scopes=ScopeSet.parse("system/*.rs"),
                 client_id="hopital")


@pytest.fixture
def homes(client: FhirClient) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for finess in (LYON, VILLEURBANNE, HOSPITAL):
        out[finess] = organization(client, finess)
    for finess, family in ((LYON, "Lefèvre"), (VILLEURBANNE, "Lefebvre")):
        pid = client.create(patient(family=family, managingOrganization={
            "reference": f"Organization/{out[finess]}"}))["id"]
        out[family] = pid
        out[f"obs-{family}"] = client.create(observation(f"Patient/{pid}"))["id"]
    return out


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def test_staff_never_see_another_establishments_residents(app: Flask, homes: dict[str, Any]) -> None:
    ide = nurse(LYON)
    mine, theirs = homes["Lefèvre"], homes["Lefebvre"]
    assert ids(call(app, ide, "GET", "Patient?name=lef")[1]) == {mine}
    assert call(app, ide, "GET", "Patient?name=lef&_total=accurate")[1]["total"] == 1
    assert ids(call(app, ide, "GET", "Observation")[1]) == {homes["obs-Lefèvre"]}
    included = call(app, ide, "GET", "Patient?_revinclude=Observation:subject")[1]
    assert ids(included) == {mine, homes["obs-Lefèvre"]}
    chained = call(app, ide, "GET", "Observation?subject.name=lefebvre")[1]
    assert ids(chained) == set()
    for path in (f"Patient/{theirs}", f"Observation/{homes['obs-Lefebvre']}", f"Patient/{theirs}/_history",
                 f"Patient/{theirs}/$everything", f"Patient/{theirs}/_history/1"):
        with pytest.raises(NotFound):
            status, _ = call(app, ide, "GET", path)
            assert status == 404
    history = call(app, ide, "GET", "Observation/_history")[1]
    assert {e["resource"]["id"] for e in history.get("entry", [])} == {homes["obs-Lefèvre"]}
    assert ids(call(app, ide, "GET", "Organization")[1]) == {homes[LYON], homes[VILLEURBANNE], homes[HOSPITAL]}


def test_staff_cannot_write_into_another_establishments_records(app: Flask, homes: dict[str, Any]) -> None:
    ide = nurse(LYON)
    theirs = homes["Lefebvre"]
    with pytest.raises(Forbidden):
        call(app, ide, "POST", "Observation", observation(f"Patient/{theirs}"))
    # An update of a record she may not see answers as one of an id that does not exist: resident data is not
    # created at an id the client chooses (it could tell the two apart).
    answers = []
    for oid in (homes["obs-Lefebvre"], "no-such-observation"):
        with pytest.raises(Forbidden) as refused:
            call(app, ide, "PUT", f"Observation/{oid}", dict(observation(f"Patient/{homes['Lefèvre']}"), id=oid))
        answers.append(refused.value.message.replace(oid, "<id>"))
    assert answers[0] == answers[1]
    with pytest.raises(Forbidden, match="managingOrganization"):
        call(app, Actor("staff", "adm", frozenset({"administratif"}), LYON), "POST", "Patient", patient())
    with pytest.raises(NotFound):
        call(app, Actor("staff", "adm", frozenset({"administratif"}), LYON), "POST", f"Patient/{theirs}/$ins-verify")
    assert call(app, ide, "POST", "Observation", observation(f"Patient/{homes['Lefèvre']}"))[0] == 201


def test_a_partner_hospital_sees_the_residents_it_cares_for(app: Flask, client: FhirClient,
                                                           homes: dict[str, Any]) -> None:
    assert ids(call(app, hospital(), "GET", "Patient")[1]) == set()
    mine = homes["Lefèvre"]
    stay = client.create({"resourceType": "Encounter", "status": "in-progress",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                          "subject": {"reference": f"Patient/{mine}"},
                          "serviceProvider": {"reference": f"Organization/{homes[HOSPITAL]}"}})
    assert ids(call(app, hospital(), "GET", "Patient")[1]) == {mine}
    assert homes["obs-Lefèvre"] in ids(call(app, hospital(), "GET", "Observation")[1])
    client.put(f"Encounter/{stay['id']}", dict(stay, status="finished"))
    assert ids(call(app, hospital(), "GET", "Patient")[1]) == set()
    client.create({"resourceType": "Consent", "status": "active",
                   "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                         "code": "patient-privacy"}]},
                   "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                   "patient": {"reference": f"Patient/{homes['Lefebvre']}"},
                   "provision": {"actor": [{"role": {"coding": [{
                       "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                       "reference": {"reference": f"Organization/{homes[HOSPITAL]}"}}]}})
    assert ids(call(app, hospital(), "GET", "Patient")[1]) == {homes["Lefebvre"]}


def test_unscoped_actors_see_everything(app: Flask, homes: dict[str, Any]) -> None:
    group = Actor("client", "groupe", frozenset(), None, scopes=ScopeSet.parse("system/*.rs"), client_id="groupe")
    assert ids(call(app, group, "GET", "Patient")[1]) == {homes["Lefèvre"], homes["Lefebvre"]}
