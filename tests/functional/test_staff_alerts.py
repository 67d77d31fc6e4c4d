"""Fall-sensor alerts (docs/staff-api.md, "Fall-sensor alerts"): a device client's event becomes an Observation and a
Flag of the resident of the sensor's room, and an alert; repeats land once, a room's next events join its open alert;
acknowledgement records who and when and ends the Flag; escalation after the configured delay; the SSE stream serves
the events in order and resumes from Last-Event-ID. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo
from flask.testing import FlaskClient

from dui.cli import cli
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.settings import AlertSettings
from dui.staff import alerts
from tests.authkit import client_jwks, token_form
from tests.functional.test_staff_api import MINE, PARC, ROOM_OF_MINE, TILLEULS, nurse, token
from tests.helpers import FhirClient

SENSOR = f"CAPTEUR-{PARC}-101"  # the demo sensor of MINE's room
EMPTY_ROOM_SENSOR = "CAPTEUR-EMPTY-1"
THEIR_SENSOR = f"CAPTEUR-{TILLEULS}-102"


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        assert client.post("", bundle).status_code == 200
    parc = ESTABLISHMENTS[1]["id"]
    assert client.put("Location/empty-room", {
        "resourceType": "Location", "id": "empty-room", "name": "Chambre 199", "status": "active",
        "partOf": {"reference": f"Location/{parc}-lilas"},
        "managingOrganization": {"reference": f"Organization/{parc}"}}).status_code == 201
    assert client.put("Device/empty-room-sensor", {
        "resourceType": "Device", "id": "empty-room-sensor", "identifier": [{"value": EMPTY_ROOM_SENSOR}],
        "owner": {"reference": f"Organization/{parc}"},
        "location": {"reference": "Location/empty-room"}}).status_code == 201
    return client


@pytest.fixture
def device(app: Flask, demo: FhirClient, tmp_path: Path) -> dict[str, str]:
    """A sensor gateway of Le Parc, registered with the CLI and holding a token from /auth/token."""
    web = app.test_client()
    path = tmp_path / "device-jwks.json"
    path.write_bytes(orjson.dumps(client_jwks()))
    created = app.test_cli_runner().invoke(args=["clients", "create", "Passerelle capteurs", "--device",
                                                 "--jwks-file", str(path), "--establishment", PARC])
    assert created.exit_code == 0, created.output
    client_id = created.output.split()[0]
    svc = app.extensions["dui"]
    answer = web.post("/auth/token", data=token_form(client_id, svc.authenticator.token_url,
                                                     scope="system/Observation.c system/Flag.c"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {"Authorization": f"Bearer {answer.get_json()['access_token']}"}


def post_event(web: FlaskClient, device: dict[str, str], event_id: str, sensor: str = SENSOR) -> Any:
    return web.post("/api/devices/events", json={"event_id": event_id, "sensor": sensor, "kind": "fall"},
                    headers=device)


def test_a_sensor_event_becomes_a_fall_a_flag_and_an_alert(app: Flask, demo: FhirClient,
                                                           device: dict[str, str]) -> None:
    web = app.test_client()
    answer = post_event(web, device, "evt-1")
    assert answer.status_code == 201, answer.get_data(as_text=True)
    alert = answer.get_json()
    assert alert["resident_id"] == MINE and alert["room"] == {"id": ROOM_OF_MINE, "name": "Chambre 101"}
    assert alert["state"] == "open" and alert["events"] == 1 and alert["unit_id"] == "demo-ehpad-le-parc-lilas"
    fall = demo.get(f"Observation/{alert['observation_id']}").get_json()
    assert fall["code"]["coding"][0]["code"] == "1912002" and fall["device"]["reference"].startswith("Device/")
    assert fall["method"]["coding"][0]["code"] == "capteur"
    flag = demo.get(f"Flag/{alert['flag_id']}").get_json()
    assert flag["status"] == "active" and flag["subject"]["reference"] == f"Patient/{MINE}"
    seen = web.get("/api/residents", headers=nurse(app)).get_json()["items"][0]
    assert "alerte-chute" in [f["code"] for f in seen["attention"]["flags"]]


def test_repeats_land_once_and_a_rooms_next_events_join_its_alert(app: Flask, demo: FhirClient,
                                                                   device: dict[str, str]) -> None:
    web = app.test_client()
    first = post_event(web, device, "evt-1").get_json()
    again = post_event(web, device, "evt-1")
    assert again.status_code == 200 and again.get_json()["id"] == first["id"] and again.get_json()["events"] == 1
    joined = post_event(web, device, "evt-2")
    assert joined.status_code == 200 and joined.get_json()["id"] == first["id"] and joined.get_json()["events"] == 2
    assert demo.search("Observation?code=http://snomed.info/sct|1912002&_summary=count")["total"] == 1
    listed = web.get("/api/alerts", headers=nurse(app)).get_json()["items"]
    assert [a["id"] for a in listed] == [first["id"]]


def test_an_empty_room_still_alerts_and_another_houses_sensor_is_unknown(app: Flask, demo: FhirClient,
                                                                          device: dict[str, str]) -> None:
    web = app.test_client()
    flags = demo.search("Flag?_summary=count")["total"]
    empty = post_event(web, device, "evt-empty", EMPTY_ROOM_SENSOR)
    assert empty.status_code == 201 and empty.get_json()["resident_id"] is None
    assert empty.get_json()["observation_id"] is None
    theirs = post_event(web, device, "evt-theirs", THEIR_SENSOR)
    assert theirs.status_code == 422 and theirs.get_json()["errors"][0]["field"] == "sensor"
    assert demo.search("Flag?_summary=count")["total"] == flags  # no resident in the room: no Flag; theirs: nothing


def test_a_device_may_only_post_events_and_staff_may_not_post_them(app: Flask, demo: FhirClient,
                                                                   device: dict[str, str]) -> None:
    web = app.test_client()
    assert web.get("/fhir/Patient", headers=device).status_code == 403
    assert web.post("/fhir/Observation", json={"resourceType": "Observation"}, headers={
        **device, "Content-Type": "application/fhir+json"}).status_code == 403
    assert web.get("/api/residents", headers=device).status_code == 403
    assert web.get("/api/alerts", headers=device).status_code == 403
    assert post_event(web, nurse(app), "evt-x").status_code == 403
    bad = web.post("/api/devices/events", json={"event_id": "a b", "sensor": SENSOR, "kind": "smoke"},
                   headers=device)
    assert bad.status_code == 422 and {e["field"] for e in bad.get_json()["errors"]} == {"event_id", "kind"}


def test_acknowledgement_records_who_and_when_and_ends_the_flag(app: Flask, demo: FhirClient,
                                                                device: dict[str, str]) -> None:
    web = app.test_client()
    alert = post_event(web, device, "evt-1").get_json()
    aide = token(app, "staff", "aide-soignant", PARC, "as.perret")
    done = web.post(f"/api/alerts/{alert['id']}/acknowledge", headers=aide)
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json()["state"] == "acknowledged" and done.get_json()["acknowledged_by"] == "as.perret"
    assert demo.get(f"Flag/{alert['flag_id']}").get_json()["status"] == "inactive"
    # the ended Flag no longer asks for attention ("my residents now" searches Flag?status=active)
    resident = web.get("/api/residents", headers=nurse(app)).get_json()["items"][0]
    assert alert["flag_id"] not in [f["id"] for f in resident["attention"]["flags"]]
    later = web.post(f"/api/alerts/{alert['id']}/acknowledge", headers=nurse(app)).get_json()
    assert later["acknowledged_by"] == "as.perret"  # the first acknowledgement stands
    theirs = web.post(f"/api/alerts/{alert['id']}/acknowledge", headers=token(app, "staff", "infirmier", TILLEULS))
    assert theirs.status_code == 404
    assert web.get("/api/alerts", headers=nurse(app)).get_json()["items"] == []
    next_fall = post_event(web, device, "evt-2")
    assert next_fall.status_code == 201 and next_fall.get_json()["id"] != alert["id"]  # a new fall, a new alert


def test_unacknowledged_alerts_escalate_after_the_delay(app: Flask, demo: FhirClient, device: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    web = app.test_client()
    alert = post_event(web, device, "evt-1").get_json()
    svc = app.extensions["dui"]
    alerts_clock = svc.clock()
    delay = svc.settings.alerts.escalation
    with svc.unit_of_work(write=True) as session:
        assert alerts.escalate(session, svc.clock() + timedelta(seconds=delay - 5), delay) == 0
    with svc.unit_of_work(write=True) as session:
        assert alerts.escalate(session, svc.clock() + timedelta(seconds=delay + 1), delay) == 1
    with svc.unit_of_work(write=True) as session:
        assert alerts.escalate(session, svc.clock() + timedelta(seconds=delay + 2), delay) == 0
    listed = web.get("/api/alerts", headers=nurse(app)).get_json()["items"]
    assert listed[0]["id"] == alert["id"] and listed[0]["escalated"] is True
    second = post_event(web, device, "evt-9", EMPTY_ROOM_SENSOR).get_json()
    monkeypatch.setattr(svc, "clock", lambda: alerts_clock + timedelta(seconds=delay + 1))
    ran = CliRunner().invoke(cli, ["worker", "--once"], obj=ScriptInfo(create_app=lambda: app))
    assert "1 fall alert(s) escalated" in ran.output, ran.output  # the worker escalates
    monkeypatch.undo()
    latest = web.get("/api/alerts", headers=nurse(app)).get_json()
    assert latest["items"][1]["id"] == second["id"] and latest["items"][1]["escalated"], latest


def read_events(response: Any, wanted: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Read ``wanted`` events from an SSE response, then close it."""
    found: list[tuple[int, str, dict[str, Any]]] = []
    buffer = b""
    try:
        for chunk in response.response:
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line
                              and not line.startswith(b":"))
                if b"id" in fields:
                    found.append((int(fields[b"id"]), fields[b"event"].decode(), orjson.loads(fields[b"data"])))
            if len(found) >= wanted:
                break
    finally:
        response.close()
    return found


def test_the_stream_serves_events_in_order_and_resumes_from_last_event_id(
        app: Flask, demo: FhirClient, device: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    svc = app.extensions["dui"]
    monkeypatch.setattr(svc, "settings", svc.settings.with_(alerts=AlertSettings(stream_seconds=5)))  # a test ends
    web = app.test_client()
    alert = post_event(web, device, "evt-1").get_json()
    post_event(web, device, "evt-2")
    web.post(f"/api/alerts/{alert['id']}/acknowledge", headers=nurse(app))
    stream = web.get("/api/alerts/stream", headers={**nurse(app), "Last-Event-ID": "0"}, buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    events = read_events(stream, 3)
    assert [kind for _, kind, _ in events] == ["raised", "merged", "acknowledged"]
    assert all(data["id"] == alert["id"] for _, _, data in events)
    resumed = read_events(web.get("/api/alerts/stream", headers={**nurse(app), "Last-Event-ID": str(events[0][0])},
                                  buffered=False), 2)
    assert [seq for seq, _, _ in resumed] == [seq for seq, _, _ in events[1:]]
    # A new fall in the Lilas unit, not for the Iris; then the Iris' stream (a streamed answer keeps its request's
    # context in the test client, so it is opened last, and the escalation is run directly).
    open_one = post_event(web, device, "evt-3").get_json()
    other_unit = web.get("/api/alerts/stream?unit=demo-ehpad-le-parc-iris", headers=nurse(app), buffered=False)
    with svc.unit_of_work(write=True) as session:
        assert alerts.escalate(session, svc.clock() + timedelta(hours=1), 1) == 1
    escalated = read_events(other_unit, 1)  # escalations go to every unit
    assert [(kind, data["id"]) for _, kind, data in escalated] == [("escalated", open_one["id"])]
    theirs = web.get("/api/alerts/stream", headers={**token(app, "staff", "infirmier", TILLEULS),
                                                   "Last-Event-ID": "0"}, buffered=False)
    with app.extensions["dui"].unit_of_work(write=False) as session:
        assert alerts.feed(session, TILLEULS, 0, None) == []  # nothing of Le Parc's is Tilleuls'
    theirs.close()
    assert web.get("/api/alerts/stream", headers={**nurse(app), "Last-Event-ID": "x"}).status_code == 422


def test_events_of_one_room_at_once_make_one_alert(app: Flask, demo: FhirClient, device: dict[str, str]) -> None:
    """Eight events of the same room posted together, from eight threads, over a real HTTP server."""
    import threading

    import requests

    from tests.webserver import serving

    answers: list[int] = []
    with serving(app) as base:
        start = threading.Barrier(8)

        def send(n: int) -> None:
            start.wait()
            answers.append(requests.post(f"{base}/api/devices/events", headers=device, timeout=30, json={
                "event_id": f"together-{n}", "sensor": SENSOR, "kind": "fall"}).status_code)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(answers) == [200] * 7 + [201]
    listed = app.test_client().get("/api/alerts", headers=nurse(app)).get_json()["items"]
    assert len(listed) == 1 and listed[0]["events"] == 8
    assert demo.search("Observation?code=http://snomed.info/sct|1912002&_summary=count")["total"] == 1
