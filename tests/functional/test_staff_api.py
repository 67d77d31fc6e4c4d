"""The staff API over HTTP (docs/staff-api.md): each use case with real staff tokens, its refusals as RFC 9457
problems naming the field, the same records, authorization and audit as /fhir. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dui.audit import trail
from dui.auth import accounts
from dui.auth.actor import Actor
from dui.auth.scopes import ScopeSet
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from tests.authkit import client_jwks
from tests.helpers import FhirClient

PARC, TILLEULS = ESTABLISHMENTS[1]["finess"], ESTABLISHMENTS[0]["finess"]
MINE, OTHER_MINE, THEIRS = "demo-resident-001", "demo-resident-003", "demo-resident-002"  # Le Parc, Le Parc, Tilleuls
ROOM_OF_MINE = "demo-ehpad-le-parc-chambre-101"
LOINC = "http://loinc.org"


def token(app: Flask, kind: str, role: str | None, finess: str, name: str | None = None) -> dict[str, str]:
    svc = app.extensions["dui"]
    actor = Actor(kind, name or f"{role or kind}-{finess}", frozenset({role} if role else ()), finess)
    issued = svc.authenticator.tokens.issue(actor, svc.clock())
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        answer = client.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    return client


@pytest.fixture
def web(app: Flask, demo: FhirClient) -> FlaskClient:
    return app.test_client()


def nurse(app: Flask) -> dict[str, str]:
    return token(app, "staff", "infirmier", PARC)


def test_my_residents_now_are_my_establishments_with_rooms_units_and_attention(app: Flask, web: FlaskClient) -> None:
    answer = web.get("/api/residents", headers=nurse(app))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    items = answer.get_json()["items"]
    assert [i["id"] for i in items] == [MINE, OTHER_MINE]  # not the Tilleuls' resident
    first = items[0]
    assert first["family"] == "Lefèvre" and first["room"] == {"id": ROOM_OF_MINE, "name": "Chambre 101"}
    assert first["identity_status"] == "QUAL"
    assert first["unit"]["id"] == "demo-ehpad-le-parc-lilas"
    assert any(f["code"] == "fall-risk" for f in first["attention"]["flags"])
    assert first["attention"]["dlu"] == "missing"
    assert first["attention"]["vitals_missing"] is True  # the demo's vital signs are from November, now is later
    one_unit = web.get("/api/residents?unit=demo-ehpad-le-parc-iris", headers=nurse(app)).get_json()["items"]
    assert [i["id"] for i in one_unit] == [OTHER_MINE]


def test_pages_follow_the_cursor_without_overlap(app: Flask, web: FlaskClient) -> None:
    first = web.get("/api/residents?limit=1", headers=nurse(app)).get_json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = web.get(f"/api/residents?limit=1&cursor={first['next_cursor']}", headers=nurse(app)).get_json()
    assert [i["id"] for i in first["items"] + second["items"]] == [MINE, OTHER_MINE]
    bad = web.get("/api/residents?limit=1&cursor=not-a-cursor", headers=nurse(app))
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"


def test_an_aide_sees_no_diagnosis_a_nurse_does(app: Flask, web: FlaskClient) -> None:
    seen = web.get(f"/api/residents/{MINE}", headers=nurse(app))
    assert seen.status_code == 200 and seen.headers["ETag"] == f'W/"{seen.get_json()["version"]}"'
    assert seen.get_json()["conditions"] and "treatments" in seen.get_json()
    aide = web.get(f"/api/residents/{MINE}", headers=token(app, "staff", "aide-soignant", PARC)).get_json()
    assert "conditions" not in aide and "treatments" not in aide
    assert aide["flags"] and aide["stay"]["room"]["id"] == ROOM_OF_MINE
    assert aide["dlu"] is None and seen.get_json()["dlu"] == "missing"  # documents are medical data


def test_another_establishments_resident_is_not_found(app: Flask, web: FlaskClient) -> None:
    for answer in (web.get(f"/api/residents/{THEIRS}", headers=nurse(app)),
                   web.post(f"/api/residents/{THEIRS}/vital-signs", json={"weight_kg": 60}, headers=nurse(app)),
                   web.get("/api/residents/no-such-one", headers=nurse(app))):
        assert answer.status_code == 404 and answer.mimetype == "application/problem+json"
        assert answer.get_json()["detail"] in (f"Patient/{THEIRS} does not exist", "Patient/no-such-one does not exist")


def count(demo: FhirClient, query: str) -> int:
    return int(demo.search(query + "&_summary=count")["total"])


def test_an_implausible_weight_is_refused_with_the_field_and_nothing_is_written(app: Flask, web: FlaskClient,
                                                                                 demo: FhirClient) -> None:
    before = count(demo, f"Observation?subject=Patient/{MINE}")
    answer = web.post(f"/api/residents/{MINE}/vital-signs", json={"weight_kg": 700, "heart_rate": 80},
                      headers=nurse(app))
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json"
    problem = answer.get_json()
    assert problem["status"] == 422 and [e["field"] for e in problem["errors"]] == ["weight_kg"]
    assert problem["errors"][0]["detail_fr"] == "Doit être compris entre 20 et 250."
    pressure = web.post(f"/api/residents/{MINE}/vital-signs", json={"systolic": 70, "diastolic": 90},
                        headers=nurse(app)).get_json()
    assert [e["field"] for e in pressure["errors"]] == ["systolic"]
    assert "systolique" in pressure["errors"][0]["detail_fr"]
    unknown = web.post(f"/api/residents/{MINE}/vital-signs", json={"weight": 60}, headers=nurse(app)).get_json()
    assert [(e["field"], e["code"], e["detail_fr"]) for e in unknown["errors"]] == [
        ("weight", "unknown", "Champ inconnu.")]
    nothing = web.post(f"/api/residents/{MINE}/vital-signs", json={}, headers=nurse(app)).get_json()
    assert [(e["field"], e["detail_fr"]) for e in nothing["errors"]] == [(None, "Indiquez au moins une mesure")]
    assert count(demo, f"Observation?subject=Patient/{MINE}") == before


def test_vital_signs_are_fhir_observations_and_a_weight_change_warns(app: Flask, web: FlaskClient,
                                                                      demo: FhirClient) -> None:
    first = web.post(f"/api/residents/{MINE}/vital-signs", json={"weight_kg": 61.5, "systolic": 135,
                                                                 "diastolic": 80, "pain": {"scale": "algoplus",
                                                                                           "score": 3}},
                     headers=nurse(app))
    assert first.status_code == 201, first.get_data(as_text=True)
    assert len(first.get_json()["ids"]) == 3 and first.get_json()["warnings"] == []
    weight = demo.get(f"Observation/{first.get_json()['ids'][0]}").get_json()
    assert weight["code"]["coding"][0]["code"] == "29463-7" and weight["valueQuantity"]["value"] == 61.5
    assert weight["performer"][0]["identifier"]["value"] == f"infirmier-{PARC}"
    later = web.post(f"/api/residents/{MINE}/vital-signs", json={"weight_kg": 55.5}, headers=nurse(app)).get_json()
    assert [w["code"] for w in later["warnings"]] == ["weight-change"] and "-6.0" in later["warnings"][0]["detail"]
    glance = web.get(f"/api/residents/{MINE}", headers=nurse(app)).get_json()
    assert glance["vital_signs"]["weight_kg"]["value"] == 55.5
    assert glance["vital_signs"]["blood_pressure"]["value"] == {"systolic": 135, "diastolic": 80}
    now = web.get("/api/residents", headers=nurse(app)).get_json()["items"][0]
    assert now["attention"]["vitals_missing"] is False


def test_a_fall_is_declared_with_its_circumstances(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    answer = web.post(f"/api/residents/{MINE}/falls", json={"place": "salle de bain", "injury": False,
                                                            "found_on_floor": True, "minutes_on_floor": 10},
                      headers=token(app, "staff", "aide-soignant", PARC))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    fall = demo.get(f"Observation/{answer.get_json()['ids'][0]}").get_json()
    assert fall["code"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "1912002", "display": "Fall"}
    assert {c["code"]["coding"][0]["code"] for c in fall["component"]} == {
        "chute-lieu", "chute-blessure", "chute-retrouve-au-sol", "chute-duree-au-sol"}


def test_transmissions_by_shift_with_if_match(app: Flask, web: FlaskClient) -> None:
    aide = token(app, "staff", "aide-soignant", PARC)
    written = web.post(f"/api/residents/{MINE}/transmissions", headers=aide, json={
        "target": "Alimentation", "donnees": "A peu mangé ce midi", "actions": "Complément proposé"})
    assert written.status_code == 201, written.get_data(as_text=True)
    item = written.get_json()
    assert item["author"] == f"aide-soignant-{PARC}" and written.headers["ETag"] == 'W/"1"'
    svc = app.extensions["dui"]
    day, shift = _shift_now(svc)
    listed = web.get(f"/api/transmissions?date={day}&shift={shift}", headers=nurse(app)).get_json()["items"]
    assert [t["id"] for t in listed] == [item["id"]] and listed[0]["donnees"] == "A peu mangé ce midi"
    stale = web.patch(f"/api/transmissions/{item['id']}", json={"resultats": "A mangé le complément"},
                      headers={**nurse(app), "If-Match": 'W/"9"'})
    assert stale.status_code == 412 and stale.mimetype == "application/problem+json"
    done = web.patch(f"/api/transmissions/{item['id']}", json={"resultats": "A mangé le complément"},
                     headers={**nurse(app), "If-Match": 'W/"1"'})
    assert done.status_code == 200 and done.get_json()["resultats"] == "A mangé le complément"
    assert done.headers["ETag"] == 'W/"2"'
    director = web.post(f"/api/residents/{MINE}/transmissions", json={"target": "x", "donnees": "y"},
                        headers=token(app, "staff", "direction", PARC))
    assert director.status_code == 403


def _shift_now(svc: Any) -> tuple[str, str]:
    from zoneinfo import ZoneInfo

    from dui.staff.transmissions import shift_of
    day, shift = shift_of(svc.clock(), ZoneInfo(svc.settings.timezone))
    return day.isoformat(), shift


def test_a_staff_api_write_is_audited_like_fhir_with_its_resident(app: Flask, web: FlaskClient) -> None:
    answer = web.post(f"/api/residents/{MINE}/vital-signs", json={"temperature_c": 37.2}, headers=nurse(app))
    assert answer.status_code == 201
    refused = web.post(f"/api/residents/{THEIRS}/vital-signs", json={"temperature_c": 37.2}, headers=nurse(app))
    assert refused.status_code == 404
    with app.extensions["dui"].unit_of_work(write=False) as session:
        mine = [row for row, _ in trail.entries(session, patient=MINE) if row["detail"] == "api record-vital-signs"]
        theirs = [row for row, _ in trail.entries(session, patient=THEIRS)
                  if row["detail"] == "api record-vital-signs"]
    assert len(mine) == 1 and mine[0]["action"] == "transaction" and mine[0]["outcome"] == "success"
    assert len(theirs) == 1 and theirs[0]["outcome"] == "failed" and theirs[0]["status"] == 404


def test_tokens_are_required_and_systems_use_fhir(app: Flask, web: FlaskClient) -> None:
    assert web.get("/api/residents").status_code == 401
    assert web.get("/api/residents", headers={"Authorization": "Bearer forged"}).status_code == 401
    svc = app.extensions["dui"]
    with svc.unit_of_work(write=True) as session:
        partner = accounts.register_client(session, "partner", ScopeSet.parse("system/*.rs"), client_jwks(), PARC,
                                           svc.clock())
    system = web.get("/api/residents", headers=token(app, "client", None, PARC, partner.client_id))
    assert system.status_code == 403 and "/fhir" in system.get_json()["detail"]


def test_bad_bodies_are_problems_never_500(app: Flask, web: FlaskClient) -> None:
    url = f"/api/residents/{MINE}/vital-signs"
    cases = [web.post(url, data="{", headers={**nurse(app), "Content-Type": "application/json"}),
             web.post(url, data="weight=60", headers={**nurse(app), "Content-Type": "text/plain"}),
             web.post(url, json=[1, 2], headers=nurse(app)),
             web.post(url, json={"weight_kg": "NaN"}, headers=nurse(app)),
             web.post(url, json={"effective": "2026-12-01T10:00:00"}, headers=nurse(app)),
             web.get("/api/residents?limit=0", headers=nurse(app)),
             web.get("/api/residents?limit=5&limit=6", headers=nurse(app))]
    assert [c.status_code for c in cases] == [400, 415, 422, 422, 422, 422, 422]
    assert all(c.mimetype == "application/problem+json" and c.get_json()["errors"] for c in cases)
    assert cases[4].get_json()["errors"][0]["field"] == "effective"


def test_openapi_document_and_docs_page_are_served_locally(app: Flask, web: FlaskClient) -> None:
    document = web.get("/api/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert {"/api/residents", "/api/residents/{rid}/vital-signs", "/api/devices/events",
            "/api/alerts/stream"} <= set(document["paths"])
    page = web.get("/api/docs")
    assert page.status_code == 200 and b"/api/docs/assets/swagger-ui-bundle.js" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"] and b"https://" not in page.data
    script = web.get("/api/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.data) > 100_000
    assert web.get("/api/docs/assets/..%2F..%2Fsetup.py").status_code == 404


def test_later_weight_warning_window_is_a_week(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    eight_days_ago = (app.extensions["dui"].clock() - timedelta(days=8)).isoformat()
    old = web.post(f"/api/residents/{MINE}/vital-signs", json={"weight_kg": 70, "effective": eight_days_ago},
                   headers=nurse(app))
    assert old.status_code == 201
    now = web.post(f"/api/residents/{MINE}/vital-signs", json={"weight_kg": 62}, headers=nurse(app)).get_json()
    assert now["warnings"] == []  # 8 kg, but eight days ago: outside the week
