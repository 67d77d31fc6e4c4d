"""Admission, discharge, death and the projet personnalisé through the staff API (``dui.staff.admissions``,
``dui.staff.projet``): each one call and one unit of work, over HTTP with real staff tokens, on SQLite and PostgreSQL.

The identity part follows the RNIV (identity provisoire, INSi, potential duplicates; DOMAIN.md §1.5) with the
INSi simulator's fictitious identities (``ins.insi.table``); the stay, the projet and its reviews are written as
the TDDUI 2.2.0 profiles say (DOMAIN.md §2.3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dui.audit import trail
from dui.auth.actor import CLI
from dui.auth.policy import Policy
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.documents import dmp_feed
from dui.residents import mapping
from dui.residents.admission import LOCAL_ID_SYSTEM
from dui.services import Services
from dui.staff import admissions, projet
from dui.tddui import profiles
from ins import IdentityStatus
from ins.errors import InsiUnavailable
from ins.insi.memory import MemoryInsiClient
from ins.insi.table import LYON
from tests.functional.test_staff_api import token
from tests.helpers import FhirClient

PARC, TILLEULS = ESTABLISHMENTS[1]["finess"], ESTABLISHMENTS[0]["finess"]
PARC_ORG = ESTABLISHMENTS[1]["id"]
MINE, THEIRS = "demo-resident-001", "demo-resident-002"  # Le Parc, Les Tilleuls
ROOM_OF_MINE = "demo-ehpad-le-parc-chambre-101"  # demo-resident-001's
THEIR_ROOM = "demo-ehpad-les-tilleuls-chambre-102"
FREE_ROOM, OTHER_FREE_ROOM = "demo-ehpad-le-parc-chambre-110", "demo-ehpad-le-parc-chambre-111"
PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    bundles = [setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))]
    for bundle in bundles:
        answer = client.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    for room_id, name in ((FREE_ROOM, "Chambre 110"), (OTHER_FREE_ROOM, "Chambre 111")):
        room = {"resourceType": "Location", "id": room_id, "status": "active", "name": name, "mode": "instance",
                "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "ro"}]},
                "partOf": {"reference": f"Location/{PARC_ORG}-lilas"},
                "managingOrganization": {"reference": f"Organization/{PARC_ORG}"}}
        assert client.put(f"Location/{room_id}", room).status_code == 201
    return client


@pytest.fixture
def web(app: Flask, demo: FhirClient) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def insi_twin(app: Flask) -> Iterator[MemoryInsiClient]:
    """The in-memory INSi twin in place of the simulator, for failure cases."""
    svc: Services = app.extensions["dui"]
    svc.insi()
    saved, twin = svc._insi, MemoryInsiClient()
    svc._insi = twin
    yield twin
    svc._insi = saved


@pytest.fixture
def policy(app: Flask) -> Iterator[Services]:
    """The service, its authorization policy put back afterwards (a test may grant the direction more)."""
    svc: Services = app.extensions["dui"]
    saved = svc.policy
    yield svc
    svc.policy = saved


def clerk(app: Flask, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", "administratif", finess)


def today(app: Flask) -> date:
    """The establishment's date now (its time zone)."""
    svc: Services = app.extensions["dui"]
    return svc.clock().astimezone(ZoneInfo(svc.settings.timezone)).date()


def berthier(app: Flask, **changes: Any) -> dict[str, Any]:
    """An admission of the simulator's LYON identity (Marie Berthier), typed as the clerk reads it."""
    body: dict[str, Any] = {
        "identity": {"birth_family": "Berthier", "birth_given_names": ["Marie"], "birth_date": "1938-04-12",
                     "gender": "female", "birth_place": "69123"},
        "stay": {"start": today(app).isoformat(), "room": FREE_ROOM, "entry_mode": "Domicile"},
        "general_practitioner": {"family": "Martin", "given": "Paul", "rpps": "10003456786", "phone": "04 78 00 11 22"},
        "trusted_person": {"family": "Berthier", "given": "Anne", "phone": "06 11 22 33 44", "relationship": "Fille"},
        "dmp": {"informed": True},
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def stored(app: Flask, pid: str) -> dict[str, Any]:
    """The Patient as stored (the INS of an identity récupérée does not leave the system through /fhir)."""
    svc: Services = app.extensions["dui"]
    with svc.unit_of_work() as session:
        found = svc.fhir_context(session, CLI).internal.read("Patient", pid)
        assert found is not None
        return found.resource()


def totals(demo: FhirClient) -> dict[str, int]:
    """How many of each type the record holds: nothing half-written shows here."""
    return {rtype: int(demo.search(f"{rtype}?_summary=count")["total"])
            for rtype in ("Patient", "Encounter", "RelatedPerson", "Consent", "Practitioner", "Provenance")}


# -- admission ------------------------------------------------------------------------------------------


def test_admission_with_insi_makes_one_record_with_stay_room_gp_trusted_person_and_dmp_information(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    answer = web.post("/api/admissions", json=berthier(app), headers=clerk(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    done = answer.get_json()
    pid = done["resident"]["id"]
    assert answer.headers["Location"] == f"/api/residents/{pid}"
    assert done["insi"]["result"] == "00" and done["resident"]["identity_status"] == "RECUP"
    assert "récupérée" in done["insi"]["message_fr"]
    assert answer.headers["ETag"] == f'W/"{done["resident"]["version"]}"' == 'W/"2"'  # created, then INSi
    assert done["resident"]["family"] == "BERTHIER" and done["resident"]["given"] == "MARIE"  # INSi's traits
    assert done["stay"]["room"] == {"id": FREE_ROOM, "name": "Chambre 110"} and done["stay"]["status"] == "in-progress"
    assert done["duplicates"] == []

    patient = demo.get(f"Patient/{pid}").get_json()
    assert mapping.active_ins(stored(app, pid)).value == LYON.identity.matricule  # type: ignore[union-attr]
    record = mapping.traits_of(patient)
    assert record is not None and record.birth_given_names == ("MARIE", "HELENE", "JEANNE")
    assert patient["managingOrganization"]["reference"] == f"Organization/{PARC_ORG}"
    local = next(i["value"] for i in patient["identifier"] if i["system"] == LOCAL_ID_SYSTEM)
    assert local.startswith(f"3{PARC}/")
    gp = demo.get(patient["generalPractitioner"][0]["reference"]).get_json()
    assert {i["value"] for i in gp["identifier"]} == {"10003456786", "810003456786"}
    stay = demo.get(done["created"]["stay"]).get_json()
    assert stay["status"] == "in-progress" and stay["serviceProvider"]["reference"] == f"Organization/{PARC_ORG}"
    assert stay["location"][0]["location"]["reference"] == f"Location/{FREE_ROOM}"
    assert stay["identifier"][0]["system"] == admissions.STAY_SYSTEM
    assert stay["identifier"][0]["value"] == f"{local}-SEJOUR-1"
    assert {e["url"]: next(v for k, v in e.items() if k != "url") for e in stay["extension"]} == {
        admissions.ADMISSION_DATE: today(app).isoformat(), admissions.ENTRY_MODE: "Domicile"}
    trusted = demo.get(done["created"]["trusted"]).get_json()
    assert trusted["relationship"][0]["coding"][0]["code"] == "NOK"
    assert trusted["patient"]["reference"] == f"Patient/{pid}"
    informed = demo.get(done["created"]["informed"]).get_json()
    assert informed["category"][0]["coding"][0] == {"system": dmp_feed.CONSENT_SYSTEM, "code": dmp_feed.INFORMATION}
    assert "opposed" not in done["created"]

    # the resident is one of "my residents now", in her room
    now = web.get("/api/residents?limit=100", headers=token(app, "staff", "infirmier", PARC)).get_json()["items"]
    mine = next(i for i in now if i["id"] == pid)
    assert mine["room"] == {"id": FREE_ROOM, "name": "Chambre 110"} and mine["identity_status"] == "RECUP"
    # and not the other establishment's
    theirs = web.get("/api/residents?limit=100", headers=token(app, "staff", "infirmier", TILLEULS)).get_json()
    assert pid not in [i["id"] for i in theirs["items"]]


def test_admission_without_insi_stays_provisional_with_an_existing_gp_and_the_dmp_opposition(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    body = berthier(app, insi=False, trusted_person=None, general_practitioner={"id": f"{PARC_ORG}-medco"},
                    dmp={"informed": True, "informed_on": "2026-11-02", "opposed": True,
                         "opposition_reason": "Ne souhaite pas de DMP"})
    body["identity"].update(used_family="Durand", local_id="2026-0042")
    answer = web.post("/api/admissions", json=body, headers=clerk(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    done = answer.get_json()
    assert done["insi"] == {"requested": False, "result": None, "message": None, "message_fr": None}
    assert done["resident"]["identity_status"] == "PROV" and done["resident"]["version"] == 1
    assert done["resident"]["family"] == "Durand"  # the name in use shows first
    assert set(done["created"]) == {"patient", "stay", "informed", "opposed"}
    patient = demo.get(done["created"]["patient"]).get_json()
    assert mapping.status_of(patient) is IdentityStatus.PROV and mapping.active_ins(patient) is None
    assert patient["generalPractitioner"][0]["reference"] == f"Practitioner/{PARC_ORG}-medco"
    assert next(i["value"] for i in patient["identifier"] if i["system"] == LOCAL_ID_SYSTEM) == f"3{PARC}/2026-0042"
    opposed = demo.get(done["created"]["opposed"]).get_json()
    assert opposed["extension"] == [{"url": dmp_feed.OPPOSITION_REASON, "valueString": "Ne souhaite pas de DMP"}]
    assert demo.get(done["created"]["informed"]).get_json()["dateTime"] == "2026-11-02"


@pytest.mark.parametrize(("identity", "code"), [
    ({"birth_family": "Inconnue", "birth_given_names": ["Rose"]}, "01"),
    ({"birth_family": "Martin", "birth_given_names": ["Jean"], "birth_date": "1935-01-15", "gender": "male",
      "birth_place": None}, "02"),
])
def test_insi_none_or_several_admits_with_a_provisional_identity_and_says_what_to_do(
        app: Flask, web: FlaskClient, identity: dict[str, Any], code: str) -> None:
    body = berthier(app)
    body["identity"].update(identity)
    answer = web.post("/api/admissions", json=body, headers=clerk(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    done = answer.get_json()
    assert done["insi"]["result"] == code and done["resident"]["identity_status"] == "PROV"
    assert "INSi found" in done["insi"]["message"] and "INSi" in done["insi"]["message_fr"]


def test_insi_unreachable_admits_with_a_provisional_identity(app: Flask, web: FlaskClient,
                                                              insi_twin: MemoryInsiClient) -> None:
    insi_twin.fail_with = InsiUnavailable("connection refused")
    answer = web.post("/api/admissions", json=berthier(app), headers=clerk(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    done = answer.get_json()
    assert done["insi"]["result"] == "unavailable" and "retry" in done["insi"]["message"]
    assert "$ins-fetch" in done["insi"]["message_fr"] and done["resident"]["identity_status"] == "PROV"


def test_a_probable_duplicate_stops_the_admission_unless_confirmed(app: Flask, web: FlaskClient,
                                                                    demo: FhirClient) -> None:
    """RNIV: look for the resident's record before creating one. demo-resident-001 is Hélène Marie Lefèvre."""
    body = berthier(app, insi=False)
    body["identity"].update(birth_family="Lefevre", birth_given_names=["Helene", "Marie"], birth_date="1931-06-14")
    before = totals(demo)
    refused = web.post("/api/admissions", json=body, headers=clerk(app))
    assert refused.status_code == 409 and refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert [e["field"] for e in problem["errors"]] == ["confirm_new"] and problem["errors"][0]["code"] == "duplicate"
    assert f"Patient/{MINE}" in problem["detail"] and "confirm_new" in problem["errors"][0]["detail_fr"]
    assert totals(demo) == before
    confirmed = web.post("/api/admissions", json={**body, "confirm_new": True}, headers=clerk(app))
    assert confirmed.status_code == 201, confirmed.get_data(as_text=True)
    found = confirmed.get_json()["duplicates"]
    assert found[0]["id"] == MINE and found[0]["grade"] in ("certain", "probable")
    assert totals(demo)["Patient"] == before["Patient"] + 1


def test_an_ins_another_resident_carries_refuses_the_whole_admission(app: Flask, web: FlaskClient,
                                                                      demo: FhirClient) -> None:
    """The second admission passes every check, its transaction runs, then INSi returns the INS of the first:
    nothing of it stays (no Patient, stay, practitioner, consent; the room still free)."""
    first = web.post("/api/admissions", json=berthier(app), headers=clerk(app))
    assert first.status_code == 201 and first.get_json()["insi"]["result"] == "00"
    before = totals(demo)
    again = berthier(app, confirm_new=True, general_practitioner={"family": "Roux", "rpps": "10003456786"})
    again["stay"]["room"] = OTHER_FREE_ROOM
    refused = web.post("/api/admissions", json=again, headers=clerk(app))
    assert refused.status_code == 409, refused.get_data(as_text=True)
    assert first.get_json()["resident"]["id"] in refused.get_json()["detail"]
    assert [(e["field"], e["code"]) for e in refused.get_json()["errors"]] == [("identity", "duplicate")]
    assert "même résident" in refused.get_json()["errors"][0]["detail_fr"]
    assert totals(demo) == before
    free = web.post("/api/admissions", json=berthier(app, insi=False, confirm_new=True,
                                                    stay={"start": today(app).isoformat(), "room": OTHER_FREE_ROOM}),
                    headers=clerk(app))
    assert free.status_code == 201, free.get_data(as_text=True)


@pytest.mark.parametrize(("room", "status", "word"), [
    (THEIR_ROOM, 422, "n'est pas une chambre ouverte de votre établissement"),
    ("no-such-room", 422, "n'est pas une chambre ouverte de votre établissement"),
    (f"{PARC_ORG}-lilas", 422, "n'est pas une chambre ouverte de votre établissement"),  # a unit, not a room
    (ROOM_OF_MINE, 409, "occupée par un séjour en cours"),
])
def test_a_room_not_ours_or_occupied_is_refused_and_nothing_is_written(app: Flask, web: FlaskClient, demo: FhirClient,
                                                                       room: str, status: int, word: str) -> None:
    before = totals(demo)
    answer = web.post("/api/admissions", json=berthier(app, stay={"start": today(app).isoformat(), "room": room}),
                      headers=clerk(app))
    assert answer.status_code == status and answer.mimetype == "application/problem+json"
    assert [(e["field"], word in e["detail_fr"]) for e in answer.get_json()["errors"]] == [("stay.room", True)]
    assert totals(demo) == before


def test_two_admissions_into_one_room_at_once_one_is_refused(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    """The room's row is locked before the check (PostgreSQL; SQLite serialises writers): the second admission
    sees the first's stay."""
    bodies = [berthier(app, insi=False, stay={"start": today(app).isoformat(), "room": OTHER_FREE_ROOM})
              for _ in range(2)]
    bodies[1]["identity"].update(birth_family="Garnier", birth_given_names=["Louise"], birth_date="1940-02-03")
    barrier, statuses = threading.Barrier(2), []

    def admit(body: dict[str, Any]) -> None:
        barrier.wait()
        statuses.append(app.test_client().post("/api/admissions", json=body, headers=clerk(app)).status_code)

    threads = [threading.Thread(target=admit, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409]
    assert int(demo.search(f"Encounter?location=Location/{OTHER_FREE_ROOM}&_summary=count")["total"]) == 1


@pytest.mark.parametrize("role", ["infirmier", "aide-soignant", "medecin", "direction"])
def test_only_the_administration_admits(app: Flask, web: FlaskClient, demo: FhirClient, role: str) -> None:
    """The direction passes the endpoint's gate, but by default the policy lets it read identity data only."""
    before = totals(demo)
    answer = web.post("/api/admissions", json=berthier(app), headers=token(app, "staff", role, PARC))
    assert answer.status_code == 403 and answer.mimetype == "application/problem+json"
    assert totals(demo) == before


def test_a_direction_the_policy_lets_write_identity_data_admits(app: Flask, web: FlaskClient,
                                                                 policy: Services) -> None:
    policy.policy = Policy.with_overrides({PARC: {"direction": {"identity": "crus"}}})
    answer = web.post("/api/admissions", json=berthier(app), headers=token(app, "staff", "direction", PARC))
    assert answer.status_code == 201, answer.get_data(as_text=True)


def test_bad_admissions_are_problems_naming_the_field_never_500(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    def refused(body: Any) -> list[tuple[str | None, str]]:
        answer = web.post("/api/admissions", json=body, headers=clerk(app))
        assert answer.status_code == 422 and answer.mimetype == "application/problem+json", answer.get_data()
        return [(e["field"], e["detail_fr"]) for e in answer.get_json()["errors"]]

    before = totals(demo)
    good = berthier(app)
    assert refused({**good, "identity": {**good["identity"], "birth_place": "6912"}}) == [
        ("identity.birth_place", "Un code COG de l'INSEE : 5 caractères (2A/2B pour la Corse, 99xxx pour un pays)")]
    assert refused({**good, "general_practitioner": {"family": "Roux", "rpps": "10003456780"}}) == [
        ("general_practitioner.rpps", "Un numéro RPPS compte 11 chiffres, clé comprise")]
    assert refused({**good, "general_practitioner": {"id": f"{PARC_ORG}-medco", "family": "Roux"}})[0][0] == \
        "general_practitioner.id"
    assert refused({**good, "general_practitioner": {"id": "nobody"}}) == [
        ("general_practitioner.id", "Practitioner/nobody n'existe pas")]
    assert refused({**good, "dmp": {"informed": True, "opposed": True}}) == [
        ("dmp.opposition_reason", "Une opposition indique son motif")]
    assert refused({**good, "identity": {**good["identity"], "birth_family": "B3rthier", "birth_given_names": [
        "Marie", "J0"]}}) == [
        ("identity.birth_family", "Le nom de naissance ne suit pas les règles de l'INS (lettres, espace, tiret, "
                                  "apostrophe)"),
        ("identity.birth_given_names", "Les prénoms de naissance ne suivent pas les règles de l'INS (lettres, "
                                       "espace, tiret, apostrophe)")]
    assert refused({**good, "identity": {**good["identity"], "gender": "unknown"}})[0][0] == "identity.gender"
    assert refused({**good, "stay": {**good["stay"], "start": (today(app) + timedelta(days=2)).isoformat()}})[0][0] \
        == "stay.start"
    assert refused({**good, "stay": {"room": FREE_ROOM}})[0] == ("stay.start", "Champ obligatoire manquant.")
    assert refused({**good, "nickname": "x"})[0] == ("nickname", "Champ inconnu.")
    assert totals(demo) == before


def test_an_admission_is_audited_with_its_new_resident_and_a_refusal_with_the_records_it_may_duplicate(
        app: Flask, web: FlaskClient) -> None:
    done = web.post("/api/admissions", json=berthier(app), headers=clerk(app)).get_json()
    body = berthier(app, insi=False)
    body["identity"].update(birth_family="Lefevre", birth_given_names=["Helene", "Marie"], birth_date="1931-06-14")
    assert web.post("/api/admissions", json=body, headers=clerk(app)).status_code == 409
    with app.extensions["dui"].unit_of_work(write=False) as session:
        admitted = [row for row, _ in trail.entries(session, patient=done["resident"]["id"])
                    if row["detail"] == "api admit-resident"]
        refused = [row for row, _ in trail.entries(session, patient=MINE) if row["detail"] == "api admit-resident"]
    assert [(r["action"], r["outcome"]) for r in admitted] == [("transaction", "success")]
    assert [(r["outcome"], r["status"]) for r in refused] == [("failed", 409)]


# -- discharge and death --------------------------------------------------------------------------------


def test_discharge_finishes_the_stay_frees_the_room_and_a_second_one_is_a_conflict(app: Flask, web: FlaskClient,
                                                                                     demo: FhirClient) -> None:
    url = f"/api/residents/{MINE}/discharge"
    stay = demo.get(f"Encounter/{MINE}-sejour").get_json()
    admitted = date.fromisoformat(stay["period"]["start"])
    early = web.post(url, json={"date": (admitted - timedelta(days=1)).isoformat(), "destination": "Domicile"},
                     headers=clerk(app))
    assert early.status_code == 422 and early.get_json()["errors"][0]["field"] == "date"
    assert "antérieure à l'admission" in early.get_json()["errors"][0]["detail_fr"]
    later = web.post(url, json={"date": (today(app) + timedelta(days=1)).isoformat(), "destination": "Domicile"},
                     headers=clerk(app))
    assert later.status_code == 422
    nurse = web.post(url, json={"date": today(app).isoformat(), "destination": "Domicile"},
                     headers=token(app, "staff", "infirmier", PARC))
    assert nurse.status_code == 403
    assert demo.get(f"Encounter/{MINE}-sejour").get_json()["meta"]["versionId"] == stay["meta"]["versionId"]

    done = web.post(url, json={"date": today(app).isoformat(), "destination": "Retour à domicile"}, headers=clerk(app))
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json()["stay"]["status"] == "finished" and done.get_json()["stay"]["end"] == today(app).isoformat()
    finished = demo.get(f"Encounter/{MINE}-sejour").get_json()
    assert finished["status"] == "finished" and finished["location"][0]["status"] == "completed"
    assert {"url": admissions.EXIT_MODE, "valueString": "Retour à domicile"} in finished["extension"]
    assert finished["meta"]["tag"][0]["code"] == "HTEST"  # the demo's tag kept
    again = web.post(url, json={"date": today(app).isoformat(), "destination": "Domicile"}, headers=clerk(app))
    assert again.status_code == 409 and "déjà" in again.get_json()["errors"][0]["detail_fr"]
    nurse_view = web.get("/api/residents", headers=token(app, "staff", "infirmier", PARC)).get_json()["items"]
    assert MINE not in [i["id"] for i in nurse_view]
    # the room is free again
    into_it = web.post("/api/admissions", json=berthier(app, stay={"start": today(app).isoformat(),
                                                                   "room": ROOM_OF_MINE}), headers=clerk(app))
    assert into_it.status_code == 201, into_it.get_data(as_text=True)


def test_another_establishments_resident_cannot_be_discharged(app: Flask, web: FlaskClient) -> None:
    answer = web.post(f"/api/residents/{THEIRS}/discharge", json={"date": today(app).isoformat(),
                                                                  "destination": "Domicile"}, headers=clerk(app))
    assert answer.status_code == 404


def test_a_physician_records_a_death_once(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    url = f"/api/residents/{MINE}/death"
    svc: Services = app.extensions["dui"]
    moment = svc.clock().replace(microsecond=0) - timedelta(hours=2)
    stay = demo.get(f"Encounter/{MINE}-sejour").get_json()
    admitted = date.fromisoformat(stay["period"]["start"])
    aide = web.post(url, json={"deceased_at": moment.isoformat()}, headers=token(app, "staff", "aide-soignant", PARC))
    assert aide.status_code == 403
    before = web.post(url, json={"deceased_at": f"{(admitted - timedelta(days=3)).isoformat()}T10:00:00+01:00"},
                      headers=token(app, "staff", "medecin", PARC))
    assert before.status_code == 422 and before.get_json()["errors"][0]["field"] == "deceased_at"
    assert demo.get(f"Patient/{MINE}").get_json().get("deceasedDateTime") is None  # nothing half-written

    done = web.post(url, json={"deceased_at": moment.isoformat()}, headers=token(app, "staff", "medecin", PARC))
    assert done.status_code == 200, done.get_data(as_text=True)
    patient = demo.get(f"Patient/{MINE}").get_json()
    assert patient["deceasedDateTime"] == done.get_json()["deceased_at"]
    assert mapping.status_of(patient) is IdentityStatus.QUAL  # the identity untouched
    finished = demo.get(f"Encounter/{MINE}-sejour").get_json()
    assert finished["status"] == "finished" and finished["period"]["end"] == done.get_json()["deceased_at"]
    assert finished["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "exp"
    again = web.post(url, json={"deceased_at": moment.isoformat()}, headers=clerk(app))
    assert again.status_code == 409
    discharge = web.post(f"/api/residents/{MINE}/discharge", json={"date": today(app).isoformat(),
                                                                   "destination": "Domicile"}, headers=clerk(app))
    assert discharge.status_code == 409


def test_a_death_on_the_day_of_admission_of_an_identity_recuperee(app: Flask, web: FlaskClient) -> None:
    done = web.post("/api/admissions", json=berthier(app), headers=clerk(app)).get_json()
    pid = done["resident"]["id"]
    assert done["resident"]["identity_status"] == "RECUP"
    svc: Services = app.extensions["dui"]
    answer = web.post(f"/api/residents/{pid}/death", json={"deceased_at": svc.clock().isoformat()},
                      headers=token(app, "staff", "medecin", PARC))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["stay"]["exit_mode"] == "Décès" and answer.get_json()["stay"]["room"]["id"] == FREE_ROOM
    patient = stored(app, pid)
    assert mapping.active_ins(patient).value == LYON.identity.matricule  # type: ignore[union-attr]  # kept
    assert patient["deceasedDateTime"] == answer.get_json()["deceased_at"]


# -- projet personnalisé --------------------------------------------------------------------------------


def test_projet_goals_and_a_review_with_if_match(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    url = f"/api/residents/{MINE}/projet"
    nurse, aide = token(app, "staff", "infirmier", PARC), token(app, "staff", "aide-soignant", PARC)
    assert web.get(url, headers=nurse).status_code == 404
    written = web.post(url, json={"goals": [
        {"description": "Marcher jusqu'à la salle à manger avec son déambulateur", "target_date": "2027-03-01"},
        {"description": "Participer à l'atelier mémoire une fois par semaine"}]}, headers=nurse)
    assert written.status_code == 201, written.get_data(as_text=True)
    plan = written.get_json()
    assert written.headers["ETag"] == f'W/"{plan["version"]}"'
    assert [g["title"] for g in plan["goals"]] == ["Objectif 1", "Objectif 2"]
    assert plan["goals"][0]["target_date"] == "2027-03-01" and plan["goals"][0]["achievement_status"] == "in-progress"
    care_plan = demo.get(f"CarePlan/{plan['id']}").get_json()
    assert care_plan["meta"]["profile"] == [profiles.CARE_PLAN.url]
    assert care_plan["identifier"][0]["system"] == projet.PROJET_SYSTEM
    assert care_plan["identifier"][0]["value"] == f"3{PARC}/{1:06d}-PPER-1"  # the demo's local id
    goal = demo.get(f"Goal/{plan['goals'][0]['id']}").get_json()
    assert goal["meta"]["profile"] == [profiles.GOAL_OBJECTIVE.url]
    assert goal["identifier"][0] == {"system": profiles.OBJECTIVE_SYSTEM, "value": f"3{PARC}/{1:06d}-OBJE-1"}
    assert goal["extension"][0] == {"url": projet.CAREPLAN_REFERENCE,
                                    "valueReference": {"reference": f"CarePlan/{plan['id']}"}}

    more = web.post(url, json={"goals": [{"description": "Dormir sans somnifère"}]},
                    headers={**aide, "If-Match": written.headers["ETag"]})
    assert more.status_code == 201, more.get_data(as_text=True)
    assert more.status_code == 201 and [g["title"] for g in more.get_json()["goals"]][-1] == "Objectif 3"

    reviews = f"{url}/reviews"
    first, third = plan["goals"][0]["id"], more.get_json()["goals"][2]["id"]
    review = {"date": today(app).isoformat(), "text": "Marche seule jusqu'à la salle à manger.",
              "goals": [{"goal_id": first, "status": "achieved"}, {"goal_id": third, "status": "no-progress"}],
              "next_review": (today(app) + timedelta(days=180)).isoformat()}
    stale = web.post(reviews, json=review, headers={**nurse, "If-Match": written.headers["ETag"]})
    assert stale.status_code == 412 and stale.mimetype == "application/problem+json"
    assert "relisez-le" in stale.get_json()["errors"][0]["detail_fr"]
    assert web.get(url, headers=nurse).get_json()["reviews"] == []  # nothing written
    done = web.post(reviews, json=review, headers={**nurse, "If-Match": more.headers["ETag"]})
    assert done.status_code == 201, done.get_data(as_text=True)
    after = done.get_json()
    assert after["version"] == more.get_json()["version"] + 1 and done.headers["ETag"] == f'W/"{after["version"]}"'
    assert [(g["lifecycle_status"], g["achievement_status"]) for g in after["goals"]] == [
        ("completed", "achieved"), ("active", "in-progress"), ("active", "no-progress")]
    assert after["reviews"][0]["text"] == review["text"] and after["reviews"][0]["author"] == f"infirmier-{PARC}"
    assert after["reviews"][0]["next_review"] == review["next_review"]
    task = demo.get(f"Task/{after['reviews'][0]['id']}").get_json()
    assert task["meta"]["profile"] == [profiles.TASK_REVIEW.url]
    assert task["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
    assert task["identifier"][0]["value"] == f"3{PARC}/{1:06d}-BILA-1"
    read = web.get(url, headers=nurse)
    assert read.get_json() == after and read.headers["ETag"] == done.headers["ETag"]


def test_projet_review_refusals(app: Flask, web: FlaskClient) -> None:
    url = f"/api/residents/{MINE}/projet"
    nurse = token(app, "staff", "infirmier", PARC)
    review = {"date": today(app).isoformat(), "text": "Bilan"}
    assert web.post(f"{url}/reviews", json=review, headers=nurse).status_code == 404  # no projet yet
    assert web.post(url, json={"goals": [{"description": "Marcher"}]}, headers=nurse).status_code == 201
    cases = {
        "unknown goal": web.post(f"{url}/reviews", headers=nurse,
                                 json={**review, "goals": [{"goal_id": "nope", "status": "achieved"}]}),
        "future": web.post(f"{url}/reviews", json={**review, "date": (today(app) + timedelta(days=3)).isoformat()},
                           headers=nurse),
        "bad status": web.post(f"{url}/reviews", json={**review, "goals": [{"goal_id": "x", "status": "done"}]},
                               headers=nurse),
        "bad etag": web.post(f"{url}/reviews", json=review, headers={**nurse, "If-Match": "yesterday"}),
        "no goals": web.post(url, json={"goals": []}, headers=nurse),
    }
    assert {k: v.status_code for k, v in cases.items()} == {"unknown goal": 422, "future": 422, "bad status": 422,
                                                            "bad etag": 400, "no goals": 422}
    assert cases["unknown goal"].get_json()["errors"][0]["field"] == "goals.0.goal_id"
    assert all(c.mimetype == "application/problem+json" for c in cases.values())
    assert web.get(url, headers=nurse).get_json()["reviews"] == []


def test_who_writes_and_reads_the_projet(app: Flask, web: FlaskClient, policy: Services) -> None:
    url = f"/api/residents/{MINE}/projet"
    goals = {"goals": [{"description": "Marcher"}]}
    for role in ("administratif", "direction"):
        assert web.post(url, json=goals, headers=token(app, "staff", role, PARC)).status_code == 403
    assert web.post(url, json=goals, headers=token(app, "staff", "medecin", PARC)).status_code == 201
    assert web.get(url, headers=token(app, "staff", "administratif", PARC)).status_code == 403
    assert web.get(url, headers=token(app, "staff", "direction", PARC)).status_code == 403  # the policy's default
    policy.policy = Policy.with_overrides({PARC: {"direction": {"care": "rs"}}})
    assert web.get(url, headers=token(app, "staff", "direction", PARC)).status_code == 200
    other = web.get(f"/api/residents/{THEIRS}/projet", headers=token(app, "staff", "infirmier", PARC))
    assert other.status_code == 404


def test_the_new_endpoints_are_in_the_openapi_document(app: Flask, web: FlaskClient) -> None:
    paths = web.get("/api/openapi.json").get_json()["paths"]
    assert {"/api/admissions", "/api/residents/{rid}/discharge", "/api/residents/{rid}/death",
            "/api/residents/{rid}/projet", "/api/residents/{rid}/projet/reviews"} <= set(paths)
    assert "412" in paths["/api/residents/{rid}/projet/reviews"]["post"]["responses"]
