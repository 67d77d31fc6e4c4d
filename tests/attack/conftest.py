"""The world the attack tests run against: the demo data (EHPAD Les Tilleuls, EHPAD Le Parc, a partner
hospital), local accounts for every role at Les Tilleuls and a nurse at Le Parc, and API clients, each with a
real access token from ``/auth/token``. Requests go over HTTP (Flask's test client) as an attacker's would.

Built once per database for the whole package; tests that write put back what they change or use records of
their own, so that each test can run alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dui.app import create_app
from dui.auth.roles import ROLES
from dui.db import analyze
from dui.demo.data import ESTABLISHMENTS, HOSPITAL
from dui.settings import AuthSettings
from tests.authkit import client_jwks, token_form, write_json
from tests.conftest import BASE_URL, empty_database
from tests.conftest import test_settings as settings_for

TILLEULS, PARC = ESTABLISHMENTS[0]["finess"], ESTABLISHMENTS[1]["finess"]
TILLEULS_ORG, PARC_ORG, HOSPITAL_ORG = ESTABLISHMENTS[0]["id"], ESTABLISHMENTS[1]["id"], HOSPITAL["id"]
HOSPITAL_FINESS = HOSPITAL["finess"]
FINESS_SYSTEM = "https://finess.esante.gouv.fr"
PASSWORD = "Attaque-des-droits-2026!"
FHIR_JSON = "application/fhir+json"
RESIDENTS = 6  # demo-resident-001..006: odd ones at Le Parc, even ones at Les Tilleuls


def tilleuls_residents() -> list[str]:
    return [f"demo-resident-{i:03d}" for i in range(1, RESIDENTS + 1) if i % 2 == 0]


def parc_residents() -> list[str]:
    return [f"demo-resident-{i:03d}" for i in range(1, RESIDENTS + 1) if i % 2 == 1]


@dataclass
class World:
    app: Flask
    web: FlaskClient
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, who: str | None, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None, content_type: str = FHIR_JSON) -> TestResponse:
        """``who``: a key of ``tokens`` (``t.medecin``, ``p.infirmier``, ``hospital``...), or None for the CLI-like
        anonymous caller of development (unrestricted)."""
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        if who is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[who]}"
        data: Any = None
        if body is not None:
            data = body if isinstance(body, str | bytes) else _json(body)
            all_headers.setdefault("Content-Type", content_type)
        return self.web.open(f"/fhir/{path}", method=method, data=data, headers=all_headers)

    def get(self, who: str | None, path: str, **kw: Any) -> TestResponse:
        return self.call(who, "GET", path, **kw)

    def ids(self, who: str | None, path: str) -> set[str]:
        """``Type/id`` of every entry of a search answered 200."""
        answer = self.get(who, path)
        assert answer.status_code == 200, (who, path, answer.get_data(as_text=True))
        return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in answer.get_json().get("entry", [])
                if e.get("search", {}).get("mode") != "outcome"}

    def resource(self, path: str) -> dict[str, Any]:
        answer = self.get(None, path)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return dict(answer.get_json())

    def put_back(self, path: str, original: dict[str, Any]) -> None:
        """Restore a resource a test changed (as the unrestricted caller), its tags and profiles too."""
        meta = {k: v for k, v in original.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        body = {**{k: v for k, v in original.items() if k != "meta"}, **({"meta": meta} if meta else {})}
        answer = self.call(None, "PUT", path, body)
        assert answer.status_code in (200, 201), answer.get_data(as_text=True)


def _json(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


def build_world(app: Flask, tmp: Path, residents: list[int] | None = None,
                callers: frozenset[str] | None = None) -> World:
    """Load the demo (``residents``: which resident bundles, default all) and make every account and client, or only
    those of ``callers`` (keys of ``World.tokens``): an account costs two scrypt hashes, its creation and its
    token, some 0.3 s."""
    empty_database(app)
    runner = app.test_cli_runner()
    if residents is None:
        loaded = runner.invoke(args=["demo", "load", "--residents", str(RESIDENTS)])
        assert loaded.exit_code == 0, loaded.output
    else:
        from datetime import date

        from dui.auth.actor import CLI
        from dui.demo.data import resident_bundle, room_entries, setup_bundle
        from dui.demo.load import load_bundle

        svc = app.extensions["dui"]
        # The rooms and sensors of the residents left out are there all the same: they are the establishment's, and
        # the worlds must differ by residents only (tests/attack/test_scope_property.py)
        rooms = {"resourceType": "Bundle", "type": "transaction", "entry": [
            e for i in range(1, RESIDENTS + 1) if i not in residents for e in room_entries(i)]}
        for bundle in [setup_bundle(), rooms, *(resident_bundle(i, date.today()) for i in residents)]:
            with svc.unit_of_work(write=True) as session:
                load_bundle(svc.fhir_context(session, CLI), bundle)
        analyze(svc.engine)  # as `dui demo load` does
    world = World(app, app.test_client())
    accounts = [(f"t.{role}", role, TILLEULS) for role in ROLES] + [
        ("p.infirmier", "infirmier", PARC), ("p.administratif", "administratif", PARC)]
    for login, role, finess in accounts:
        if callers is not None and login not in callers:
            continue
        made = runner.invoke(args=["users", "create", login, "--role", role, "--establishment", finess,
                                   "--password-stdin"], input=PASSWORD + "\n")
        assert made.exit_code == 0, made.output
        answer = world.web.post("/auth/token", data={"grant_type": "password", "username": login,
                                                     "password": PASSWORD})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        world.tokens[login] = answer.get_json()["access_token"]
    jwks = write_json(tmp / "jwks.json", client_jwks())
    clients = (("hospital", "system/*.cruds", HOSPITAL_FINESS), ("t.client", "system/Patient.rs", TILLEULS),
               ("t.writer", "system/*.cruds", TILLEULS), ("group", "system/*.rs", None))
    for name, scope, finess in clients:
        if callers is not None and name not in callers:
            continue
        args = ["clients", "create", name, "--scope", scope, "--jwks-file", str(jwks)]
        if finess:
            args += ["--establishment", finess]
        made = runner.invoke(args=args)
        assert made.exit_code == 0, made.output
        client_id = made.stdout.strip()
        answer = world.web.post("/auth/token", data=token_form(client_id, BASE_URL + "/auth/token", scope))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        world.tokens[name] = answer.get_json()["access_token"]
    return world


def world_app(database_url: str, tmp: Path) -> Flask:
    return create_app(settings_for(database_url, auth=AuthSettings(dev_key_dir=str(tmp / "keys"),
                                                                    token_lifetime=3600)))


@pytest.fixture(scope="package")
def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("attack")
    app = world_app(database_url, tmp)
    yield build_world(app, tmp)
    app.extensions["dui"].dispose()
