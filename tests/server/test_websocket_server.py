"""The Subscriptions' websocket under a real ``dui serve`` (gunicorn's threaded workers): the upgrade is taken over
from gunicorn, the socket is bound and pinged when a fall is recorded and the worker runs, and the worker process
serves other requests while the socket is open; closing the socket frees its thread."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import requests
from flask import Flask
from simple_websocket import Client

from dui.cli.worker import run_outbox
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from tests.authkit import client_jwks, token_form, write_json
from tests.helpers import FhirClient

pytestmark = pytest.mark.server

PARC = ESTABLISHMENTS[1]["finess"]
RESIDENT = "demo-resident-001"  # of Le Parc
SCOPES = "system/Subscription.cruds system/Observation.rs"


def test_a_socket_is_bound_and_pinged_under_gunicorn(fhir_base: str, app: Flask, tmp_path: Path) -> None:
    base = fhir_base.removesuffix("/fhir")
    local = FhirClient(app.test_client())
    for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30))):
        assert local.post("", bundle).status_code == 200
    jwks = write_json(tmp_path / "client.jwks.json", client_jwks())
    created = app.test_cli_runner().invoke(args=["clients", "create", "Appel malade", "--scope", SCOPES,
                                                 "--jwks-file", str(jwks), "--establishment", PARC])
    assert created.exit_code == 0, created.output
    answer = requests.post(f"{base}/auth/token", data=token_form(created.stdout.strip(), f"{base}/auth/token",
                                                                 scope=SCOPES), timeout=30)
    assert answer.status_code == 200, answer.text
    auth = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    made = requests.post(f"{fhir_base}/Subscription", headers={**auth, "Content-Type": "application/fhir+json"},
                         json={"resourceType": "Subscription", "status": "requested", "reason": "Appel malade",
                               "criteria": "Observation?code=http://snomed.info/sct|1912002",
                               "channel": {"type": "websocket"}}, timeout=30)
    assert made.status_code == 201, made.text
    sub = made.json()["id"]
    statement = requests.get(f"{fhir_base}/metadata", timeout=30).json()
    where = next(e["valueUri"] for e in statement["rest"][0]["extension"] if e["url"].endswith("-websocket"))
    assert where == base.replace("http://", "ws://") + "/ws/subscriptions"

    ws = Client.connect(where, headers=auth)
    try:
        ws.send(f"bind {sub}")
        assert ws.receive(timeout=10) == f"bound {sub}"
        # the worker serves other requests while the socket holds one of its threads
        assert requests.get(f"{fhir_base}/Subscription/{sub}", headers=auth, timeout=10).status_code == 200
        fall = {"resourceType": "Observation", "status": "final", "effectiveDateTime": "2026-12-01T03:10:00+01:00",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1912002"}], "text": "Chute"},
                "subject": {"reference": f"Patient/{RESIDENT}"}}
        assert local.post("Observation", fall).status_code == 201
        run_outbox(app.extensions["dui"])  # the worker: matching, then the ping
        run_outbox(app.extensions["dui"])
        assert ws.receive(timeout=10) == f"ping {sub}"
    finally:
        ws.close()
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
