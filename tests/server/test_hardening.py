"""Hardening as gunicorn serves it: security headers, no server version, 429 past the token endpoint's limit
per client address (behind a listed proxy: this test's own address), CORS. One worker on SQLite, so that the
in-process buckets are the only ones (tests/server/test_shared_limits.py runs several workers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import text

from dui import migrations
from dui.db import make_engine
from tests.conftest import TEST_MASTER_KEY_FILE
from tests.server.conftest import running_server

APP = "https://app.example.org"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The server's base URL, and its database's."""
    tmp = tmp_path_factory.mktemp("hardened")
    url = f"sqlite:///{tmp / 'dui.sqlite'}"
    migrations.upgrade(url)
    env = {"DUI_DATABASE_URL": url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_INSI_SIMULATOR_DIR": str(tmp / "insi"),
           "DUI_AUTH_RATE_LIMIT": "1", "DUI_AUTH_RATE_LIMIT_BURST": "2",
           "DUI_RATE_LIMIT": "6000", "DUI_RATE_LIMIT_BURST": "1000",
           "DUI_TRUSTED_PROXIES": "127.0.0.1, ::1",  # this test is the reverse proxy
           "DUI_CORS_ORIGINS": APP}
    with running_server(env, tmp, workers=1, threads=4) as base:
        yield base, url


def test_headers_as_served_by_gunicorn(hardened: tuple[str, str]) -> None:
    base = hardened[0]
    for answer in (requests.get(f"{base}/healthz", timeout=10),
                   requests.get(f"{base}/fhir/metadata", headers={"Origin": APP}, timeout=10),
                   requests.get(f"{base}/fhir/Patient/nope", timeout=10)):
        headers = answer.headers
        assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
        server = headers.get("Server", "")
        assert not any(ch.isdigit() for ch in server) and "/" not in server, server  # no version
        assert "Strict-Transport-Security" not in headers  # dev, over http
    assert answer.status_code == 404


def test_token_endpoint_limit_per_forwarded_address(hardened: tuple[str, str]) -> None:
    base, database = hardened

    def ask(forwarded: str) -> requests.Response:
        return requests.post(f"{base}/auth/token", data={"grant_type": "password", "username": "x",
                                                         "password": "y"},
                             headers={"X-Forwarded-For": forwarded}, timeout=10)

    assert [ask("203.0.113.10").status_code for _ in range(2)] == [400, 400]
    refused = ask("203.0.113.10")
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    # An address the client wrote itself, to the left of the one the proxy appended, buys no fresh bucket.
    assert ask("6.6.6.6, 203.0.113.10").status_code == 429
    assert ask("203.0.113.11").status_code == 400  # another client behind the same proxy
    assert ask("6.6.6.6, 203.0.113.12").status_code == 400  # and another, with a made-up address on the left
    engine = make_engine(database)
    try:
        with engine.connect() as conn:
            sources = conn.execute(text("SELECT source FROM audit_event WHERE action = 'login' ORDER BY seq"))
            assert sources.scalars().all() == ["203.0.113.10", "203.0.113.10", "203.0.113.11", "203.0.113.12"]
    finally:
        engine.dispose()


def test_cors_preflight_through_gunicorn(hardened: tuple[str, str]) -> None:
    base = hardened[0]
    answer = requests.options(f"{base}/fhir/Patient", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, if-none-exist"}, timeout=10)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    refused = requests.options(f"{base}/fhir/Patient", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"}, timeout=10)
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
