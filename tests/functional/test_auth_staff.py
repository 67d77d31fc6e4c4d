"""Staff tokens from OIDC issuers (Pro Santé Connect, an establishment's IdP), production refusals, and the
README's "Get a token" steps run as typed (openssl, scripts/client_assertion.py, dui clients create)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from dui.app import create_app
from dui.auth.keys import DevKeyWarning, load_signing_key
from dui.settings import AuthSettings
from tests.authkit import PSC_ISSUER, TILLEULS, ec256, psc_config, psc_token, sign
from tests.conftest import BASE_URL, empty_database
from tests.conftest import test_settings as settings_for
from tests.functional.test_auth import TOKEN_URL, add_actor_route, bearer, invalid_token, refused

ROOT = Path(__file__).resolve().parents[2]
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture(scope="module")
def staff_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp = tmp_path_factory.mktemp("staff")
    app = create_app(settings_for(database_url, auth=AuthSettings(dev_key_dir=str(tmp / "keys"),
                                                                  oidc_issuers=str(psc_config(tmp)),
                                                                  allow_anonymous=False)))
    add_actor_route(app)
    yield app
    app.extensions["dui"].dispose()


@pytest.fixture
def http(staff_app: Flask) -> FlaskClient:
    empty_database(staff_app)
    return staff_app.test_client()


def test_a_pro_sante_connect_token_is_a_staff_actor(http: FlaskClient) -> None:
    me = http.get("/_test/actor", headers=bearer(psc_token())).get_json()
    assert (me["kind"], me["id"], me["roles"], me["establishment"]) == ("staff", "810001234567", ["medecin"],
                                                                        TILLEULS)
    assert me["auth_method"] == "oidc" and me["issuer"] == PSC_ISSUER and me["scopes"] == "user/*.cruds"
    assert http.get("/fhir/Patient", headers=bearer(psc_token(profession="60"))).status_code == 200


def test_an_establishment_idp_token_is_a_staff_actor(http: FlaskClient) -> None:
    now = int(time.time())
    token = sign({"iss": "https://idp.ehpad.test", "aud": "dui", "sub": "u-42", "acr": "mfa", "iat": now,
                  "exp": now + 300, "dui_roles": "aes-amp"}, ec256(), "ES256", "idp-1")
    me = http.get("/_test/actor", headers=bearer(token)).get_json()
    assert (me["id"], me["roles"], me["establishment"]) == ("u-42", ["aes-amp"], TILLEULS)


@pytest.mark.parametrize(("kw", "reason"), [
    ({"acr": "eidas0"}, "insufficient assurance level"),
    ({"aud": "another-service"}, "wrong audience"),
    ({"exp_in": -300}, "expired"),
    ({"kid": "psc-unknown"}, "unknown key"),
    ({"iss": "https://evil.test"}, "wrong issuer"),
])
def test_oidc_tokens_refused(http: FlaskClient, kw: dict[str, object], reason: str) -> None:
    invalid_token(http.get("/fhir/Patient", headers=bearer(psc_token(**kw))), reason)  # type: ignore[arg-type]


def test_a_psc_token_is_exchanged_for_a_token_of_this_server(http: FlaskClient) -> None:
    """CI-SIS SECU-API: the client exchanges the user's PSC token (RFC 8693)."""
    answer = http.post("/auth/token", data={"grant_type": EXCHANGE, "subject_token": psc_token(),
                                            "subject_token_type": ACCESS_TOKEN, "scope": "user/Observation.rs"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["scope"] == "user/Observation.rs"
    me = http.get("/_test/actor", headers=bearer(answer.get_json()["access_token"])).get_json()
    assert (me["kind"], me["id"], me["roles"], me["auth_method"], me["issuer"]) == (
        "staff", "810001234567", ["medecin"], "oidc", PSC_ISSUER)
    refused(http.post("/auth/token", data={"grant_type": EXCHANGE, "subject_token": psc_token(acr="eidas0"),
                                           "subject_token_type": ACCESS_TOKEN}), "invalid_grant", 400, "acr")
    refused(http.post("/auth/token", data={"grant_type": EXCHANGE, "subject_token": psc_token()}),
            "invalid_request", 400, "subject_token_type")
    assert EXCHANGE in http.get("/.well-known/smart-configuration").get_json()["grant_types_supported"]


# -- production --------------------------------------------------------------------------------------------------


def _pem(path: Path) -> str:
    path.write_bytes(ec256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path.chmod(0o600)  # production refuses a key other accounts may read
    return str(path)


def _prod(database_url: str, auth: AuthSettings) -> Flask:
    settings = settings_for(database_url, env="prod", base_url="https://dui.example.org", auth=auth)
    return create_app(settings)


def test_production_refuses_requests_without_a_token(database_url: str, tmp_path: Path) -> None:
    app = _prod(database_url, AuthSettings(signing_key=_pem(tmp_path / "k.pem"), dev_key_dir=str(tmp_path / "dev")))
    try:
        web = app.test_client()
        response = web.get("/fhir/Patient", headers={"Accept": "application/fhir+json"})
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="dui"'
        assert web.get("/fhir/metadata").status_code == 200
        conf = web.get("/.well-known/smart-configuration").get_json()
        assert conf["token_endpoint"] == "https://dui.example.org/auth/token"
        assert conf["grant_types_supported"] == ["client_credentials"]  # no password grant by default in prod
        refused(web.post("/auth/token", data={"grant_type": "password", "username": "a", "password": "b"}),
                "unsupported_grant_type", 400)
    finally:
        app.extensions["dui"].dispose()


def test_production_refuses_a_missing_or_development_signing_key(database_url: str, tmp_path: Path) -> None:
    with pytest.warns(DevKeyWarning):
        dev_key = load_signing_key(None, str(tmp_path / "dev"), prod=False)
    for auth, reason in [(AuthSettings(dev_key_dir=str(tmp_path / "dev")), "DUI_AUTH_SIGNING_KEY is not set"),
                         (AuthSettings(signing_key=str(dev_key.path), dev_key_dir=str(tmp_path / "other")),
                          "development key")]:
        app = _prod(database_url, auth)
        try:
            web = app.test_client()
            answer = web.post("/auth/token", data={"grant_type": "client_credentials"})
            assert answer.status_code == 503 and reason in answer.get_json()["title"], answer.get_json()
            ready = web.get("/readyz")
            if ready.get_json().get("database") == "ok":
                assert ready.status_code == 503 and reason in ready.get_json()["authentication"]
        finally:
            app.extensions["dui"].dispose()


# -- the README's "Get a token", as typed ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_readme_get_a_token_steps(staff_app: Flask, http: FlaskClient, tmp_path: Path) -> None:
    key = tmp_path / "client-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
                    str(key)], check=True, capture_output=True)
    script = [sys.executable, str(ROOT / "scripts" / "client_assertion.py")]
    jwks = subprocess.run([*script, "jwks", str(key)], check=True, capture_output=True, text=True).stdout
    assert json.loads(jwks)["keys"][0]["alg"] == "ES384" and "d" not in json.loads(jwks)["keys"][0]
    (tmp_path / "client.jwks.json").write_text(jwks)
    created = staff_app.test_cli_runner().invoke(args=[
        "clients", "create", "Hôpital de démonstration", "--scope", "system/Patient.rs system/Observation.rs",
        "--jwks-file", str(tmp_path / "client.jwks.json")])
    assert created.exit_code == 0, created.output
    client_id = created.stdout.strip()
    signed = subprocess.run([*script, "assertion", str(key), "--client-id", client_id, "--token-url", TOKEN_URL],
                            check=True, capture_output=True, text=True).stdout.strip()
    answer = http.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    token = answer.get_json()["access_token"]
    assert http.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    assert BASE_URL in TOKEN_URL
