"""Hardening as gunicorn serves it: security headers, no server version, 429 past the token endpoint's limit
per client address (behind one trusted proxy), CORS. One worker, so that the in-process buckets are the only
ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from dui import migrations
from tests.conftest import TEST_MASTER_KEY_FILE
from tests.server.conftest import running_server

APP = "https://app.example.org"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hardened")
    url = f"sqlite:///{tmp / 'dui.sqlite'}"
    migrations.upgrade(url)
    env = {"DUI_DATABASE_URL": url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_INSI_SIMULATOR_DIR": str(tmp / "insi"),
           "DUI_AUTH_RATE_LIMIT": "1", "DUI_AUTH_RATE_LIMIT_BURST": "2",
           "DUI_RATE_LIMIT": "6000", "DUI_RATE_LIMIT_BURST": "1000", "DUI_TRUSTED_PROXIES": "1",
           "DUI_CORS_ORIGINS": APP}
    with running_server(env, tmp, workers=1, threads=4) as base:
        yield base


def test_headers_as_served_by_gunicorn(hardened: str) -> None:
    for answer in (requests.get(f"{hardened}/healthz", timeout=10),
                   requests.get(f"{hardened}/fhir/metadata", headers={"Origin": APP}, timeout=10),
                   requests.get(f"{hardened}/fhir/Patient/nope", timeout=10)):
        headers = answer.headers
        assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
        server = headers.get("Server", "")
        assert not any(ch.isdigit() for ch in server) and "/" not in server, server  # no version
        assert "Strict-Transport-Security" not in headers  # dev, over http
    assert answer.status_code == 404


def test_token_endpoint_limit_per_forwarded_address(hardened: str) -> None:
    def ask(address: str) -> requests.Response:
        return requests.post(f"{hardened}/auth/token", data={"grant_type": "password", "username": "x",
                                                             "password": "y"},
                             headers={"X-Forwarded-For": address}, timeout=10)

    assert [ask("203.0.113.10").status_code for _ in range(2)] == [400, 400]
    refused = ask("203.0.113.10")
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert ask("203.0.113.11").status_code == 400  # another client behind the same proxy


def test_cors_preflight_through_gunicorn(hardened: str) -> None:
    answer = requests.options(f"{hardened}/fhir/Patient", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, if-none-exist"}, timeout=10)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    refused = requests.options(f"{hardened}/fhir/Patient", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"}, timeout=10)
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
