"""FHIR R4 Subscriptions, rest-hook channel (docs/staff-api.md, "Subscriptions"): a sensor event posted, the worker
(or its fast lane) runs, and a real HTTP receiver gets the POST (no payload) or the PUT of the Observation or Flag
(payload); criteria that do not match and another establishment's Subscriptions get nothing; a 500 is retried, a
404 is a dead letter. A Subscription is its owner establishment's only; its owner cannot be forged. On SQLite and
PostgreSQL."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dui.audit.tables import audit_event
from dui.cli import worker as worker_module
from dui.cli.worker import FAST_KINDS, _fast_lane, run_outbox
from dui.demo.data import ESTABLISHMENTS
from dui.outbox import queue
from dui.outbox.runner import run_due
from dui.subscriptions.delivery import endpoint_is_public, notify
from dui.subscriptions.rules import OWNER, OWNER_CLIENT
from tests.authkit import client_jwks, token_form
from tests.functional.test_staff_alerts import demo, device, post_event, read_events  # noqa: F401  (fixtures)
from tests.functional.test_staff_api import MINE, PARC, TILLEULS, nurse
from tests.helpers import FhirClient

FALLS = "Observation?code=http://snomed.info/sct|1912002"
SCOPES = "system/Subscription.cruds system/Observation.rs system/Flag.rs"
PARC_ORG, TILLEULS_ORG = ESTABLISHMENTS[1]["id"], ESTABLISHMENTS[0]["id"]


@dataclass
class Receiver:
    """A rest-hook endpoint: a real HTTP server in a thread, recording what it is sent, answering ``status``."""

    url: str = ""
    status: int = 200
    calls: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            found.calls.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                "body": self.rfile.read(length) if length else b""})
            self.send_response(found.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _record

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def api_client(app: Flask, tmp_path: Path, finess: str | None, scope: str = SCOPES) -> tuple[str, dict[str, str]]:
    """A client registered with the CLI (for ``finess``), and the headers of a token it obtained."""
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps(client_jwks()))
    args = ["clients", "create", "Appel malade", "--scope", scope, "--jwks-file", str(path)]
    created = app.test_cli_runner().invoke(args=args + (["--establishment", finess] if finess else []))
    assert created.exit_code == 0, created.output
    client_id = created.output.split()[0]
    svc = app.extensions["dui"]
    answer = app.test_client().post("/auth/token", data=token_form(client_id, svc.authenticator.token_url,
                                                                   scope=scope))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return client_id, {"Authorization": f"Bearer {answer.get_json()['access_token']}"}


def subscription(endpoint: str, criteria: str = FALLS, payload: str | None = None, **extra: Any) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "header": ["Authorization: Bearer s3cret"]}
    if payload:
        channel["payload"] = payload
    return {"resourceType": "Subscription", "status": "requested", "reason": "Appel malade", "criteria": criteria,
            "channel": channel, **extra}


def fhir(web: FlaskClient, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
    return web.open(f"/fhir/{path}", method=method, headers={**headers, "Content-Type": "application/fhir+json"},
                    data=orjson.dumps(body) if body is not None else None)


def subscribe(web: FlaskClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    answer = fhir(web, "POST", "Subscription", headers, body)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return dict(answer.get_json())


def jobs(app: Flask, kind: str) -> list[queue.Job]:
    with app.extensions["dui"].unit_of_work(write=False) as session:
        return [j for j in queue.list_jobs(session, limit=1000) if j.kind == kind]


def test_a_fall_reaches_the_stream_and_the_rest_hook_receiver(app: Flask, demo: FhirClient,  # noqa: F811
                                                              device: dict[str, str], receiver: Receiver,  # noqa: F811
                                                              tmp_path: Path) -> None:
    web = app.test_client()
    client_id, mine = api_client(app, tmp_path, PARC)
    sub = subscribe(web, mine, subscription(receiver.url))
    assert sub["status"] == "active"  # requested, accepted
    assert {e["url"] for e in sub["extension"]} == {OWNER, OWNER_CLIENT}
    alert = post_event(web, device, "evt-1").get_json()
    assert receiver.calls == []  # never inside the request
    report = run_outbox(app.extensions["dui"], kinds=FAST_KINDS)  # the worker's fast lane
    assert report.delivered == 3 and report.dead == 0  # the matches (Observation, Flag), then the notification
    assert [(c["method"], c["path"], c["body"]) for c in receiver.calls] == [("POST", "/hook", b"")]
    assert receiver.calls[0]["headers"]["Authorization"] == "Bearer s3cret"
    stream = web.get("/api/alerts/stream", headers={**nurse(app), "Last-Event-ID": "0"}, buffered=False)
    assert [data["id"] for _, _, data in read_events(stream, 1)] == [alert["id"]]  # and the staff's stream has it
    run_outbox(app.extensions["dui"])
    assert len(receiver.calls) == 1  # told once
    with app.extensions["dui"].unit_of_work(write=False) as session:
        told = session.execute(select(audit_event.c.actor_id, audit_event.c.resource_type, audit_event.c.resource_id)
                               .where(audit_event.c.action == "subscription-notify")).all()
    assert told == [(client_id, "Observation", alert["observation_id"])]  # who was told what, in the audit trail


def test_with_a_payload_the_resource_is_put_at_the_service_base(app: Flask, demo: FhirClient,  # noqa: F811
                                                                 device: dict[str, str], receiver: Receiver,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    web = app.test_client()
    _, mine = api_client(app, tmp_path, PARC)
    subscribe(web, mine, subscription(receiver.url, f"Flag?patient=Patient/{MINE}", payload="application/fhir+json"))
    subscribe(web, mine, subscription(receiver.url + "/falls", payload="application/fhir+json"))
    subscribe(web, mine, subscription(receiver.url + "/never", "Observation?code=http://loinc.org|29463-7"))
    alert = post_event(web, device, "evt-1").get_json()
    assert run_outbox(app.extensions["dui"]).dead == 0
    got = {c["path"]: c for c in receiver.calls}
    assert set(got) == {f"/hook/Flag/{alert['flag_id']}", f"/hook/falls/Observation/{alert['observation_id']}"}
    flag = orjson.loads(got[f"/hook/Flag/{alert['flag_id']}"]["body"])
    assert got[f"/hook/Flag/{alert['flag_id']}"]["method"] == "PUT"
    assert flag["resourceType"] == "Flag" and flag["subject"]["reference"] == f"Patient/{MINE}"
    assert got[f"/hook/Flag/{alert['flag_id']}"]["headers"]["Content-Type"] == "application/fhir+json"
    # the acknowledgement updates the Flag (inactive): an update is told too, with the new version
    web.post(f"/api/alerts/{alert['id']}/acknowledge", headers=nurse(app))
    run_outbox(app.extensions["dui"])
    assert len(receiver.calls) == 3 and orjson.loads(receiver.calls[-1]["body"])["status"] == "inactive"


def test_another_establishments_client_is_not_told_of_this_establishments_resident(
        app: Flask, demo: FhirClient, device: dict[str, str], receiver: Receiver,  # noqa: F811
        tmp_path: Path) -> None:
    web = app.test_client()
    _, theirs = api_client(app, tmp_path, TILLEULS)
    subscribe(web, theirs, subscription(receiver.url + "/theirs"))
    _, narrow = api_client(app, tmp_path, PARC, scope="system/Subscription.cruds system/Flag.rs")
    subscribe(web, narrow, subscription(receiver.url + "/no-observation-scope"))
    post_event(web, device, "evt-1")
    run_outbox(app.extensions["dui"])
    assert receiver.calls == []
    assert [j.result for j in jobs(app, "subscription.match")] == ["0 subscription(s) to notify"] * 2  # Obs., Flag


def test_a_500_is_retried_and_a_404_is_a_dead_letter(app: Flask, demo: FhirClient,  # noqa: F811
                                                      device: dict[str, str], receiver: Receiver,  # noqa: F811
                                                      tmp_path: Path) -> None:
    web, svc = app.test_client(), app.extensions["dui"]
    _, mine = api_client(app, tmp_path, PARC)
    subscribe(web, mine, subscription(receiver.url))
    receiver.status = 500
    post_event(web, device, "evt-1")
    report = run_outbox(svc)
    assert report.retried == 1 and len(receiver.calls) == 1
    [job] = jobs(app, "subscription.notify")
    assert job.state == "due" and job.attempts == 1 and job.last_error == "POST: the endpoint answered 500"
    later = svc.clock() + timedelta(hours=2)
    receiver.status = 200
    assert run_due(svc.unit_of_work, svc.outbox_handlers, later, "test").delivered == 1
    assert jobs(app, "subscription.notify")[0].state == "done" and len(receiver.calls) == 2
    receiver.status = 404
    post_event(web, device, "evt-2", sensor="CAPTEUR-EMPTY-1")  # no resident: no Observation, nothing to match
    post_event(web, device, "evt-3", sensor=f"CAPTEUR-{PARC}-103")
    run_due(svc.unit_of_work, svc.outbox_handlers, later, "test")
    states = sorted(j.state for j in jobs(app, "subscription.notify"))
    assert states == ["dead", "done"] and len(receiver.calls) == 3


def test_a_subscription_is_its_owners_only(app: Flask, demo: FhirClient, receiver: Receiver,  # noqa: F811
                                          tmp_path: Path) -> None:
    web = app.test_client()
    _, mine = api_client(app, tmp_path, PARC)
    _, colleague = api_client(app, tmp_path, PARC)
    _, theirs = api_client(app, tmp_path, TILLEULS)
    forged = subscription(receiver.url, extension=[
        {"url": OWNER, "valueReference": {"reference": f"Organization/{TILLEULS_ORG}"}},
        {"url": OWNER_CLIENT, "valueString": "someone-else"}])
    sub = subscribe(web, mine, forged)
    owner = {e["url"]: e for e in sub["extension"]}
    assert owner[OWNER]["valueReference"]["reference"] == f"Organization/{PARC_ORG}"  # not the forged one
    assert owner[OWNER_CLIENT]["valueString"] != "someone-else"
    rid = sub["id"]
    assert fhir(web, "GET", f"Subscription/{rid}", colleague).status_code == 200  # the same establishment
    for path in (f"Subscription/{rid}", f"Subscription/{rid}/_history", f"Subscription/{rid}/_history/1"):
        assert fhir(web, "GET", path, theirs).status_code == 404
    assert fhir(web, "GET", "Subscription", theirs).get_json()["total"] == 0
    assert fhir(web, "GET", "Subscription/_history", theirs).get_json().get("entry", []) == []
    assert fhir(web, "GET", f"Subscription?_id={rid}", theirs).get_json()["total"] == 0
    assert fhir(web, "GET", f"Subscription?owner=Organization/{PARC_ORG}", theirs).get_json()["total"] == 0
    unknown = fhir(web, "PUT", "Subscription/no-such-one", theirs, {**sub, "id": "no-such-one"})
    hidden = fhir(web, "PUT", f"Subscription/{rid}", theirs, sub)
    assert hidden.status_code == unknown.status_code == 403  # the same answer as for what does not exist
    assert fhir(web, "DELETE", f"Subscription/{rid}", theirs).status_code == 404
    # an update keeps the stored owner, whatever the body says
    updated = fhir(web, "PUT", f"Subscription/{rid}", colleague, {**forged, "id": rid, "status": "off"})
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert {e["url"]: e for e in updated.get_json()["extension"]} == owner and updated.get_json()["status"] == "off"
    # a transaction cannot name another owner either
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": forged, "request": {"method": "POST", "url": "Subscription"}}]}
    assert fhir(web, "POST", "", mine, bundle).status_code == 403
    assert fhir(web, "GET", "Subscription", mine).get_json()["total"] == 1


def test_who_may_keep_subscriptions(app: Flask, demo: FhirClient, receiver: Receiver,  # noqa: F811
                                    tmp_path: Path) -> None:
    web = app.test_client()
    _, nowhere = api_client(app, tmp_path, None)
    refused = fhir(web, "POST", "Subscription", nowhere, subscription(receiver.url))
    assert refused.status_code == 403 and "registered without" in refused.get_data(as_text=True)
    assert fhir(web, "GET", "Subscription", nowhere).status_code == 403
    assert fhir(web, "GET", "Subscription", nurse(app)).status_code == 403
    _, reader = api_client(app, tmp_path, PARC, scope="system/Observation.rs")
    assert fhir(web, "POST", "Subscription", reader, subscription(receiver.url)).status_code == 403


@pytest.mark.parametrize(("change", "where"), [
    ({"criteria": "Patient?name=x"}, "Subscription.criteria"),
    ({"criteria": "Observation?no-such-param=1"}, "Subscription.criteria"),
    ({"criteria": "Observation?code=x&_count=3"}, "Subscription.criteria"),
    ({"criteria": "Observation?code:nonsense=1"}, "Subscription.criteria"),
    ({"criteria": "Observation?subject.name=x&_include=Observation:subject"}, "Subscription.criteria"),
    ({"channel": {"type": "websocket", "endpoint": "wss://x.fr/"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "websocket", "payload": "application/fhir+json"}}, "Subscription.channel.payload"),
    ({"channel": {"type": "email", "endpoint": "mailto:a@b.fr"}}, "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook", "endpoint": "ftp://x.fr/"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "/relative"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://u:p@x.fr/"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://x.fr/", "payload": "application/xml"}},
     "Subscription.channel.payload"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://x.fr/", "header": ["Host: evil"]}},
     "Subscription.channel.header"),
    ({"status": "error"}, "Subscription.status"),
])
def test_what_a_subscription_may_say(app: Flask, demo: FhirClient, tmp_path: Path,  # noqa: F811
                                     change: dict[str, Any], where: str) -> None:
    _, mine = api_client(app, tmp_path, PARC)
    answer = fhir(app.test_client(), "POST", "Subscription", mine, {**subscription("http://x.fr/"), **change})
    assert answer.status_code == 422, answer.get_data(as_text=True)
    issue = answer.get_json()["issue"][0]
    assert issue["expression"] == [where]
    if where == "Subscription.channel.type":
        assert "rest-hook and websocket" in issue["diagnostics"]


def test_an_off_subscription_stays_off_and_is_not_notified(app: Flask, demo: FhirClient,  # noqa: F811
                                                            device: dict[str, str],  # noqa: F811
                                                            receiver: Receiver, tmp_path: Path) -> None:
    web = app.test_client()
    _, mine = api_client(app, tmp_path, PARC)
    assert subscribe(web, mine, {**subscription(receiver.url), "status": "off"})["status"] == "off"
    post_event(web, device, "evt-1")
    run_outbox(app.extensions["dui"])
    assert receiver.calls == [] and jobs(app, "subscription.match") == []  # nothing active: nothing queued


def test_the_fast_lane_runs_only_the_subscription_jobs(app: Flask, client: FhirClient) -> None:
    svc = app.extensions["dui"]
    with svc.unit_of_work() as session:
        other = queue.enqueue(session, "no.such.kind", "Patient/x", "k", svc.clock())
    assert run_outbox(svc, kinds=FAST_KINDS).attempted == 0
    with svc.unit_of_work(write=False) as session:
        assert queue.get(session, other.id).state == "due"  # type: ignore[union-attr]


def test_the_worker_s_fast_lane_sends_within_a_second(app: Flask, demo: FhirClient,  # noqa: F811
                                                      device: dict[str, str],  # noqa: F811
                                                      receiver: Receiver, tmp_path: Path) -> None:
    web, svc = app.test_client(), app.extensions["dui"]
    _, mine = api_client(app, tmp_path, PARC)
    subscribe(web, mine, subscription(receiver.url))
    stop = threading.Event()
    lane = threading.Thread(target=_fast_lane, args=(svc, stop, 0.25), daemon=True)
    lane.start()
    try:
        posted = time.monotonic()
        assert post_event(web, device, "evt-1").status_code == 201
        while not receiver.calls and time.monotonic() - posted < 5:
            time.sleep(0.02)
        assert receiver.calls and time.monotonic() - posted < 1.5
    finally:
        stop.set()
        lane.join(5)
    assert not lane.is_alive()


def test_a_long_pass_does_not_hold_up_the_fast_lane(app: Flask, demo: FhirClient,  # noqa: F811
                                                    device: dict[str, str],  # noqa: F811
                                                    receiver: Receiver, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A fall makes its resident's DLU due: a pass rebuilding a batch of DLUs must not delay the notifications."""
    web, svc = app.test_client(), app.extensions["dui"]
    _, mine = api_client(app, tmp_path, PARC)
    subscribe(web, mine, subscription(receiver.url))
    in_pass = threading.Event()

    def slow_rebuilds(*_: Any, **__: Any) -> tuple[int, int]:
        in_pass.set()
        time.sleep(4.0)  # a batch of DLUs being rebuilt
        return 0, 0

    monkeypatch.setattr(worker_module, "rebuild_due_dlus", slow_rebuilds)
    stop = threading.Event()
    work = threading.Thread(target=worker_module._work, args=(svc, stop, False, 60.0, 0.25), daemon=True)
    work.start()
    try:
        assert in_pass.wait(5)
        posted = time.monotonic()
        assert post_event(web, device, "evt-1").status_code == 201
        while not receiver.calls and time.monotonic() - posted < 3.5:
            time.sleep(0.02)
        assert receiver.calls and time.monotonic() - posted < 1.5  # while the pass still rebuilds
    finally:
        stop.set()
        work.join(15)
    assert not work.is_alive()


def test_a_disabled_client_or_an_ended_subscription_is_not_told(app: Flask, demo: FhirClient,  # noqa: F811
                                                                 device: dict[str, str],  # noqa: F811
                                                                 receiver: Receiver, tmp_path: Path) -> None:
    web = app.test_client()
    client_id, mine = api_client(app, tmp_path, PARC)
    _, other = api_client(app, tmp_path, PARC)
    subscribe(web, mine, subscription(receiver.url + "/disabled"))
    subscribe(web, other, subscription(receiver.url + "/ended", end="2020-01-01T00:00:00Z"))
    assert app.test_cli_runner().invoke(args=["clients", "disable", client_id]).exit_code == 0
    post_event(web, device, "evt-1")
    run_outbox(app.extensions["dui"])
    assert receiver.calls == []


@pytest.mark.parametrize(("url", "public"), [
    ("http://127.0.0.1:8080/hook", False), ("http://localhost/hook", False), ("http://[::1]/hook", False),
    ("http://10.1.2.3/hook", False), ("https://192.168.0.10/hook", False), ("http://169.254.169.254/latest", False),
    ("https://93.184.216.34/hook", True), ("https://[2606:4700:4700::1111]/hook", True)])
def test_only_public_addresses_count_as_public(url: str, public: bool) -> None:
    assert endpoint_is_public(url) is public


def test_in_production_an_endpoint_on_a_private_address_is_not_called(
        app: Flask, demo: FhirClient, device: dict[str, str], receiver: Receiver,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Server-side request forgery: a client's Subscription may not make the server call its own loopback or
    network. In development the tests' receiver listens on 127.0.0.1; ``DUI_ENV=prod`` sets ``public_only``."""
    web, svc = app.test_client(), app.extensions["dui"]
    _, mine = api_client(app, tmp_path, PARC)
    subscribe(web, mine, subscription(receiver.url))
    post_event(web, device, "evt-1")
    handlers = {**svc.outbox_handlers,
                "subscription.notify": partial(notify, context_of=svc.fhir_context, public_only=True)}
    report = run_due(svc.unit_of_work, handlers, svc.clock(), "test")  # the matches, then the notification
    assert report.delivered == 2 and report.dead == 1 and receiver.calls == []
    [job] = jobs(app, "subscription.notify")
    assert job.last_error == "the endpoint's host is not a public address (DUI_ENV=prod)"
    wired = svc.outbox_handlers["subscription.notify"]
    assert isinstance(wired, partial) and wired.keywords["public_only"] is svc.settings.is_prod


def test_whether_a_subscription_is_active_is_asked_once_per_transaction(app: Flask, client: FhirClient,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An import stores 200 Observations a transaction: one question, not 200; a Subscription written in the
    transaction makes the next Observation ask again, and its match is queued (``client``: an empty database). The
    question runs on the writing unit's own connection: it sees the Subscription the unit wrote."""
    from dui.auth.actor import SYSTEM
    from dui.subscriptions import matching

    svc = app.extensions["dui"]
    asked: list[bool] = []
    question = matching._ANY_ACTIVE

    class Counted:
        def rows_writing(self, session: Any, params: Any) -> Any:
            rows = question.rows_writing(session, params)
            asked.append(bool(rows[0][0]))
            return rows

    monkeypatch.setattr(matching, "_ANY_ACTIVE", Counted())
    fall = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/x"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1912002"}]}}
    with svc.unit_of_work() as session:
        store = svc.fhir_context(session, SYSTEM).internal
        for _ in range(5):
            store.create("Observation", dict(fall))
        assert asked == [False] and queue.list_jobs(session, limit=10) == []
        store.create("Subscription", {**subscription("https://example.org/hook"), "status": "active"})
        store.flush()  # type: ignore[attr-defined]
        store.create("Observation", dict(fall))
        assert asked == [False, True]
        assert [j.kind for j in queue.list_jobs(session, limit=10)] == ["subscription.match"]
    with svc.unit_of_work() as session:  # a new transaction asks again
        svc.fhir_context(session, SYSTEM).internal.create("Observation", dict(fall))
        assert asked == [False, True, True]
