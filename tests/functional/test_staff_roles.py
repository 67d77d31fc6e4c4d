"""The staff API's authorization rows: every role of an EHPAD against the day's calls, with the answers written out
by hand from the default policy (the shared professional secret, docs/security.md "Authorization"), not computed
from it. The staff API adds no right and removes none, but where a use case narrows them (GIR, indicators).
On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dui.auth.roles import ROLES
from dui.demo.data import resident_bundle, setup_bundle
from tests.functional.test_staff_api import MINE, PARC, token
from tests.helpers import FhirClient

CARE_TEAM = {"medecin", "infirmier", "aide-soignant", "aes-amp", "psychologue", "kinesitherapeute"}
READS_DIAGNOSES = {"medecin", "infirmier", "kinesitherapeute"}
BODY = {"heart_rate": 72}
PRESCRIPTION = {"medication": {"label": "Paracétamol 500 mg", "atc": "N02BE01"}, "text": "1 gélule le matin",
                "doses": [{"round": "matin", "quantity": 1, "unit": "gélule"}]}

# (method, path, body) -> the roles that succeed; every other role gets 403
ROWS: list[tuple[str, str, Any, set[str]]] = [
    ("GET", "/api/residents", None, set(ROLES)),
    ("GET", f"/api/residents/{MINE}", None, set(ROLES)),
    ("POST", f"/api/residents/{MINE}/vital-signs", BODY, CARE_TEAM),
    ("POST", f"/api/residents/{MINE}/falls", {"place": "chambre"}, CARE_TEAM),
    ("POST", f"/api/residents/{MINE}/transmissions", {"target": "Sommeil", "donnees": "Nuit agitée"}, CARE_TEAM),
    ("GET", "/api/alerts", None, CARE_TEAM),
    ("POST", f"/api/residents/{MINE}/prescriptions", PRESCRIPTION, {"medecin"}),
    ("POST", f"/api/residents/{MINE}/evaluations/aggir", {"gir": 3, "evaluated_on": "2026-11-02"},
     {"medecin", "infirmier"}),
    ("GET", "/api/indicators?month=2026-11", None, {"medecin", "direction"}),
]


@pytest.fixture(scope="module")
def answers(app: Flask) -> dict[tuple[str, str], tuple[int, Any]]:
    """Each row asked by each role, once, on the demo (one module-wide load: the rows write nothing another reads)."""
    from tests.conftest import empty_database

    empty_database(app)
    fhir = FhirClient(app.test_client())
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        assert fhir.post("", bundle).status_code == 200
    web: FlaskClient = app.test_client()
    out: dict[tuple[str, str], tuple[int, Any]] = {}
    for role in ROLES:
        headers = token(app, "staff", role, PARC)
        for method, path, body, _ in ROWS:
            answer = web.open(path, method=method, json=body, headers=headers)
            out[(role, f"{method} {path}")] = (answer.status_code, answer.get_json())
    return out


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ROWS, ids=[f"{m} {p}" for m, p, _, _ in ROWS])
def test_each_role_gets_what_the_policy_gives_it(answers: dict[tuple[str, str], tuple[int, Any]], method: str,
                                                 path: str, body: Any, allowed: set[str]) -> None:
    got = {role: answers[(role, f"{method} {path}")][0] for role in ROLES}
    expected = {role: ((201 if method == "POST" else 200) if role in allowed else 403) for role in ROLES}
    assert got == expected


def test_diagnoses_are_shown_to_health_professionals_only(answers: dict[tuple[str, str], tuple[int, Any]]) -> None:
    shown = {role for role in ROLES if "conditions" in answers[(role, f"GET /api/residents/{MINE}")][1]}
    assert shown == READS_DIAGNOSES


def test_a_refusal_says_why_in_a_problem(answers: dict[tuple[str, str], tuple[int, Any]]) -> None:
    status, problem = answers[("direction", f"POST /api/residents/{MINE}/vital-signs")]
    assert status == 403 and problem["status"] == 403 and "direction" in problem["detail"]
