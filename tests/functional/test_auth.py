"""Authentication end to end, through the Flask test client and the CLI runner, on SQLite and PostgreSQL.

SMART App Launch 2.x Backend Services (client_credentials + private_key_jwt), RFC 6749 §5 answers, RFC 6750
bearer refusals, the local password grant, and the SMART configuration document. The actor a request
resolves to is observed through a route this module adds to its own app (the app itself has no such route).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask, Response, jsonify
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dui.app import create_app
from dui.auth import passwords
from dui.auth.tokens import TokenError
from dui.settings import AuthSettings
from tests.authkit import (
    ASSERTION_TYPE,
    PARC,
    TILLEULS,
    assertion,
    client_jwks,
    ec384,
    psc_config,
    rsa2048,
    sign,
    token_form,
    unsigned,
    write_json,
)
from tests.conftest import BASE_URL, empty_database
from tests.conftest import test_settings as settings_for
from tests.helpers import FHIR_JSON, outcome_codes, patient

TOKEN_URL = BASE_URL + "/auth/token"
PASSWORD = "Tilleuls-2026!"


def add_actor_route(app: Flask) -> None:
    """A route of the tests only: the actor the request was authenticated as."""
    from dui.web.context import current_actor

    @app.get("/_test/actor")
    def actor() -> Response:
        a = current_actor()
        return jsonify(kind=a.kind, id=a.id, roles=sorted(a.roles), establishment=a.establishment,
                       scopes=str(a.scopes), client_id=a.client_id, auth_method=a.auth_method, issuer=a.issuer,
                       token_id=a.token_id)


@pytest.fixture(scope="module")
def auth_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp = tmp_path_factory.mktemp("auth")
    app = create_app(settings_for(database_url, auth=AuthSettings(dev_key_dir=str(tmp / "keys"),
                                                                   oidc_issuers=str(psc_config(tmp)))))
    add_actor_route(app)
    yield app
    app.extensions["dui"].dispose()


@pytest.fixture
def http(auth_app: Flask) -> FlaskClient:
    empty_database(auth_app)
    return auth_app.test_client()


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "client.jwks.json", client_jwks())


def register(app: Flask, jwks_file: Path, scope: str = "system/Patient.rs system/Observation.rs",
             establishment: str | None = TILLEULS, name: str = "Hôpital Nord-Ouest") -> str:
    args = ["clients", "create", name, "--scope", scope, "--jwks-file", str(jwks_file)]
    if establishment:
        args += ["--establishment", establishment]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    client_id = result.stdout.strip()
    assert len(client_id) == 36, result.stdout
    return client_id


def ask(http: FlaskClient, form: dict[str, Any]) -> TestResponse:
    return http.post("/auth/token", data=form)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}


def refused(response: TestResponse, error: str, status: int, reason: str = "") -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == error, body
    assert reason in body["error_description"], body


def invalid_token(response: TestResponse, reason: str) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="dui", error="invalid_token", error_description="'), challenge
    assert reason in challenge, challenge
    assert outcome_codes(response) == ["login"]


# -- SMART configuration ------------------------------------------------------------------------------------


def test_smart_configuration_describes_the_token_endpoint(http: FlaskClient) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        conf = http.get(path).get_json()
        assert conf["token_endpoint"] == TOKEN_URL and conf["issuer"] == BASE_URL
        assert conf["jwks_uri"] == BASE_URL + "/auth/jwks"
        assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert {"ES384", "RS384"} <= set(conf["token_endpoint_auth_signing_alg_values_supported"])
        assert not {"none", "HS256"} & set(conf["token_endpoint_auth_signing_alg_values_supported"])
        assert conf["grant_types_supported"][0] == "client_credentials"
        assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(conf["capabilities"])
        assert "system/*.rs" in conf["scopes_supported"]
    keys = http.get("/auth/jwks").get_json()["keys"]
    assert len(keys) == 1 and keys[0]["alg"] == "ES256" and "d" not in keys[0]


# -- SMART Backend Services, end to end -----------------------------------------------------------------------


def test_backend_client_gets_a_token_and_reads_fhir_as_itself(auth_app: Flask, http: FlaskClient,
                                                             jwks_file: Path) -> None:
    client_id = register(auth_app, jwks_file)
    for kw in ({}, {"key": rsa2048(), "alg": "RS384", "kid": "rsa-1"}):
        answer = ask(http, token_form(client_id, TOKEN_URL, "system/Patient.read system/Observation.rs", **kw))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.headers["Cache-Control"] == "no-store"
        body = answer.get_json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 300
        assert body["scope"] == "system/Patient.read system/Observation.rs"
        token = body["access_token"]
        public = jwt.PyJWKSet.from_dict(http.get("/auth/jwks").get_json()).keys[0]
        claims = jwt.decode(token, public, algorithms=["ES256"], audience=BASE_URL + "/fhir", issuer=BASE_URL)
        assert claims["sub"] == client_id == claims["client_id"] and claims["kind"] == "client"
        assert claims["establishment"] == TILLEULS and claims["roles"] == []
        me = http.get("/_test/actor", headers=bearer(token)).get_json()
        assert me == {"kind": "client", "id": client_id, "roles": [], "establishment": TILLEULS,
                      "scopes": "system/Patient.read system/Observation.rs", "client_id": client_id,
                      "auth_method": "private_key_jwt", "issuer": BASE_URL, "token_id": claims["jti"]}
    created = http.post("/fhir/Patient", json=patient(), headers={**bearer(token), "Content-Type": FHIR_JSON})
    assert created.status_code in (201, 403), created.get_data(as_text=True)  # 403 once the policy checks scopes
    assert http.get("/fhir/Patient?name=lefevre", headers=bearer(token)).status_code == 200


def test_scopes_granted_are_those_the_client_is_registered_for(auth_app: Flask, http: FlaskClient,
                                                               jwks_file: Path) -> None:
    client_id = register(auth_app, jwks_file, scope="system/Patient.rs system/Observation.cruds")
    granted = ask(http, token_form(client_id, TOKEN_URL, "system/*.rs system/Condition.rs")).get_json()
    assert granted["scope"] == "system/Patient.rs system/Observation.rs"
    refused(ask(http, token_form(client_id, TOKEN_URL, "system/Condition.rs")), "invalid_scope", 400,
            "None of the requested scopes")
    refused(ask(http, token_form(client_id, TOKEN_URL, "user/Patient.rs")), "invalid_scope", 400)
    refused(ask(http, token_form(client_id, TOKEN_URL, "system/Patient.rs?gender=female")), "invalid_scope", 400,
            "granular")
    refused(ask(http, token_form(client_id, TOKEN_URL, "")), "invalid_scope", 400, "scope is required")


def test_token_requests_refused_with_rfc6749_errors(auth_app: Flask, http: FlaskClient, jwks_file: Path) -> None:
    client_id = register(auth_app, jwks_file)
    good = token_form(client_id, TOKEN_URL)
    refused(http.post("/auth/token", json=good), "invalid_request", 400, "x-www-form-urlencoded")
    refused(ask(http, {k: v for k, v in good.items() if k != "grant_type"}), "invalid_request", 400)
    refused(ask(http, {**good, "grant_type": "authorization_code"}), "unsupported_grant_type", 400)
    refused(http.post("/auth/token", data="grant_type=client_credentials&grant_type=password",
                      content_type="application/x-www-form-urlencoded"), "invalid_request", 400, "repeated")
    refused(ask(http, {**good, "client_assertion_type": "urn:other"}), "invalid_client", 401, "private_key_jwt")
    refused(ask(http, {k: v for k, v in good.items() if k != "client_assertion"}), "invalid_client", 401)
    refused(ask(http, {**good, "client_id": "someone-else"}), "invalid_client", 401, "does not match")
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": "n"}
    cases = [
        (unsigned(claims), "alg: none"),
        (assertion(client_id, TOKEN_URL, aud=BASE_URL + "/fhir"), "wrong audience"),
        (assertion(client_id, TOKEN_URL, exp_in=600), "more than 5 minutes ahead"),
        (assertion(client_id, TOKEN_URL, exp_in=-300), "expired"),
        (assertion(client_id, TOKEN_URL, kid="nope"), "unknown key"),
        (assertion(client_id, TOKEN_URL, sub="x"), "sub must equal iss"),
        (assertion("5f0c8a47-0000-4000-8000-000000000000", TOKEN_URL), "unknown client"),
        (assertion(client_id, TOKEN_URL, drop=("jti",)), "jti claim is missing"),
        (sign(claims, rsa2048(), "RS384", "ec-1"), "cannot verify RS384"),
    ]
    for token, reason in cases:
        refused(ask(http, {**good, "client_assertion": token}), "invalid_client", 401, reason)


def test_a_client_assertion_is_used_once(auth_app: Flask, http: FlaskClient, jwks_file: Path) -> None:
    client_id = register(auth_app, jwks_file)
    form = token_form(client_id, TOKEN_URL, jti="only-once")
    assert ask(http, form).status_code == 200
    refused(ask(http, form), "invalid_client", 401, "replayed")
    refused(ask(http, token_form(client_id, TOKEN_URL, jti="only-once")), "invalid_client", 401, "replayed")
    assert ask(http, token_form(client_id, TOKEN_URL, jti="another")).status_code == 200


def test_concurrent_requests_with_one_assertion_give_exactly_one_token(auth_app: Flask, http: FlaskClient,
                                                                      jwks_file: Path) -> None:
    """Twenty threads send the same assertion at once: the UNIQUE constraint on used_jti lets one through."""
    client_id = register(auth_app, jwks_file)
    form = token_form(client_id, TOKEN_URL, jti="raced")
    barrier = threading.Barrier(20)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def request() -> None:
        mine = auth_app.test_client()
        barrier.wait()
        response = mine.post("/auth/token", data=form)
        with lock:
            answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=request) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 20
    assert sorted(status for status, _ in answers) == [200] + [401] * 19, answers
    assert all("replayed" in body["error_description"] for status, body in answers if status == 401)


def test_disabling_a_client_stops_its_tokens(auth_app: Flask, http: FlaskClient, jwks_file: Path) -> None:
    client_id = register(auth_app, jwks_file)
    token = ask(http, token_form(client_id, TOKEN_URL)).get_json()["access_token"]
    assert http.get("/_test/actor", headers=bearer(token)).status_code == 200
    runner = auth_app.test_cli_runner()
    listed = runner.invoke(args=["clients", "list"])
    assert client_id in listed.output and "enabled" in listed.output and "Hôpital Nord-Ouest" in listed.output
    assert runner.invoke(args=["clients", "disable", client_id]).exit_code == 0
    assert "disabled" in runner.invoke(args=["clients", "list"]).output
    invalid_token(http.get("/fhir/Patient", headers=bearer(token)), "disabled")
    refused(ask(http, token_form(client_id, TOKEN_URL)), "invalid_client", 401, "disabled client")
    missing = runner.invoke(args=["clients", "disable", "no-such-client"])
    assert missing.exit_code == 1 and "no client" in missing.output


def test_a_verified_token_is_remembered_until_it_expires(auth_app: Flask, http: FlaskClient, jwks_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    auth = auth_app.extensions["dui"].authenticator
    client_id = register(auth_app, jwks_file)
    token = ask(http, token_form(client_id, TOKEN_URL)).get_json()["access_token"]
    first = auth.verify(token)
    checks: list[str] = []
    real = auth.tokens.verify
    monkeypatch.setattr(auth.tokens, "verify", lambda *a: checks.append("signature") or real(*a))
    assert auth.verify(token) == first and checks == []  # no second signature check
    later = auth.clock() + timedelta(seconds=300 + 31)
    monkeypatch.setattr(auth, "clock", lambda: later)
    with pytest.raises(TokenError, match="expired"):
        auth.verify(token)
    assert checks == ["signature"]


def test_client_registration_checks_its_input(auth_app: Flask, http: FlaskClient, tmp_path: Path) -> None:
    runner = auth_app.test_cli_runner()
    private = jwt.algorithms.ECAlgorithm.to_jwk(ec384(), as_dict=True) | {"kid": "k"}
    cases = [
        (["--scope", "system/Patient.rs", "--jwks-file", str(write_json(tmp_path / "p.json", {"keys": [private]}))],
         "private members"),
        (["--scope", "system/Patient.rs", "--jwks-file", str(write_json(tmp_path / "e.json", {"keys": []}))],
         "at least one key"),
        (["--scope", "user/Patient.rs", "--jwks-file", str(write_json(tmp_path / "c.json", client_jwks()))],
         "system/ scopes only"),
        (["--scope", "system/Patient.sr", "--jwks-file", str(tmp_path / "c.json")], "in that order"),
        (["--scope", "system/Patient.rs", "--jwks-file", str(tmp_path / "c.json"), "--establishment", "690001424"],
         "key"),
    ]
    for args, reason in cases:
        result = runner.invoke(args=["clients", "create", "X", *args])
        assert result.exit_code == 1, result.output
        assert reason in result.output, result.output
    assert "no client registered" in runner.invoke(args=["clients", "list"]).output


# -- bearer tokens on /fhir -------------------------------------------------------------------------------------


def test_bad_bearer_tokens_are_401_with_the_reason(auth_app: Flask, http: FlaskClient) -> None:
    key = auth_app.extensions["dui"].authenticator.signing_key
    now = int(time.time())
    base = {"iss": BASE_URL, "aud": BASE_URL + "/fhir", "sub": "c", "iat": now, "exp": now + 60, "jti": "j",
            "scope": "system/Patient.rs", "kind": "client", "roles": []}

    def ours(**changes: Any) -> str:
        return sign({**base, **changes}, key.private_key, "ES256", key.kid)

    cases = [
        (ours(exp=now - 120), "expired"),
        (ours(nbf=now + 600), "not yet valid"),
        (ours(aud="https://elsewhere/fhir"), "wrong audience"),
        (ours(iss="https://elsewhere"), "wrong issuer"),
        (sign(base, key.private_key, "ES256", "other-kid"), "unknown key"),
        (sign(base, ec384(), "ES384", key.kid), "algorithm not accepted"),
        (unsigned(base, kid=key.kid), "alg: none"),
        (ours()[:-4] + "AAAA", "bad signature"),
        ("not-a-token", "malformed"),
    ]
    for token, reason in cases:
        invalid_token(http.get("/fhir/Patient", headers=bearer(token)), reason)
    invalid_token(http.get("/fhir/Patient", headers={"Authorization": "Basic dXNlcjpwdw=="}), "Bearer")
    response = http.get("/_test/actor", headers=bearer(ours(exp=now - 120)))
    assert response.status_code == 401 and response.get_json()["status"] == 401  # problem JSON outside /fhir


def test_without_a_token_anonymous_only_where_allowed(database_url: str, http: FlaskClient,
                                                      tmp_path: Path) -> None:
    assert http.get("/_test/actor").get_json()["kind"] == "anonymous"  # dev default
    closed = create_app(settings_for(database_url, auth=AuthSettings(dev_key_dir=str(tmp_path),
                                                                      allow_anonymous=False)))
    try:
        web = closed.test_client()
        response = web.get("/fhir/Patient", headers={"Accept": FHIR_JSON})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="dui"'
        assert outcome_codes(response) == ["login"]
        assert web.get("/fhir/metadata").status_code == 200  # the CapabilityStatement stays public
        assert web.get("/.well-known/smart-configuration").status_code == 200
    finally:
        closed.extensions["dui"].dispose()


# -- local accounts and the password grant ----------------------------------------------------------------------


def create_user(app: Flask, login: str = "ide.martin", role: str = "infirmier", establishment: str = TILLEULS,
                password: str = PASSWORD) -> Any:
    return app.test_cli_runner().invoke(args=["users", "create", login, "--role", role, "--establishment",
                                              establishment, "--password-stdin"], input=password + "\n")


def test_password_grant_gives_a_staff_token(auth_app: Flask, http: FlaskClient) -> None:
    created = create_user(auth_app)
    assert created.exit_code == 0, created.output
    answer = ask(http, {"grant_type": "password", "username": "IDE.Martin", "password": PASSWORD})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["scope"] == "user/*.cruds" and body["token_type"] == "bearer"
    me = http.get("/_test/actor", headers=bearer(body["access_token"])).get_json()
    assert (me["kind"], me["id"], me["roles"], me["establishment"], me["auth_method"]) == (
        "staff", "ide.martin", ["infirmier"], TILLEULS, "password")
    narrowed = ask(http, {"grant_type": "password", "username": "ide.martin", "password": PASSWORD,
                          "scope": "user/Observation.rs"}).get_json()
    assert narrowed["scope"] == "user/Observation.rs"
    refused(ask(http, {"grant_type": "password", "username": "ide.martin", "password": PASSWORD,
                       "scope": "system/*.rs"}), "invalid_scope", 400)
    refused(ask(http, {"grant_type": "password", "username": "ide.martin"}), "invalid_request", 400)


def test_password_grant_failures_look_alike_and_cost_the_same(auth_app: Flask, http: FlaskClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_user(auth_app).exit_code == 0
    assert create_user(auth_app, login="as.durand", role="aide-soignant").exit_code == 0
    assert auth_app.test_cli_runner().invoke(args=["users", "disable", "as.durand"]).exit_code == 0
    computed: list[int] = []
    real = passwords._scrypt
    monkeypatch.setattr(passwords, "_scrypt", lambda *a: computed.append(1) or real(*a))
    answers = []
    for login, password in [("ide.martin", "Wrong-password-1"), ("nobody", PASSWORD), ("as.durand", PASSWORD),
                            ("NOT A LOGIN!", PASSWORD)]:
        computed.clear()
        response = ask(http, {"grant_type": "password", "username": login, "password": password})
        answers.append((response.status_code, response.get_json()))
        assert len(computed) == 1, login  # one scrypt computation whether the account exists or not
    assert all(answer == (400, {"error": "invalid_grant", "error_description": "The login or the password is "
                                "incorrect"}) for answer in answers), answers


def test_user_commands(auth_app: Flask, http: FlaskClient) -> None:
    runner = auth_app.test_cli_runner()
    prompted = runner.invoke(args=["users", "create", "dr.roux", "--role", "medecin", "--role", "direction",
                                   "--establishment", PARC], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert PASSWORD not in prompted.output  # not echoed
    assert "medecin, direction" in prompted.output
    mismatch = runner.invoke(args=["users", "create", "dr.blanc", "--role", "medecin", "--establishment", PARC],
                             input=f"{PASSWORD}\nsomething-else\n{PASSWORD}\n{PASSWORD}\n")
    assert "do not match" in mismatch.output and mismatch.exit_code == 0
    for args, password, reason in [
        (["x.weak", "--role", "medecin", "--establishment", PARC], "short", "at least 12"),
        (["dr.roux", "--role", "medecin", "--establishment", PARC], PASSWORD, "taken"),
        (["x.bad", "--role", "medecin", "--establishment", "123"], PASSWORD, "9 characters"),
        (["x.role", "--role", "chirurgien", "--establishment", PARC], PASSWORD, "chirurgien"),
        (["x y", "--role", "medecin", "--establishment", PARC], PASSWORD, "a login has"),
    ]:
        result = runner.invoke(args=["users", "create", *args, "--password-stdin"], input=password + "\n")
        assert result.exit_code != 0 and reason in result.output, (args, result.output)
    listed = runner.invoke(args=["users", "list"]).output
    assert "dr.roux" in listed and "dr.blanc" in listed and PARC in listed and "scrypt" not in listed
    changed = runner.invoke(args=["users", "set-password", "dr.roux", "--password-stdin"], input="Parc-du-Rhone-7\n")
    assert changed.exit_code == 0, changed.output
    assert ask(http, {"grant_type": "password", "username": "dr.roux", "password": PASSWORD}).status_code == 400
    renewed = {"grant_type": "password", "username": "dr.roux", "password": "Parc-du-Rhone-7"}
    assert ask(http, renewed).status_code == 200
    assert runner.invoke(args=["users", "set-password", "dr.roux", "--password-stdin"], input="weak\n").exit_code == 1
    assert runner.invoke(args=["users", "set-password", "ghost", "--password-stdin"],
                         input="Parc-du-Rhone-7\n").exit_code == 1
    assert runner.invoke(args=["users", "disable", "dr.roux"]).exit_code == 0
    assert runner.invoke(args=["users", "disable", "ghost"]).exit_code == 1


def test_disabled_account_tokens_stop_working(auth_app: Flask, http: FlaskClient) -> None:
    assert create_user(auth_app).exit_code == 0
    token = ask(http, {"grant_type": "password", "username": "ide.martin", "password": PASSWORD}).get_json()
    assert auth_app.test_cli_runner().invoke(args=["users", "disable", "ide.martin"]).exit_code == 0
    invalid_token(http.get("/fhir/Patient", headers=bearer(token["access_token"])), "disabled")


def test_password_grant_can_be_switched_off(database_url: str, tmp_path: Path) -> None:
    off = create_app(settings_for(database_url, auth=AuthSettings(dev_key_dir=str(tmp_path), password_grant=False)))
    try:
        answer = off.test_client().post("/auth/token", data={"grant_type": "password", "username": "a",
                                                              "password": "b"})
        refused(answer, "unsupported_grant_type", 400, "client_credentials")
        conf = off.test_client().get("/.well-known/smart-configuration").get_json()
        assert "password" not in conf["grant_types_supported"]
    finally:
        off.extensions["dui"].dispose()


def test_no_token_assertion_or_password_in_the_logs(auth_app: Flask, http: FlaskClient, jwks_file: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    client_id = register(auth_app, jwks_file)
    form = token_form(client_id, TOKEN_URL)
    token = ask(http, form).get_json()["access_token"]
    ask(http, form)  # replayed
    http.get("/fhir/Patient", headers=bearer(token))
    http.get("/fhir/Patient", headers=bearer(token + "x"))
    assert create_user(auth_app).exit_code == 0
    ask(http, {"grant_type": "password", "username": "ide.martin", "password": PASSWORD})
    ask(http, {"grant_type": "password", "username": "ide.martin", "password": "Wrong-password-1"})
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "token issued" in logged and "token refused" in logged
    for secret in (token, token.split(".")[2], form["client_assertion"], form["client_assertion"].split(".")[2],
                   PASSWORD, "Wrong-password-1"):
        assert secret not in logged


def test_token_endpoint_needs_a_form_post(http: FlaskClient) -> None:
    assert http.get("/auth/token").status_code == 405
    assert ASSERTION_TYPE.startswith("urn:ietf")
