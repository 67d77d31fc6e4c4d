"""Tokens against a real ``dui serve`` (two workers, threads): one assertion raced by twenty clients yields one
token; a token issued by one worker is accepted by every worker; the server's log holds no token."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask

from tests.authkit import client_jwks, token_form, write_json

pytestmark = pytest.mark.server


def test_twenty_clients_racing_one_assertion_get_one_token(fhir_base: str, app: Flask, tmp_path: Path,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    base = fhir_base.removesuffix("/fhir")
    jwks = write_json(tmp_path / "client.jwks.json", client_jwks())
    created = app.test_cli_runner().invoke(args=["clients", "create", "Hôpital", "--scope", "system/Patient.rs",
                                                 "--jwks-file", str(jwks)])
    assert created.exit_code == 0, created.output
    client_id = created.stdout.strip()
    form = token_form(client_id, f"{base}/auth/token", jti="raced-on-a-real-server")
    barrier = threading.Barrier(20)

    def ask(_: int) -> requests.Response:
        barrier.wait()
        return requests.post(f"{base}/auth/token", data=form, timeout=60)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [401] * 19, [a.text for a in answers if a.status_code not in (200, 401)]
    token = next(a.json()["access_token"] for a in answers if a.status_code == 200)
    assert all("replayed" in a.json()["error_description"] for a in answers if a.status_code == 401)

    # every worker accepts it (the workers share the signing key file)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    with ThreadPoolExecutor(8) as pool:
        reads = list(pool.map(lambda _: requests.get(f"{fhir_base}/Patient", headers=headers, timeout=30), range(24)))
    assert {r.status_code for r in reads} == {200}
    refused = requests.get(f"{fhir_base}/Patient", headers={**headers, "Authorization": f"Bearer {token[:-2]}"},
                           timeout=30)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]

    logs = sorted(tmp_path_factory.getbasetemp().glob("server*/serve.log"), key=lambda p: p.stat().st_mtime)
    text = logs[-1].read_text(errors="replace")
    assert "token issued" in text and "token refused" in text
    for secret in (token, token.split(".")[2], form["client_assertion"].split(".")[2]):
        assert secret not in text
