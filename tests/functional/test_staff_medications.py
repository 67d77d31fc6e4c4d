"""Medications in the staff API over HTTP: a médecin prescribes and stops, the plan of a round, the doses recorded
(given, refused, not given with a reason) once each, the double-check of a médicament à risque by a second nurse,
who may do what, and the doses due in "my residents now". On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dui.demo.data import resident_bundle, setup_bundle
from dui.staff.high_risk import risk_class
from dui.staff.medications import PLANNED_DOSE, round_of
from tests.functional.test_staff_api import MINE, OTHER_MINE, PARC, THEIRS, TILLEULS, token
from tests.helpers import FhirClient

EVERY_ROUND = ["matin", "midi", "soir", "coucher"]


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        answer = client.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    return client


@pytest.fixture
def web(app: Flask, demo: FhirClient) -> FlaskClient:
    return app.test_client()


def doctor(app: Flask, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", "medecin", finess)


def nurse(app: Flask, name: str = "ide-1") -> dict[str, str]:
    return token(app, "staff", "infirmier", PARC, name=name)


def aide(app: Flask) -> dict[str, str]:
    return token(app, "staff", "aide-soignant", PARC)


def current_round(app: Flask) -> tuple[date, str]:
    """The round open now in the establishment's time zone, as the server computes it."""
    svc = app.extensions["dui"]
    return round_of(svc.clock(), ZoneInfo(svc.settings.timezone))


def prescription(label: str, atc: str | None, *, rounds: list[str] | None = None, start: date | None = None,
                 **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "medication": {"label": label, **({"atc": atc} if atc else {})},
        "text": f"{label}, 1 comprimé à chaque tour", "doses": [
            {"round": r, "quantity": 1 if r != "coucher" else 0.5, "unit": "comprimé"} for r in rounds or EVERY_ROUND],
        **more}
    if start is not None:
        body["start"] = start.isoformat()
    return body


def prescribe(app: Flask, web: FlaskClient, resident: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = web.post(f"/api/residents/{resident}/prescriptions", json=body, headers=doctor(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    created: dict[str, Any] = answer.get_json()
    return created


def record(app: Flask, web: FlaskClient, prescription_id: str, outcome: str, *, headers: dict[str, str] | None = None,
           day: date | None = None, round_name: str | None = None, **more: Any) -> TestResponse:
    today, now_round = current_round(app)
    return web.post("/api/administrations", headers=headers or nurse(app), json={
        "prescription_id": prescription_id, "date": (day or today).isoformat(), "round": round_name or now_round,
        "outcome": outcome, **more})


def plan(app: Flask, web: FlaskClient, headers: dict[str, str] | None = None, **query: str) -> TestResponse:
    day, name = current_round(app)
    params = {"date": day.isoformat(), "round": name, **query}
    return web.get("/api/rounds?" + "&".join(f"{k}={v}" for k, v in params.items()), headers=headers or nurse(app))


def doses_of(answer: TestResponse, resident: str) -> dict[str, dict[str, Any]]:
    """The plan's doses of one resident, by prescription id."""
    assert answer.status_code == 200, answer.get_data(as_text=True)
    items = [i for i in answer.get_json()["items"] if i["id"] == resident]
    return {d["prescription_id"]: d for i in items for d in i["doses"]}


def count(demo: FhirClient, query: str) -> int:
    return int(demo.search(query + "&_summary=count")["total"])


def yesterday(app: Flask) -> date:
    return current_round(app)[0] - timedelta(days=1)


def test_a_medecin_prescribes_as_written_with_one_timed_dose_per_round(app: Flask, web: FlaskClient,
                                                                       demo: FhirClient) -> None:
    body = prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app))
    body["text"] = "Amlodipine 5 mg : 1 cp matin, midi et soir, ½ cp au coucher"
    answer = web.post(f"/api/residents/{MINE}/prescriptions", json=body, headers=doctor(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    created = answer.get_json()
    assert answer.headers["ETag"] == 'W/"1"' and created["status"] == "active" and created["high_risk"] is False
    assert [(d["round"], d["time"], d["quantity"]) for d in created["doses"]] == [
        ("matin", "08:00", 1), ("midi", "12:00", 1), ("soir", "18:00", 1), ("coucher", "21:00", 0.5)]
    stored = demo.get(f"MedicationRequest/{created['id']}").get_json()
    assert stored["medicationCodeableConcept"] == {"text": "Amlodipine 5 mg", "coding": [
        {"system": "http://www.whocc.no/atc", "code": "C08CA01"}]}
    dosages = stored["dosageInstruction"]
    assert dosages[0]["text"] == body["text"] and all("text" not in d for d in dosages[1:])  # kept as written, once
    assert [d["timing"]["repeat"]["when"] for d in dosages] == [["MORN"], ["NOON"], ["EVE"], ["HS"]]
    assert {d["sequence"] for d in dosages} == {1}  # concurrent
    assert dosages[3]["doseAndRate"][0]["doseQuantity"] == {"value": 0.5, "unit": "comprimé"}
    assert dosages[0]["timing"]["repeat"]["boundsPeriod"] == {"start": yesterday(app).isoformat()}
    assert stored["requester"]["identifier"]["value"] == f"medecin-{PARC}" and stored["intent"] == "order"
    glance = web.get(f"/api/residents/{MINE}", headers=nurse(app)).get_json()
    assert {"medication": "Amlodipine 5 mg", "dosage": body["text"]} in glance["treatments"]
    listed = web.get(f"/api/residents/{MINE}/prescriptions", headers=nurse(app)).get_json()["items"]
    assert created["id"] in [p["id"] for p in listed]


def test_the_plan_lists_each_due_dose_with_its_state_and_free_text_prescriptions_apart(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    mine = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    later = prescribe(app, web, MINE, prescription("Furosémide 40 mg", "C03CA01",
                                                   start=current_round(app)[0] + timedelta(days=2)))
    other = prescribe(app, web, OTHER_MINE, prescription("Paracétamol 1 g", "N02BE01", start=yesterday(app),
                                                         as_needed=True, as_needed_reason="si douleur"))
    answer = plan(app, web)
    doses = doses_of(answer, MINE)
    assert later["id"] not in doses  # not begun yet
    dose = doses[mine["id"]]
    assert dose["state"] == "pending" and dose["high_risk"] is False and dose["double_check"] is None
    assert dose["medication"] == "Amlodipine 5 mg" and dose["administration_id"] is None
    resident = next(i for i in answer.get_json()["items"] if i["id"] == MINE)
    assert resident["family"] == "Lefèvre" and resident["room"]["name"] == "Chambre 101"
    demo_ids = {e["resource"]["id"] for e in demo.search(f"MedicationRequest?subject=Patient/{MINE}")["entry"]}
    demo_ids -= {mine["id"], later["id"]}  # the demo's prescriptions are free text: no round, read apart
    assert demo_ids and {u["prescription_id"] for u in resident["unscheduled"]} == demo_ids
    assert doses_of(answer, OTHER_MINE)[other["id"]]["as_needed"] is True
    assert THEIRS not in [i["id"] for i in answer.get_json()["items"]]
    iris = plan(app, web, unit="demo-ehpad-le-parc-iris")
    assert [i["id"] for i in iris.get_json()["items"]] == [OTHER_MINE]


def test_a_nurse_records_doses_given_refused_and_not_given_with_the_reason(app: Flask, web: FlaskClient,
                                                                          demo: FhirClient) -> None:
    start = yesterday(app)
    given_p, refused_p = (prescribe(app, web, MINE, prescription(label, atc, start=start))
                          for label, atc in (("Amlodipine 5 mg", "C08CA01"), ("Furosémide 40 mg", "C03CA01")))
    absent_p = prescribe(app, web, OTHER_MINE, prescription("Donépézil 5 mg", "N06DA02", start=start))
    given = record(app, web, given_p["id"], "given", note="Pris avec de la compote")
    assert given.status_code == 201, given.get_data(as_text=True)
    shown = given.get_json()
    assert shown["state"] == "given" and shown["recorded_by"] == "ide-1" and shown["note"] == "Pris avec de la compote"
    stored = demo.get(f"MedicationAdministration/{shown['id']}").get_json()
    day, name = current_round(app)
    assert stored["status"] == "completed" and stored["request"] == {"reference": f"MedicationRequest/{given_p['id']}"}
    assert stored["identifier"] == [{"system": PLANNED_DOSE, "value": f"{given_p['id']}/{day}/{name}"}]
    assert stored["performer"][0]["actor"]["identifier"]["value"] == "ide-1"
    assert stored["subject"] == {"reference": f"Patient/{MINE}"} and stored["effectiveDateTime"]
    refused = record(app, web, refused_p["id"], "refused", reason={"code": "refus", "text": "Dit qu'il a déjà pris"})
    assert refused.status_code == 201 and refused.get_json()["state"] == "refused"
    assert refused.get_json()["reason"] == {"code": "refus", "text": "Dit qu'il a déjà pris"}
    absent = record(app, web, absent_p["id"], "not-given", reason={"code": "hospitalise"})
    assert absent.status_code == 201 and absent.get_json()["state"] == "not-given"
    assert demo.get(f"MedicationAdministration/{absent.get_json()['id']}").get_json()["status"] == "not-done"
    mine, others = doses_of(plan(app, web), MINE), doses_of(plan(app, web), OTHER_MINE)
    assert (mine[given_p["id"]]["state"], mine[refused_p["id"]]["state"]) == ("given", "refused")
    assert others[absent_p["id"]]["state"] == "not-given"
    assert others[absent_p["id"]]["reason"] == {"code": "hospitalise", "text": None}


@pytest.mark.parametrize(("change", "field"), [
    ({"outcome": "not-given"}, "reason"),
    ({"outcome": "given", "reason": {"code": "absent"}}, "reason"),
    ({"outcome": "not-given", "reason": {"code": "refus"}}, "reason.code"),
    ({"outcome": "refused", "reason": {"code": "vomissements"}}, "reason.code"),
    ({"outcome": "not-given", "reason": {"code": "autre"}}, "reason.text"),
    ({"outcome": "lost"}, "outcome"),
    ({"outcome": "given", "round": "gouter"}, "round"),
    ({"outcome": "given", "date": "2026-02-30"}, "date"),
])
def test_a_dose_badly_recorded_is_a_422_naming_the_field_and_nothing_is_written(
        app: Flask, web: FlaskClient, demo: FhirClient, change: dict[str, Any], field: str) -> None:
    given = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    day, name = current_round(app)
    body = {"prescription_id": given["id"], "date": day.isoformat(), "round": name, **change}
    answer = web.post("/api/administrations", json=body, headers=nurse(app))
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json"
    errors = answer.get_json()["errors"]
    assert [e["field"] for e in errors] == [field] and errors[0]["detail_fr"]
    assert count(demo, f"MedicationAdministration?subject=Patient/{MINE}") == 0


def test_a_dose_outside_its_prescription_is_refused_by_the_record(app: Flask, web: FlaskClient,
                                                                 demo: FhirClient) -> None:
    day, name = current_round(app)
    one_round = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app),
                                                       rounds=["matin" if name != "matin" else "soir"]))
    not_that_round = record(app, web, one_round["id"], "given")
    assert not_that_round.status_code == 422 and not_that_round.get_json()["errors"][0]["field"] == "round"
    assert "tour" in not_that_round.get_json()["errors"][0]["detail_fr"]
    every = prescribe(app, web, MINE, prescription("Furosémide 40 mg", "C03CA01", start=day))
    before_start = record(app, web, every["id"], "given", day=day - timedelta(days=3))
    assert before_start.status_code == 422 and before_start.get_json()["errors"][0]["field"] == "date"
    tomorrow = record(app, web, every["id"], "given", day=day + timedelta(days=1), round_name="coucher")
    assert tomorrow.status_code == 422 and tomorrow.get_json()["errors"][0]["field"] == "round"
    assert "pas encore ouvert" in tomorrow.get_json()["errors"][0]["detail_fr"]
    assert count(demo, f"MedicationAdministration?subject=Patient/{MINE}") == 0


def test_a_dose_recorded_twice_is_a_409_showing_the_first(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    given = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    first = record(app, web, given["id"], "given")
    assert first.status_code == 201
    again = record(app, web, given["id"], "not-given", reason={"code": "endormi"}, headers=nurse(app, "ide-2"))
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    problem = again.get_json()
    assert problem["administration"]["id"] == first.get_json()["id"]
    assert problem["administration"]["state"] == "given" and problem["administration"]["recorded_by"] == "ide-1"
    assert "déjà enregistrée" in problem["errors"][0]["detail_fr"]
    assert count(demo, f"MedicationAdministration?subject=Patient/{MINE}") == 1


def test_a_dose_recorded_by_two_nurses_at_once_is_recorded_once(app: Flask, web: FlaskClient,
                                                               demo: FhirClient) -> None:
    given = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    headers = [nurse(app, f"ide-{i}") for i in range(4)]
    barrier = threading.Barrier(len(headers))

    def run(i: int) -> int:
        client = app.test_client()
        barrier.wait()
        return record(app, client, given["id"], "given", headers=headers[i]).status_code

    with ThreadPoolExecutor(len(headers)) as pool:
        statuses = Counter(pool.map(run, range(len(headers))))
    assert statuses == {201: 1, 409: len(headers) - 1}, statuses
    assert count(demo, f"MedicationAdministration?subject=Patient/{MINE}") == 1


def test_a_medicament_a_risque_is_double_checked_by_another_nurse(app: Flask, web: FlaskClient,
                                                                  demo: FhirClient) -> None:
    anticoagulant = prescribe(app, web, MINE, prescription("Rivaroxaban 15 mg", "B01AF01", start=yesterday(app)))
    assert anticoagulant["high_risk"] is True
    assert anticoagulant["high_risk_class"] == "Anticoagulant (inhibiteur direct du facteur Xa)"
    assert doses_of(plan(app, web), MINE)[anticoagulant["id"]]["double_check"] == "pending"
    prepared = record(app, web, anticoagulant["id"], "given")
    assert prepared.status_code == 201 and prepared.get_json()["state"] == "awaiting-check"
    aid = prepared.get_json()["id"]
    assert demo.get(f"MedicationAdministration/{aid}").get_json()["status"] == "in-progress"
    dose = doses_of(plan(app, web), MINE)[anticoagulant["id"]]
    assert (dose["state"], dose["double_check"]) == ("awaiting-check", "pending")
    herself = web.post(f"/api/administrations/{aid}/double-check", headers=nurse(app))
    assert herself.status_code == 422 and herself.mimetype == "application/problem+json"
    assert "autre infirmière" in herself.get_json()["errors"][0]["detail_fr"]
    assert "another nurse" in herself.get_json()["errors"][0]["detail"]
    assert demo.get(f"MedicationAdministration/{aid}").get_json()["meta"]["versionId"] == "1"  # untouched
    assert web.post(f"/api/administrations/{aid}/double-check", headers=aide(app)).status_code == 403
    checked = web.post(f"/api/administrations/{aid}/double-check", headers=nurse(app, "ide-2"))
    assert checked.status_code == 200, checked.get_data(as_text=True)
    assert checked.get_json()["state"] == "given" and checked.get_json()["checked_by"] == "ide-2"
    assert checked.get_json()["recorded_by"] == "ide-1" and checked.headers["ETag"] == 'W/"2"'
    stored = demo.get(f"MedicationAdministration/{aid}").get_json()
    assert stored["status"] == "completed"
    assert [p["function"]["coding"][0]["code"] for p in stored["performer"]] == ["performer", "verifier"]
    dose = doses_of(plan(app, web), MINE)[anticoagulant["id"]]
    assert (dose["state"], dose["double_check"], dose["checked_by"]) == ("given", "done", "ide-2")
    twice = web.post(f"/api/administrations/{aid}/double-check", headers=nurse(app, "ide-3"))
    assert twice.status_code == 409 and twice.get_json()["administration"]["checked_by"] == "ide-2"


def test_a_medicament_a_risque_refused_needs_no_check(app: Flask, web: FlaskClient) -> None:
    insulin = prescribe(app, web, MINE, prescription("Insuline glargine", "A10AE04", start=yesterday(app)))
    refused = record(app, web, insulin["id"], "refused")
    assert refused.status_code == 201 and refused.get_json()["state"] == "refused"
    assert refused.get_json()["reason"]["code"] == "refus"
    assert doses_of(plan(app, web), MINE)[insulin["id"]]["double_check"] is None
    check = web.post(f"/api/administrations/{refused.get_json()['id']}/double-check", headers=nurse(app, "ide-2"))
    assert check.status_code == 409


def test_only_a_medecin_prescribes_and_an_aide_sees_no_medication(app: Flask, web: FlaskClient,
                                                                  demo: FhirClient) -> None:
    before = count(demo, f"MedicationRequest?subject=Patient/{MINE}")
    body = prescription("Amlodipine 5 mg", "C08CA01")
    for headers in (nurse(app), aide(app), token(app, "staff", "kinesitherapeute", PARC)):
        refused = web.post(f"/api/residents/{MINE}/prescriptions", json=body, headers=headers)
        assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert count(demo, f"MedicationRequest?subject=Patient/{MINE}") == before
    given = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    assert web.post(f"/api/prescriptions/{given['id']}/stop", json={}, headers=nurse(app)).status_code == 403
    assert plan(app, web, headers=aide(app)).status_code == 403
    assert record(app, web, given["id"], "given", headers=aide(app)).status_code == 403
    kine = record(app, web, given["id"], "given", headers=token(app, "staff", "kinesitherapeute", PARC))
    assert kine.status_code == 403
    by_doctor = record(app, web, given["id"], "given", headers=doctor(app))
    assert by_doctor.status_code == 201
    assert count(demo, f"MedicationAdministration?subject=Patient/{MINE}") == 1


def test_another_establishments_resident_is_not_found(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    refused = web.post(f"/api/residents/{THEIRS}/prescriptions", json=prescription("Amlodipine 5 mg", "C08CA01"),
                       headers=doctor(app))
    assert refused.status_code == 404 and refused.mimetype == "application/problem+json"
    theirs = web.post(f"/api/residents/{THEIRS}/prescriptions", headers=doctor(app, TILLEULS),
                      json=prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    assert theirs.status_code == 201
    pid = theirs.get_json()["id"]
    for answer in (web.get(f"/api/prescriptions/{pid}", headers=nurse(app)),
                   web.post(f"/api/prescriptions/{pid}/stop", json={}, headers=doctor(app)),
                   record(app, web, pid, "given")):
        assert answer.status_code == 404 and answer.mimetype == "application/problem+json"
    assert count(demo, f"MedicationAdministration?subject=Patient/{THEIRS}") == 0
    assert demo.get(f"MedicationRequest/{pid}").get_json()["status"] == "active"


def test_a_stopped_prescription_leaves_the_plan_but_its_recorded_doses_stay(app: Flask, web: FlaskClient,
                                                                            demo: FhirClient) -> None:
    given_p, pending_p = (prescribe(app, web, MINE, prescription(label, atc, start=yesterday(app)))
                          for label, atc in (("Amlodipine 5 mg", "C08CA01"), ("Furosémide 40 mg", "C03CA01")))
    assert record(app, web, given_p["id"], "given").status_code == 201
    stale = web.post(f"/api/prescriptions/{pending_p['id']}/stop", json={}, headers={**doctor(app),
                                                                                   "If-Match": 'W/"9"'})
    assert stale.status_code == 412
    for prescribed in (given_p, pending_p):
        stopped = web.post(f"/api/prescriptions/{prescribed['id']}/stop", json={"reason": "Hypotension"},
                           headers=doctor(app))
        assert stopped.status_code == 200, stopped.get_data(as_text=True)
        assert stopped.get_json()["status"] == "stopped" and stopped.get_json()["end"]
        assert stopped.headers["ETag"] == 'W/"2"'
    stored = demo.get(f"MedicationRequest/{pending_p['id']}").get_json()
    assert stored["statusReason"] == {"text": "Hypotension"}
    assert all(len(d["timing"]["repeat"]["boundsPeriod"]["end"]) > 10 for d in stored["dosageInstruction"])
    doses = doses_of(plan(app, web), MINE)
    assert pending_p["id"] not in doses  # not to be given any more
    assert doses[given_p["id"]]["state"] == "given" and doses[given_p["id"]]["prescription_status"] == "stopped"
    again = web.post(f"/api/prescriptions/{pending_p['id']}/stop", json={}, headers=doctor(app))
    assert again.status_code == 409 and "n'est pas en cours" in again.get_json()["errors"][0]["detail_fr"]
    late = record(app, web, pending_p["id"], "given")
    assert late.status_code == 422 and late.get_json()["errors"][0]["field"] == "prescription_id"


def test_doses_due_now_in_my_residents(app: Flask, web: FlaskClient) -> None:
    def due() -> dict[str, Any]:
        answer = web.get("/api/residents", headers=nurse(app))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return {i["id"]: i["attention"]["doses_due"] for i in answer.get_json()["items"]}

    assert due() == {MINE: 0, OTHER_MINE: 0}  # the demo's prescriptions are free text: no round
    given = prescribe(app, web, MINE, prescription("Amlodipine 5 mg", "C08CA01", start=yesterday(app)))
    prescribe(app, web, MINE, prescription("Furosémide 40 mg", "C03CA01", start=yesterday(app)))
    prescribe(app, web, MINE, prescription("Paracétamol 1 g", "N02BE01", start=yesterday(app), as_needed=True))
    assert due() == {MINE: 2, OTHER_MINE: 0}  # the as-needed dose is not due
    assert record(app, web, given["id"], "given").status_code == 201
    assert due() == {MINE: 1, OTHER_MINE: 0}
    seen_by_aide = web.get("/api/residents", headers=aide(app)).get_json()["items"]
    assert [i["attention"]["doses_due"] for i in seen_by_aide] == [None, None]


@pytest.mark.parametrize(("change", "field"), [
    ({"doses": []}, "doses"),
    ({"doses": [{"round": "matin", "quantity": 1, "unit": "comprimé"}] * 2}, "doses"),
    ({"doses": [{"round": "matin", "quantity": 0, "unit": "comprimé"}]}, "doses.0.quantity"),
    ({"doses": [{"round": "matin", "quantity": 1, "unit": "cuillère"}]}, "doses.0.unit"),
    ({"medication": {"label": "Xarelto", "atc": "b01af01"}}, "medication.atc"),
    ({"start": "2026-12-10", "end": "2026-12-01"}, "end"),
    ({"end": "2020-01-01"}, "end"),
    ({"as_needed_reason": "si douleur"}, "as_needed_reason"),
    ({"dosage": "1 cp"}, "dosage"),
])
def test_a_prescription_badly_written_is_a_422_naming_the_field(app: Flask, web: FlaskClient, demo: FhirClient,
                                                                change: dict[str, Any], field: str) -> None:
    before = count(demo, f"MedicationRequest?subject=Patient/{MINE}")
    answer = web.post(f"/api/residents/{MINE}/prescriptions", json={**prescription("Amlodipine", None), **change},
                      headers=doctor(app))
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json", answer.get_data(as_text=True)
    errors = answer.get_json()["errors"]
    assert [e["field"] for e in errors] == [field] and errors[0]["detail_fr"]
    assert count(demo, f"MedicationRequest?subject=Patient/{MINE}") == before


def test_the_high_risk_table_matches_by_atc_class() -> None:
    assert risk_class("B01AF01") is not None and risk_class("B01AA03") is not None  # rivaroxaban, warfarine
    assert risk_class("B01AC06") is None  # aspirin, an antiplatelet: not an anticoagulant
    assert risk_class("A10AE04") is not None and risk_class("A10BA02") is None  # insulin yes, metformin no
    assert risk_class("N02AA01") is not None and risk_class("N02BE01") is None  # morphine yes, paracetamol no
    assert risk_class("C01AA05") is not None and risk_class("B05XA01") is not None  # digoxin, KCl injectable
    assert risk_class("A12BA01") is None  # oral potassium chloride
    methotrexate = risk_class("L04AX03")
    assert methotrexate is not None and methotrexate.label == "Méthotrexate (hors cancérologie)"
    assert risk_class(None) is None and risk_class("") is None


def test_the_openapi_document_describes_the_medication_endpoints(web: FlaskClient) -> None:
    document = web.get("/api/openapi.json").get_json()
    assert {"/api/residents/{rid}/prescriptions", "/api/prescriptions/{pid}/stop", "/api/rounds",
            "/api/administrations", "/api/administrations/{aid}/double-check"} <= set(document["paths"])
