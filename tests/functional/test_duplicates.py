"""Potential duplicates (Patient/$match, http://hl7.org/fhir/R4/patient-operation-match.html) and merging
two records of the same resident, undone by an administrator (Patient.link replaced-by / replaces)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from flask import Flask

from dui.auth.actor import CLI, Actor
from dui.errors import Forbidden
from dui.residents import merge
from ins.insi.table import CORSICA, LYON
from tests.functional.test_identity import internal, parameters, resident, stored
from tests.helpers import FhirClient, diagnostics, ins_identifier, observation

GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def match(client: FhirClient, body: dict[str, Any], **options: Any) -> Any:
    return client.post("Patient/$match", parameters(resource={"resource": body}, **options))


def graded(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["resource"]["name"][0]["family"], e["search"]["extension"][0]["valueCode"])
            for e in bundle.get("entry", [])]


def test_match_scores_french_names_and_dates(client: FhirClient) -> None:
    client.create(resident("Lefebvre", "Helene", "1932-04-05", place="69123"))  # another spelling of the name
    client.create(resident("LEFEVRE", "HELENE", "1932-04-05", place="69123"))  # the same traits, written otherwise
    client.create(resident("Lefèvre", "Hélène", "1932-05-04", place="69123"))  # day and month swapped
    client.create(resident("Martin", "Paul", "1950-01-01", "male", "75115"))
    client.create(resident("Durand", "Hélène", "1932-04-05", place="13055"))  # same date, another person
    response = match(client, resident("Lefèvre", "Hélène", "1932-04-05", place="69123"))
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    found = graded(bundle)
    assert found[0] == ("LEFEVRE", "certain")
    assert ("Lefebvre", "probable") in found  # a spelling variant is never linked automatically
    reasons = {e["resource"]["name"][0]["family"]: [x["valueString"] for x in e["search"]["extension"][1:]]
               for e in bundle["entry"]}
    assert "family names sound alike" in reasons["Lefebvre"] and "same birth date" in reasons["Lefebvre"]
    assert "same family name" in reasons["LEFEVRE"]
    assert ("Lefèvre", "probable") in found or ("Lefèvre", "possible") in found
    assert all(family != "Martin" for family, _ in found)
    scores = [e["search"]["score"] for e in bundle["entry"]]
    assert scores == sorted(scores, reverse=True)
    only = match(client, resident("Lefèvre", "Hélène", "1932-04-05", place="69123"),
                 onlyCertainMatches=True).get_json()
    assert graded(only) == [("LEFEVRE", "certain")]
    assert len(match(client, resident("Lefèvre", "Hélène", "1932-04-05"), count=1).get_json()["entry"]) == 1


def test_match_by_ins_is_certain_whatever_the_names(client: FhirClient) -> None:
    pid = client.create(resident(identifier=[ins_identifier(LYON.identity.matricule)]))["id"]
    probe = resident("Berthier-Durand", "Marie", "1938-04-12", identifier=[ins_identifier(LYON.identity.matricule)])
    bundle = match(client, probe).get_json()
    assert [(e["resource"]["id"], e["search"]["score"]) for e in bundle["entry"]] == [(pid, 1.0)]


def test_match_refuses_what_is_not_a_patient(client: FhirClient) -> None:
    assert client.post("Patient/$match", parameters(count=2)).status_code == 400
    bad = client.post("Patient/$match", parameters(resource={"resource": observation("Patient/x")}))
    assert bad.status_code == 400
    assert client.get("Patient/$match").status_code == 405


def _record(client: FhirClient) -> tuple[str, str, list[str]]:
    target = client.create(resident(identifier=[ins_identifier(LYON.identity.matricule)]))["id"]
    source = client.create(resident("Berthier", "Marie", "1938-04-12"))["id"]
    observations = [client.create(observation(f"Patient/{source}", value=60 + i))["id"] for i in range(3)]
    client.create({"resourceType": "Encounter", "status": "in-progress",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                   "subject": {"reference": f"Patient/{source}"}})
    return source, target, observations


def test_merge_moves_every_reference_and_keeps_history(app: Flask, client: FhirClient) -> None:
    source, target, observations = _record(client)
    preview = client.post("Patient/$merge", parameters(source_patient={"valueReference": {
        "reference": f"Patient/{source}"}}, target_patient={"valueReference": {"reference": f"Patient/{target}"}},
        preview=True))
    assert preview.status_code == 200, preview.get_data(as_text=True)
    assert len([p for p in preview.get_json()["parameter"] if p["name"] == "moved"]) == 4
    assert client.get(f"Observation/{observations[0]}").headers["ETag"] == 'W/"1"'

    response = client.post("Patient/$merge", parameters(
        source_patient={"valueReference": {"reference": f"Patient/{source}"}},
        target_patient={"valueReference": {"reference": f"Patient/{target}"}}))
    assert response.status_code == 200, response.get_data(as_text=True)
    for oid in observations:
        assert client.get(f"Observation/{oid}").get_json()["subject"]["reference"] == f"Patient/{target}"
        old = client.get(f"Observation/{oid}/_history/1").get_json()
        assert old["subject"]["reference"] == f"Patient/{source}"  # history kept
    src = client.get(f"Patient/{source}").get_json()
    assert src["active"] is False
    assert src["link"] == [{"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"}]
    assert client.get(f"Patient/{target}").get_json()["link"][0]["type"] == "replaces"
    everything = client.search(f"Patient/{target}/$everything?_count=100")
    assert {e["resource"]["id"] for e in everything["entry"]} >= set(observations)
    assert client.search(f"Observation?subject=Patient/{source}")["total"] == 0
    merges = client.search(f"Provenance?target=Patient/{source}")["entry"]
    assert len(merges) == 1 and len(merges[0]["resource"]["target"]) == 2 + 4

    again = client.post("Patient/$merge", parameters(
        source_patient={"valueReference": {"reference": f"Patient/{source}"}},
        target_patient={"valueReference": {"reference": f"Patient/{target}"}}))
    assert again.status_code == 409 and "already merged" in diagnostics(again)


def test_merge_refusals(client: FhirClient) -> None:
    source, target, _ = _record(client)

    def attempt(src: str, tgt: str) -> Any:
        return client.post("Patient/$merge", parameters(
            source_patient={"valueReference": {"reference": f"Patient/{src}"}},
            target_patient={"valueReference": {"reference": f"Patient/{tgt}"}}))

    into_no_ins = attempt(target, source)
    assert into_no_ins.status_code == 409 and "holds the INS" in diagnostics(into_no_ins)
    assert attempt(source, source).status_code == 400
    assert attempt(source, "missing").status_code == 404
    other = client.create(resident("Santoni", "Paul", "1941-11-03", "male", "2A004",
                                   identifier=[ins_identifier(CORSICA.identity.matricule)]))
    two_ins = attempt(other["id"], target)
    assert two_ins.status_code == 409 and "two people" in diagnostics(two_ins)


def test_unmerge_is_for_administrators_and_restores_the_record(app: Flask, client: FhirClient) -> None:
    source, target, observations = _record(client)
    client.post("Patient/$merge", parameters(
        source_patient={"valueReference": {"reference": f"Patient/{source}"}},
        target_patient={"valueReference": {"reference": f"Patient/{target}"}}))
    refused = client.post("Patient/$unmerge", parameters(
        source_patient={"valueReference": {"reference": f"Patient/{source}"}}, reason="erreur"))
    assert refused.status_code == 403
    with internal(app) as ctx:
        staff = Actor("staff", "infirmier-1", frozenset({"infirmier"}))
        with pytest.raises(Forbidden):
            merge.unmerge(dataclasses.replace(ctx, actor=staff), source, "erreur")
    with internal(app) as ctx:
        assert ctx.actor is CLI
        outcome = merge.unmerge(ctx, source, "deux résidents distincts")
    assert len(outcome.moved) == 4
    for oid in observations:
        assert client.get(f"Observation/{oid}").get_json()["subject"]["reference"] == f"Patient/{source}"
    restored = stored(app, source)
    assert restored.get("active") is not False and "link" not in restored
    assert "link" not in stored(app, target)
    activities = [e["resource"]["activity"]["coding"][0]["code"]
                  for e in client.search(f"Provenance?target=Patient/{source}")["entry"]]
    assert sorted(activities) == ["merge", "unmerge"]
