"""CORS: nothing unless DUI_CORS_ORIGINS lists origins; then exact matches only, and preflights of /fhir and
/auth/token answered before authentication and rate limits (Fetch standard, "CORS protocol")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dui.app import create_app
from dui.settings import AuthSettings, HttpSettings, RateLimits
from tests.authkit import ec256
from tests.conftest import test_settings as settings_for
from tests.helpers import FHIR_JSON, outcome_codes

APP = "https://app.example.org"
LOCAL = "http://localhost:3000"
FHIR_HEADERS = "authorization, content-type, if-match, if-none-exist, prefer"


@pytest.fixture(scope="module")
def cors_app(database_url: str) -> Iterator[Flask]:
    app = create_app(settings_for(database_url, http=HttpSettings(cors_origins=(APP, LOCAL))))
    yield app
    app.extensions["dui"].dispose()


@pytest.fixture
def web(cors_app: Flask) -> FlaskClient:
    return cors_app.test_client()


def preflight(web: FlaskClient, path: str, origin: str, method: str = "POST",
              headers: str | None = FHIR_HEADERS) -> TestResponse:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    return web.options(path, headers=asked)


def no_cors(response: TestResponse) -> None:
    assert not [h for h, _ in response.headers.items() if h.lower().startswith("access-control-")], response.headers


@pytest.mark.parametrize("origin", [APP, LOCAL])
@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir", "/fhir/Patient/123/_history"])
def test_preflight_of_an_allowed_origin(web: FlaskClient, origin: str, path: str) -> None:
    answer = preflight(web, path, origin, "PUT")
    assert answer.status_code == 204, answer.get_data(as_text=True)
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    methods = {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
    allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "if-none-exist", "prefer"} <= allowed
    assert "Origin" in answer.headers["Vary"]
    assert answer.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert answer.get_data() == b""


def test_preflight_of_the_token_endpoint(web: FlaskClient) -> None:
    answer = preflight(web, "/auth/token", APP, "POST", "content-type")
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    refused = preflight(web, "/auth/token", APP, "GET", None)
    assert refused.status_code == 403
    assert "allowed: POST" in refused.get_json()["title"]


@pytest.mark.parametrize("origin", ["https://evil.example.org", "https://app.example.org.evil.org",
                                    "http://app.example.org", "https://app.example.org:8443", "null",
                                    "https://APP.example.org/", ""])
def test_preflight_of_any_other_origin_is_refused(web: FlaskClient, origin: str) -> None:
    answer = preflight(web, "/fhir/Patient", origin)
    assert answer.status_code == 403
    assert outcome_codes(answer) == ["forbidden"]
    no_cors(answer)
    assert "Origin" in answer.headers["Vary"]


def test_preflight_asking_for_other_methods_or_headers_is_refused(web: FlaskClient) -> None:
    assert preflight(web, "/fhir/Patient", APP, "TRACE").status_code == 403
    answer = preflight(web, "/fhir/Patient", APP, "GET", "authorization, x-secret, cookie")
    assert answer.status_code == 403
    assert "cookie, x-secret" in answer.get_json()["issue"][0]["diagnostics"]


def test_actual_requests_get_the_origin_back_only_when_it_is_allowed(web: FlaskClient) -> None:
    allowed = web.get("/fhir/metadata", headers={"Origin": APP, "Accept": FHIR_JSON})
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP
    assert "Location" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = web.get("/fhir/metadata", headers={"Origin": "https://evil.example.org", "Accept": FHIR_JSON})
    assert other.status_code == 200  # the browser, not the server, withholds the answer from the page
    no_cors(other)
    assert "Origin" in other.headers["Vary"]
    assert web.get("/fhir/Patient/nope", headers={"Origin": APP}).headers["Access-Control-Allow-Origin"] == APP


def test_preflights_are_answered_before_authentication_and_rate_limits(database_url: str, tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    key.write_bytes(ec256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key.chmod(0o600)
    app = create_app(settings_for(database_url, env="prod", base_url="https://dui.example.org",
                                  auth=AuthSettings(signing_key=str(key)), http=HttpSettings(cors_origins=(APP,)),
                                  rate=RateLimits(per_minute=1, burst=1)))
    try:
        web = app.test_client()
        assert all(preflight(web, "/fhir/Patient", APP, "GET").status_code == 204 for _ in range(5))
        unauthenticated = web.get("/fhir/Patient", headers={"Origin": APP, "Accept": FHIR_JSON})
        assert unauthenticated.status_code == 401  # the browser's JS can read why
        assert unauthenticated.headers["Access-Control-Allow-Origin"] == APP
        assert "WWW-Authenticate" in unauthenticated.headers["Access-Control-Expose-Headers"]
        throttled = web.get("/fhir/Patient", headers={"Origin": APP, "Accept": FHIR_JSON})
        assert throttled.status_code == 429
        assert throttled.headers["Access-Control-Allow-Origin"] == APP  # Retry-After readable by the page
    finally:
        app.extensions["dui"].dispose()


def test_without_configured_origins_there_is_no_cors(client: object, app: Flask) -> None:
    web = app.test_client()
    answer = preflight(web, "/fhir/Patient", APP)
    no_cors(answer)
    assert answer.status_code == 200  # Flask's own OPTIONS answer: the browser refuses the cross-origin call
    plain = web.get("/fhir/metadata", headers={"Origin": APP})
    no_cors(plain)
    assert "Vary" not in plain.headers or "Origin" not in plain.headers["Vary"]
