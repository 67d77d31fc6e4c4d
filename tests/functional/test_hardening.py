"""Rate limits per client and the security headers of every answer, through the Flask test client.

The app of this module allows 3 requests at once per actor and 2 token requests per address, refilled at one a
minute, so that a test's fourth request is refused whatever the machine's speed. Each test starts with empty
buckets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from dui.app import create_app
from dui.ratelimit import InProcessRateLimiter, SharedRateLimiter, limiter_for
from dui.settings import AuthSettings, HttpSettings, RateLimits, proxy_networks
from dui.web.throttle import Reports
from tests.authkit import TILLEULS, client_jwks, ec256, psc_config, psc_token, token_form, write_json
from tests.conftest import BASE_URL, empty_database
from tests.conftest import test_settings as settings_for
from tests.helpers import FHIR_JSON, outcome_codes

LIMITS = RateLimits(per_minute=1, burst=3, auth_per_minute=1, auth_burst=2)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@pytest.fixture(scope="module")
def limited_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp = tmp_path_factory.mktemp("hardening")
    app = create_app(settings_for(database_url, rate=LIMITS, auth=AuthSettings(
        dev_key_dir=str(tmp / "keys"), oidc_issuers=str(psc_config(tmp)))))
    yield app
    app.extensions["dui"].dispose()


@pytest.fixture
def web(limited_app: Flask) -> FlaskClient:
    empty_database(limited_app)  # on PostgreSQL, the database's buckets too
    svc = limited_app.extensions["dui"]
    limited_app.extensions["dui.ratelimit"] = limiter_for(svc.settings, svc.engine)  # in memory on SQLite
    limited_app.extensions["dui.ratelimit.reports"] = Reports()
    return limited_app.test_client()


def fhir(web: FlaskClient, path: str = "metadata", address: str = "192.0.2.1", token: str | None = None,
         **headers: str) -> TestResponse:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return web.get(f"/fhir/{path}", headers={"Accept": FHIR_JSON, **headers}, environ_base={"REMOTE_ADDR": address})


def statuses(responses: list[TestResponse]) -> list[int]:
    return [r.status_code for r in responses]


def throttled(response: TestResponse) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 55 <= int(response.headers["Retry-After"]) <= 60


def client_token(app: Flask, web: FlaskClient, tmp: Path, name: str) -> str:
    jwks = write_json(tmp / f"{name}.jwks.json", client_jwks())
    result = app.test_cli_runner().invoke(args=["clients", "create", name, "--scope", "system/Patient.rs",
                                                "--jwks-file", str(jwks), "--establishment", TILLEULS])
    assert result.exit_code == 0, result.output
    client_id = result.stdout.strip()
    answer = web.post("/auth/token", data=token_form(client_id, BASE_URL + "/auth/token"),
                      environ_base={"REMOTE_ADDR": f"198.51.100.{len(name)}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return str(answer.get_json()["access_token"])


# -- rate limits ----------------------------------------------------------------------------------------------


def test_anonymous_requests_are_limited_per_address(web: FlaskClient) -> None:
    assert statuses([fhir(web) for _ in range(3)]) == [200, 200, 200]
    refused = fhir(web, "Patient?family=Quintal")
    throttled(refused)
    assert outcome_codes(refused) == ["throttled"]
    assert "at most 1 a minute, 3 at once" in refused.get_json()["issue"][0]["diagnostics"]
    assert fhir(web, address="192.0.2.2").status_code == 200  # another address, another bucket


def test_each_api_client_has_its_own_bucket(limited_app: Flask, web: FlaskClient, tmp_path: Path) -> None:
    first, second = client_token(limited_app, web, tmp_path, "a"), client_token(limited_app, web, tmp_path, "bb")
    assert statuses([fhir(web, token=first, address=f"10.0.0.{i}") for i in range(3)]) == [200, 200, 200]
    throttled(fhir(web, token=first, address="10.0.0.9"))  # the client, whatever address it calls from
    assert fhir(web, token=second, address="10.0.0.9").status_code == 200
    assert fhir(web, address="10.0.0.9").status_code == 200  # the same address without the token


def test_each_staff_member_has_their_own_bucket(web: FlaskClient) -> None:
    nurse, doctor = psc_token(SubjectNameID="810000000001"), psc_token(SubjectNameID="810000000002")
    assert statuses([fhir(web, token=nurse) for _ in range(3)]) == [200, 200, 200]
    throttled(fhir(web, token=nurse))
    assert fhir(web, token=doctor).status_code == 200


def test_refused_tokens_count_against_the_address_and_are_still_answered_401(web: FlaskClient) -> None:
    answers = [fhir(web, "Patient", token="not-a-token") for _ in range(3)]
    assert statuses(answers) == [401, 401, 401]
    assert all('error="invalid_token"' in a.headers["WWW-Authenticate"] for a in answers)
    throttled(fhir(web, "Patient", token="still-not-a-token"))
    assert fhir(web, "Patient", token="not-a-token", address="192.0.2.77").status_code == 401


def test_token_endpoint_has_its_own_lower_limit_per_address(web: FlaskClient) -> None:
    form = {"grant_type": "password", "username": "ide.demo", "password": "guess"}
    answers = [web.post("/auth/token", data=form, environ_base={"REMOTE_ADDR": "203.0.113.7"}) for _ in range(3)]
    assert statuses(answers) == [400, 400, 429]  # two guesses a minute, then refused before any check
    throttled(answers[2])
    problem = answers[2].get_json()
    assert answers[2].mimetype == "application/problem+json"
    assert problem["status"] == 429 and "token requests from this address" in problem["title"]
    assert web.post("/auth/token", data=form, environ_base={"REMOTE_ADDR": "203.0.113.8"}).status_code == 400
    assert fhir(web, address="203.0.113.7").status_code == 200  # the API bucket of that address is apart


def test_health_probes_are_not_limited(web: FlaskClient) -> None:
    assert all(web.get("/healthz").status_code == 200 for _ in range(20))


def test_a_refusal_is_logged_once_a_minute_without_the_query(web: FlaskClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dui.security")
    for _ in range(3):
        fhir(web)
    for _ in range(5):
        throttled(fhir(web, "Patient?family=Quintal&birthdate=1932-04-05"))
    lines = [r for r in caplog.records if r.name == "dui.security"]
    assert len(lines) == 1
    line = lines[0]
    assert line.getMessage() == "rate limited"
    assert vars(line)["bucket"] == "api" and vars(line)["remote"] == "192.0.2.1"
    assert vars(line)["path"] == "/fhir/Patient" and vars(line)["refused"] == 1
    standard = vars(logging.makeLogRecord({}))  # name, timings, thread...: a float may hold any digits
    logged = str({k: v for k, v in vars(line).items() if k not in standard or k in ("msg", "args")})
    assert "Quintal" not in logged and "1932" not in logged


def test_each_backend_counts_where_the_settings_say(limited_app: Flask, backend: str) -> None:
    limiter = limited_app.extensions["dui.ratelimit"]
    if backend == "postgresql":
        assert isinstance(limiter, SharedRateLimiter) and limiter.name == "PostgreSQL"
    else:
        assert isinstance(limiter, InProcessRateLimiter)


@pytest.mark.parametrize("store", ["database", "redis"])
def test_two_servers_share_one_count(database_url: str, backend: str, store: str, request: pytest.FixtureRequest,
                                     tmp_path: Path) -> None:
    """Two apps on one database (or one Redis) stand for two workers or two servers: a client's requests are
    counted once, wherever they land. On SQLite without Redis each process counts on its own."""
    if store == "database" and backend == "sqlite":
        pytest.skip("SQLite: each process counts on its own (no shared counter without DUI_REDIS_URL)")
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    settings = settings_for(database_url, rate=LIMITS, redis_url=redis_url,
                            auth=AuthSettings(dev_key_dir=str(tmp_path / "keys")))
    first, second = create_app(settings), create_app(settings)
    try:
        empty_database(first)
        assert first.extensions["dui.ratelimit"].name == ("Redis" if redis_url else "PostgreSQL")
        one, two = first.test_client(), second.test_client()
        assert statuses([fhir(one), fhir(two), fhir(one)]) == [200, 200, 200]
        refused = [fhir(two), fhir(one)]
        assert statuses(refused) == [429, 429]
        # The bucket's next token comes in a minute; Redis's window (3 per 180 s) frees its first place later.
        low, high = (55, 60) if store == "database" else (175, 180)
        assert all(low <= int(r.headers["Retry-After"]) <= high for r in refused)
        form = {"grant_type": "password", "username": "ide.demo", "password": "guess"}
        guesses = [web.post("/auth/token", data=form, environ_base={"REMOTE_ADDR": "203.0.113.7"})
                   for web in (one, two, one, two)]
        assert statuses(guesses) == [400, 400, 429, 429]
    finally:
        first.extensions["dui"].dispose()
        second.extensions["dui"].dispose()


def _app_with(database_url: str, proxies: str) -> Flask:
    return create_app(settings_for(database_url, rate=RateLimits(per_minute=1, burst=1, auth_per_minute=1,
                                                                 auth_burst=1),
                                   http=HttpSettings(trusted_proxies=proxy_networks(proxies))))


@pytest.mark.parametrize("proxies", ["", "10.9.9.9, 2001:db8::/32"])
def test_a_forged_forwarded_for_from_a_peer_that_is_not_a_listed_proxy_gets_no_fresh_bucket(
        database_url: str, proxies: str) -> None:
    """The backend port reached directly: X-Forwarded-For is the client's word, and names no one."""
    app = _app_with(database_url, proxies)
    try:
        empty_database(app)
        web = app.test_client()
        assert fhir(web, address="10.1.1.1", **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
        throttled(fhir(web, address="10.1.1.1", **{"X-Forwarded-For": "203.0.113.2"}))
        throttled(fhir(web, address="10.1.1.1", **{"X-Forwarded-For": "10.9.9.9"}))
    finally:
        app.extensions["dui"].dispose()


def test_behind_a_listed_proxy_the_client_is_the_entry_the_proxy_wrote(database_url: str) -> None:
    app = _app_with(database_url, "10.1.1.1")
    try:
        empty_database(app)
        web = app.test_client()
        assert fhir(web, address="10.1.1.1", **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
        assert fhir(web, address="10.1.1.1", **{"X-Forwarded-For": "203.0.113.2"}).status_code == 200
        # The client wrote an address of its own to the left of the proxy's entry: it is not read.
        throttled(fhir(web, address="10.1.1.1", **{"X-Forwarded-For": "6.6.6.6, 203.0.113.1"}))
        # The audit trail records the client's address, not the proxy's, nor the one the client wrote.
        form = {"grant_type": "password", "username": "ide.demo", "password": "guess"}
        answer = web.post("/auth/token", data=form, headers={"X-Forwarded-For": "7.7.7.7, 203.0.113.9"},
                          environ_base={"REMOTE_ADDR": "10.1.1.1"})
        assert answer.status_code == 400
        with app.extensions["dui"].engine.connect() as conn:
            sources = conn.execute(text("SELECT source FROM audit_event WHERE action = 'login'")).scalars().all()
        assert sources == ["203.0.113.9"]
    finally:
        app.extensions["dui"].dispose()


# -- security headers -----------------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(web: FlaskClient) -> None:
    answers = [fhir(web), fhir(web, "Patient/nope"), web.post("/auth/token", data={}), web.get("/healthz"),
               web.get("/nowhere"), fhir(web), fhir(web)]
    assert statuses(answers) == [200, 404, 400, 200, 404, 200, 429]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.path, name)
        assert "Strict-Transport-Security" not in answer.headers  # dev: http
        assert "Server" not in answer.headers


def test_production_adds_strict_transport_security(database_url: str, tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    key.write_bytes(ec256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key.chmod(0o600)
    app = create_app(settings_for(database_url, env="prod", base_url="https://dui.example.org",
                                  auth=AuthSettings(signing_key=str(key))))
    try:
        web = app.test_client()
        for answer in (web.get("/healthz"), fhir(web, "Patient"), fhir(web)):
            assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert answer.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    finally:
        app.extensions["dui"].dispose()
