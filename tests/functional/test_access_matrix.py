"""The authorization matrix over HTTP with real staff tokens: role x resource type x action x
establishment, including the paths that leak elsewhere (search, include, history, $everything).

Expected rights come from the explicit table of tests/unit/test_policy.py, not from the policy code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dui.app import create_app
from dui.auth.roles import ROLES
from dui.fhir.scope import ADMINISTRATIVE_ROLES
from dui.settings import AuthSettings
from tests.authkit import PARC, TILLEULS
from tests.conftest import empty_database
from tests.conftest import test_settings as settings_for
from tests.helpers import observation, patient
from tests.unit.test_policy import MATRIX

PASSWORD = "Matrice-des-droits-2026!"
JSON = "application/fhir+json"
TYPES = ("Patient", "Observation", "Condition")


@pytest.fixture(scope="module")
def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("matrix")
    app = create_app(settings_for(database_url, auth=AuthSettings(dev_key_dir=str(tmp / "keys"))))
    empty_database(app)
    web = app.test_client()
    ids: dict[str, Any] = {}

    def create(body: dict[str, Any]) -> str:
        response = web.post(f"/fhir/{body['resourceType']}", json=body, headers={"Content-Type": JSON})
        assert response.status_code == 201, response.get_data(as_text=True)
        return str(response.get_json()["id"])

    for home in (PARC, TILLEULS):
        org = create({"resourceType": "Organization", "identifier": [
            {"system": "https://finess.esante.gouv.fr", "value": home}]})
        pid = create(patient(managingOrganization={"reference": f"Organization/{org}"}))
        ids[home] = {"Organization": org, "Patient": pid, "Observation": create(observation(f"Patient/{pid}")),
                     "Condition": create({"resourceType": "Condition", "subject": {"reference": f"Patient/{pid}"},
                                          "code": {"text": "Diabète"}})}
    runner = app.test_cli_runner()
    tokens = {}
    for role in ROLES:
        created = runner.invoke(args=["users", "create", f"u.{role}", "--role", role, "--establishment", PARC,
                                      "--password-stdin"], input=PASSWORD + "\n")
        assert created.exit_code == 0, created.output
        answer = web.post("/auth/token", data={"grant_type": "password", "username": f"u.{role}",
                                               "password": PASSWORD})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        tokens[role] = answer.get_json()["access_token"]
    ids["tokens"] = tokens
    yield app, ids
    app.extensions["dui"].dispose()


def get(web: FlaskClient, token: str, path: str) -> Any:
    return web.get(f"/fhir/{path}", headers={"Authorization": f"Bearer {token}", "Accept": JSON})


def entries(response: Any) -> set[tuple[str, str]]:
    return {(e["resource"]["resourceType"], e["resource"]["id"]) for e in response.get_json().get("entry", [])}


@pytest.mark.parametrize("role", ROLES)
def test_matrix_over_http(world: tuple[Flask, dict[str, Any]], role: str) -> None:
    app, ids = world
    web = app.test_client()
    token = ids["tokens"][role]
    mine, theirs = ids[PARC], ids[TILLEULS]
    for rtype in TYPES:
        rights = MATRIX[role].get(rtype, "")
        own = get(web, token, f"{rtype}/{mine[rtype]}")
        assert own.status_code == (200 if "r" in rights else 403), (role, rtype, own.get_data(as_text=True))
        other = get(web, token, f"{rtype}/{theirs[rtype]}")
        assert other.status_code == (404 if "r" in rights else 403), (role, rtype, "other establishment")
        found = get(web, token, rtype)
        if "s" in rights:
            assert found.status_code == 200, (role, rtype)
            # other roles' tests create more of this establishment's data; never the other's
            assert (rtype, mine[rtype]) in entries(found) and (rtype, theirs[rtype]) not in entries(found)
            history = {e[1] for e in entries(get(web, token, f"{rtype}/_history?_count=200"))}
            assert mine[rtype] in history and theirs[rtype] not in history, (role, rtype, "history")
        else:
            assert found.status_code == 403, (role, rtype)
        body = {"Patient": patient(managingOrganization={"reference": f"Organization/{mine['Organization']}"}),
                "Observation": observation(f"Patient/{mine['Patient']}"),
                "Condition": {"resourceType": "Condition", "subject": {"reference": f"Patient/{mine['Patient']}"}}}
        created = web.post(f"/fhir/{rtype}", json=body[rtype], headers={
            "Authorization": f"Bearer {token}", "Content-Type": JSON})
        # Creating a Patient admits a resident: on top of 'c', an act of the establishment's administration.
        may_create = "c" in rights and (rtype != "Patient" or role in ADMINISTRATIVE_ROLES)
        assert created.status_code == (201 if may_create else 403), (role, rtype, "create")
        if may_create:
            their_org = {"reference": f"Organization/{theirs['Organization']}"}
            elsewhere = {"Patient": patient(managingOrganization=their_org),
                         "Observation": observation(f"Patient/{theirs['Patient']}"),
                         "Condition": {"resourceType": "Condition",
                                       "subject": {"reference": f"Patient/{theirs['Patient']}"}}}[rtype]
            refused = web.post(f"/fhir/{rtype}", json=elsewhere, headers={
                "Authorization": f"Bearer {token}", "Content-Type": JSON})
            assert refused.status_code == 403, (role, rtype, "create elsewhere")


@pytest.mark.parametrize("role", ["medecin", "aide-soignant", "administratif"])
def test_includes_and_everything_never_leak(world: tuple[Flask, dict[str, Any]], role: str) -> None:
    app, ids = world
    web = app.test_client()
    token = ids["tokens"][role]
    mine, theirs = ids[PARC], ids[TILLEULS]
    revinclude = get(web, token, "Patient?_revinclude=Condition:subject")
    if "s" in MATRIX[role]["Condition"]:
        assert ("Condition", theirs["Condition"]) not in entries(revinclude)
        assert ("Condition", mine["Condition"]) in entries(revinclude)
    else:
        assert revinclude.status_code == 403
    everything = get(web, token, f"Patient/{mine['Patient']}/$everything")
    types = {t for t, _ in entries(everything)}
    assert ("Condition" in types) == ("r" in MATRIX[role]["Condition"])
    assert ("Observation" in types) == ("r" in MATRIX[role].get("Observation", ""))
    assert get(web, token, f"Patient/{theirs['Patient']}/$everything").status_code == 404
