"""FHIR R4 Subscriptions, websocket channel (docs/staff-api.md, "Subscriptions"): a real websocket client connects to
the app served by werkzeug in a thread, binds its Subscription, and is sent ``ping <id>`` when a sensor's fall
matches; it binds its own Subscriptions only; the socket ends when its client is disabled. Under gunicorn:
tests/server/test_websocket_server.py. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from simple_websocket import Client, ConnectionClosed
from sqlalchemy import select

from dui.audit.tables import audit_event, audit_event_patient
from dui.auth.actor import CLI
from dui.cli.worker import FAST_KINDS, run_outbox
from dui.subscriptions.websocket import CAPABILITY_EXTENSION, KEEP_SECONDS, last_ping, queue_ping
from dui.web import websocket as web_socket
from tests.functional.test_staff_alerts import demo, device, post_event  # noqa: F401  (fixtures)
from tests.functional.test_staff_api import MINE, PARC, TILLEULS, nurse
from tests.functional.test_subscriptions import FALLS, api_client, fhir, jobs, subscribe
from tests.helpers import FhirClient
from tests.webserver import serving


def websocket_subscription(criteria: str = FALLS) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "Appel malade", "criteria": criteria,
            "channel": {"type": "websocket"}}


@pytest.fixture
def base(app: Flask) -> Iterator[str]:
    with serving(app) as url:
        yield url


def connect(base: str, headers: dict[str, str]) -> Client:
    return Client.connect(base.replace("http://", "ws://") + "/ws/subscriptions", headers=headers)


def said(ws: Client, timeout: float = 5.0) -> str:
    message = ws.receive(timeout=timeout)
    assert message is not None, "nothing received in time"
    return str(message)


def until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_a_bound_socket_is_pinged_when_a_fall_matches(app: Flask, demo: FhirClient,  # noqa: F811
                                                      device: dict[str, str], base: str,  # noqa: F811
                                                      tmp_path: Path) -> None:
    web, svc = app.test_client(), app.extensions["dui"]
    client_id, mine = api_client(app, tmp_path, PARC)
    sub = subscribe(web, mine, websocket_subscription())
    other = subscribe(web, mine, websocket_subscription("Observation?code=http://loinc.org|29463-7"))  # weights
    assert sub["status"] == "active"
    ws = connect(base, mine)
    try:
        ws.send(f"bind {sub['id']}")
        assert said(ws) == f"bound {sub['id']}"
        ws.send(f"bind {other['id']}")
        assert said(ws) == f"bound {other['id']}"
        alert = post_event(web, device, "evt-1").get_json()
        assert ws.receive(timeout=0.5) is None  # nothing inside the request: the worker tells
        run_outbox(svc, kinds=FAST_KINDS)  # the matching writes the ping: no notification job, nothing leaves
        assert said(ws) == f"ping {sub['id']}"
        assert jobs(app, "subscription.notify") == []
        assert ws.receive(timeout=0.6) is None  # the weight Subscription did not match; the fall is told once
    finally:
        ws.close()
    with svc.unit_of_work(write=False) as session:
        rows = session.execute(
            select(audit_event.c.action, audit_event.c.outcome, audit_event.c.resource_type,
                   audit_event.c.resource_id, audit_event.c.status, audit_event.c.seq)
            .where(audit_event.c.actor_id == client_id, audit_event.c.action.in_(
                ("websocket", "read", "subscription-notify"))).order_by(audit_event.c.seq)).all()
        told = session.execute(select(audit_event_patient.c.patient_id).where(
            audit_event_patient.c.seq == rows[-1].seq)).scalars().all()
    assert [tuple(r)[:5] for r in rows] == [
        ("websocket", "success", "Subscription", None, 101),
        ("read", "success", "Subscription", sub["id"], 200),
        ("read", "success", "Subscription", other["id"], 200),
        ("subscription-notify", "success", "Observation", alert["observation_id"], 200)]
    assert told == [MINE]


def test_a_socket_binds_its_own_active_websocket_subscriptions_only(app: Flask, demo: FhirClient,  # noqa: F811
                                                                   base: str, tmp_path: Path) -> None:
    web = app.test_client()
    _, mine = api_client(app, tmp_path, PARC)
    _, colleague = api_client(app, tmp_path, PARC)
    _, theirs = api_client(app, tmp_path, TILLEULS)
    sub = subscribe(web, mine, websocket_subscription())
    hook = subscribe(web, mine, {**websocket_subscription(), "channel": {"type": "rest-hook",
                                                                         "endpoint": "http://127.0.0.1:9/h"}})
    off = subscribe(web, mine, {**websocket_subscription(), "status": "off"})
    for who in (colleague, theirs):  # another client of the establishment, another establishment's client
        ws = connect(base, who)
        try:
            ws.send(f"bind {sub['id']}")
            assert said(ws) == f"error {sub['id']} no such Subscription of yours"
        finally:
            ws.close()
    ws = connect(base, mine)
    try:
        for message, answer in [
                (f"bind {hook['id']}", f"error {hook['id']} its channel is not websocket"),
                (f"bind {off['id']}", f"error {off['id']} it is not active"),
                ("bind no-such-one", "error no-such-one no such Subscription of yours"),
                ("bind ../Patient/x", "error ../Patient/x not a Subscription id"),
                ("subscribe everything", "error expected 'bind <Subscription id>'"),
                (f"bind {sub['id']}", f"bound {sub['id']}")]:
            ws.send(message)
            assert said(ws) == answer, message
        ws.send(b"\x00binary")
        assert said(ws).startswith("error expected")
        ws.send("x" * 5000)  # beyond the message size: the server closes the socket
        with pytest.raises(ConnectionClosed):
            for _ in range(50):
                ws.receive(timeout=0.1)
    finally:
        if ws.connected:
            ws.close()


def test_who_may_open_the_socket(app: Flask, demo: FhirClient, base: str, tmp_path: Path) -> None:  # noqa: F811
    url = base + "/ws/subscriptions"
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert requests.get(url, headers=upgrade, timeout=10).status_code == 401
    assert requests.get(url, headers={**upgrade, **nurse(app)}, timeout=10).status_code == 403  # staff: /api
    _, nowhere = api_client(app, tmp_path, None)
    assert requests.get(url, headers={**upgrade, **nowhere}, timeout=10).status_code == 403
    _, mine = api_client(app, tmp_path, PARC)
    plain = requests.get(url, headers=mine, timeout=10)
    assert plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"
    assert plain.headers["Content-Type"].startswith("application/problem+json")
    # the CapabilityStatement says where the socket is
    statement = fhir(app.test_client(), "GET", "metadata", {}).get_json()
    [where] = [e["valueUri"] for e in statement["rest"][0]["extension"] if e["url"] == CAPABILITY_EXTENSION]
    assert where.endswith("/ws/subscriptions") and where.startswith("ws")


def test_the_socket_closes_when_its_client_is_disabled(app: Flask, demo: FhirClient, base: str,  # noqa: F811
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_socket, "RECHECK_SECONDS", 0.2)
    web = app.test_client()
    client_id, mine = api_client(app, tmp_path, PARC)
    sub = subscribe(web, mine, websocket_subscription())
    ws = connect(base, mine)
    ws.send(f"bind {sub['id']}")
    assert said(ws) == f"bound {sub['id']}"
    disabled = app.test_cli_runner().invoke(args=["clients", "disable", client_id])
    assert disabled.exit_code == 0, disabled.output
    with pytest.raises(ConnectionClosed):
        for _ in range(50):
            ws.receive(timeout=0.1)
    assert ws.close_reason == 1008


def test_ping_numbers_are_never_given_twice(app: Flask, demo: FhirClient) -> None:  # noqa: F811
    """A socket resumes after the last ping it sent: rows deleted as they age must not free their numbers (SQLite
    would give the number of a deleted last row again)."""
    svc = app.extensions["dui"]
    with svc.unit_of_work(write=True) as session:
        version = svc.fhir_context(session, CLI).internal.read("Patient", MINE)
        assert version is not None
        queue_ping(session, "s1", version, svc.clock())
        first = last_ping(session)
        queue_ping(session, "s1", version, svc.clock() + timedelta(seconds=KEEP_SECONDS + 1))  # the first one goes
        assert last_ping(session) == first + 1
        queue_ping(session, "s1", version, svc.clock() + timedelta(seconds=3 * KEEP_SECONDS))  # and the second
        assert last_ping(session) == first + 2
