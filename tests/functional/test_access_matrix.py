"""The authorization matrix over HTTP with real staff tokens: role x resource type x action x
establishment, including the paths that leak elsewhere (search, include, history, $everything).

Expected rights come from the explicit table of tests/unit/test_policy.py, not from the policy code.
"""

from __future__ import annotations

import json
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
from tests.helpers import consent, observation, patient
from tests.unit.test_policy import MATRIX

HOSPITAL = "690007315"
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


def send(web: FlaskClient, token: str, method: str, path: str, body: Any = None,
         content_type: str = JSON) -> Any:
    data = body if isinstance(body, str) or body is None else json.dumps(body)
    return web.open(f"/fhir/{path}", method=method, data=data, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type, "Accept": JSON})


@pytest.mark.parametrize("role", ROLES)
def test_rows_the_attack_test_added(world: tuple[Flask, dict[str, Any]], role: str) -> None:
    """POST _search form, PUT-create, writes that would widen sight, and has-oracles, for every role."""
    app, ids = world
    web = app.test_client()
    token = ids["tokens"][role]
    mine, theirs = ids[PARC], ids[TILLEULS]
    rights = MATRIX[role]
    # the form of a POST _search is authorized like a query
    form = send(web, token, "POST", "Patient/_search", "_revinclude=Condition:subject",
                "application/x-www-form-urlencoded")
    assert form.status_code == (200 if "s" in rights["Condition"] else 403), (role, "POST _search form")
    if form.status_code == 200:
        assert ("Condition", theirs["Condition"]) not in entries(form)
    # update as create: needs c; never a resident's record at a chosen id
    org_id = f"org-created-by-{role}"
    created = send(web, token, "PUT", f"Organization/{org_id}", {"resourceType": "Organization", "id": org_id,
                                                                 "name": "Structure"})
    assert created.status_code == (201 if "c" in rights["Organization"] else 403), (role, "PUT-create Organization")
    patient_id = f"patient-created-by-{role}"
    admitted = send(web, token, "PUT", f"Patient/{patient_id}", dict(patient(managingOrganization={
        "reference": f"Organization/{mine['Organization']}"}), id=patient_id))
    assert admitted.status_code == 403, (role, "PUT-create Patient")
    # writes that would widen sight: a consent for oneself on their resident; for them on one's own
    for_me = send(web, token, "POST", "Consent", consent(theirs["Patient"], mine["Organization"]))
    assert for_me.status_code == 403, (role, "consent for oneself")
    for_them = send(web, token, "POST", "Consent", consent(mine["Patient"], theirs["Organization"]))
    may_grant = "c" in rights["Consent"] and role in ADMINISTRATIVE_ROLES
    assert for_them.status_code == (201 if may_grant else 403), (role, "consent recorded for a partner")
    if may_grant:  # put the world back
        assert send(web, token, "DELETE", f"Consent/{for_them.get_json()['id']}").status_code in (200, 204)
    # has-oracle on the other establishment's residents
    oracle = get(web, token, f"Organization?_id={theirs['Organization']}&_has:Patient:organization:"
                             "gender=female,male,other,unknown&_summary=count")
    assert oracle.status_code == 200 and oracle.get_json()["total"] == 0, (role, "has oracle")


def test_rows_for_a_partner_client(world: tuple[Flask, dict[str, Any]], tmp_path: Any) -> None:
    app, ids = world
    web = app.test_client()
    from tests.authkit import client_jwks, token_form, write_json
    from tests.conftest import BASE_URL

    made = app.test_cli_runner().invoke(args=["clients", "create", "partenaire", "--scope", "system/*.cruds",
                                              "--jwks-file", str(write_json(tmp_path / "jwks.json", client_jwks())),
                                              "--establishment", HOSPITAL])
    assert made.exit_code == 0, made.output
    answer = web.post("/auth/token", data=token_form(made.stdout.strip(), BASE_URL + "/auth/token", "system/*.cruds"))
    token = answer.get_json()["access_token"]
    mine, theirs = ids[PARC], ids[TILLEULS]
    form = send(web, token, "POST", "Patient/_search", "_revinclude=Condition:subject",
                "application/x-www-form-urlencoded")
    assert form.status_code == 200 and entries(form) == set()
    assert send(web, token, "PUT", "Patient/partner-made", dict(patient(), id="partner-made")).status_code == 403
    hospital_org = send(web, token, "POST", "Organization", {"resourceType": "Organization", "identifier": [
        {"system": "https://finess.esante.gouv.fr", "value": HOSPITAL}]})
    assert hospital_org.status_code == 201  # its own establishment's Organization
    for resident in (mine["Patient"], theirs["Patient"]):
        refused = send(web, token, "POST", "Consent", consent(resident, hospital_org.get_json()["id"]))
        assert refused.status_code == 403, refused.get_data(as_text=True)
    oracle = get(web, token, f"Organization?_id={theirs['Organization']}&_has:Patient:organization:"
                             "gender=female,male,other,unknown&_summary=count")
    assert oracle.get_json()["total"] == 0
