"""Bounded work over the Flask app: the per-request budget (DUI_REQUEST_BUDGET), RE2 for clients' patterns, and
the parameter-count limit (DUI_MAX_PARAMETERS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from dui.app import create_app
from dui.audit import trail
from dui.settings import Limits
from dui.web import budget
from tests import conftest
from tests.conftest import TEST_LIMITS, empty_database
from tests.helpers import FhirClient, diagnostics, outcome_codes, patient

BUDGET = 0.6
# A path a client can send whose evaluation is cubic in the size of the resource: with 60 names, ~20 s of CPU.
BURNING_PATH = ("Patient.name.where(%context.descendants().where(%context.descendants().count() > 0).count() > 0)"
                ".first()")
REDOS = "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches('^(a+)+$')"


def fhirpath_patch(*operations: dict[str, Any]) -> str:
    parameters = []
    for op in operations:
        parts = [{"name": key, ("valueString" if key != "type" else "valueCode"): value} for key, value in op.items()
                 if key != "value"]
        if "value" in op:
            parts.append({"name": "value", "valueString": op["value"]})
        parameters.append({"name": "operation", "part": parts})
    return json.dumps({"resourceType": "Parameters", "parameter": parameters})


@pytest.fixture(scope="module")
def budget_app(database_url: str, insi_dir: str) -> Iterator[Flask]:
    application = create_app(conftest.test_settings(database_url, request_budget=BUDGET,
                                           limits=Limits(**{**TEST_LIMITS.__dict__, "max_parameters": 20})))
    yield application
    application.extensions["dui"].dispose()


@pytest.fixture
def bounded(app: Flask, budget_app: Flask) -> FhirClient:
    empty_database(app)  # through the suite's app: this one's statements have the budget's short timeout
    budget_app.extensions["dui"].profiles.invalidate()
    return FhirClient(budget_app.test_client())


def audit_rows(app: Flask) -> list[Any]:
    with app.extensions["dui"].unit_of_work(write=False) as session:
        return [row for row, _ in trail.entries(session)]


def big_patient() -> dict[str, Any]:
    return patient(name=[{"use": "official", "family": f"Famille{i}", "given": ["Anne", "Marie"]} for i in range(60)])


def test_request_past_its_budget_answers_503_keeps_nothing_and_is_audited(budget_app: Flask,
                                                                         bounded: FhirClient) -> None:
    created = bounded.create(big_patient())
    pid = created["id"]
    body = fhirpath_patch({"type": "replace", "path": "Patient.birthDate", "value": "1931-01-01"},
                          {"type": "delete", "path": BURNING_PATH})
    started = time.perf_counter()
    response = bounded.patch(f"Patient/{pid}", body, content_type="application/fhir+json",
                             headers={"X-Request-Id": "burning-patch-01"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 503, response.get_data(as_text=True)
    assert elapsed < BUDGET + 1.5
    assert outcome_codes(response) == ["too-costly"]
    assert f"stopped after {BUDGET:g} s" in diagnostics(response) and "Narrow" in diagnostics(response)
    assert response.headers["Retry-After"] == budget.RETRY_AFTER
    stored = bounded.get(f"Patient/{pid}")
    assert stored.headers["ETag"] == 'W/"1"' and stored.get_json()["birthDate"] == created["birthDate"]  # nothing kept
    refused = [row for row in audit_rows(budget_app) if row["action"] == "patch"]
    assert [(r["outcome"], r["status"], r["detail"], r["request_id"]) for r in refused] == [
        ("error", 503, "RequestStopped", "burning-patch-01")]
    assert budget.WATCHDOG.armed() == 0


def test_a_transaction_past_its_budget_leaves_nothing(budget_app: Flask, bounded: FhirClient) -> None:
    pid = bounded.create(big_patient())["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(family="Nouvelle"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": json.loads(fhirpath_patch({"type": "delete", "path": BURNING_PATH})),
         "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
    ]}
    response = bounded.post("", bundle)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert bounded.search("Patient?_summary=count")["total"] == 1  # the first entry's create rolled back


def test_requests_within_the_budget_are_served_and_the_watchdog_lets_them_be(bounded: FhirClient) -> None:
    pid = bounded.create(patient())["id"]
    for _ in range(20):
        assert bounded.get(f"Patient/{pid}").status_code == 200
    time.sleep(BUDGET + 0.3)  # the deadlines of those requests pass: nothing may land afterwards
    assert bounded.get(f"Patient/{pid}").status_code == 200
    assert budget.WATCHDOG.armed() == 0


def test_redos_patch_answers_at_once(bounded: FhirClient) -> None:
    pid = bounded.create(patient())["id"]
    started = time.perf_counter()
    response = bounded.patch(f"Patient/{pid}", fhirpath_patch(
        {"type": "delete", "path": f"Patient.name.where({REDOS})"}), content_type="application/fhir+json")
    assert response.status_code == 200 and time.perf_counter() - started < 1
    version = bounded.get(f"Patient/{pid}").headers["ETag"]
    response = bounded.patch(f"Patient/{pid}", fhirpath_patch(
        {"type": "delete", "path": "Patient.name.where(family.matches('(L)\\\\1'))"}),
        content_type="application/fhir+json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_codes(response) == ["not-supported"] and "(L)\\1" in diagnostics(response)
    assert bounded.get(f"Patient/{pid}").headers["ETag"] == version


def test_parameter_limit_on_the_url_and_the_search_form(bounded: FhirClient) -> None:
    bounded.create(patient())
    assert bounded.get("Patient?" + "&".join(f"name=a{i}" for i in range(20))).status_code == 200
    response = bounded.get("Patient?" + "&".join(f"name=a{i}" for i in range(21)))
    assert response.status_code == 414 and outcome_codes(response) == ["too-costly"]
    assert "21 parameters" in diagnostics(response) and "DUI_MAX_PARAMETERS" in diagnostics(response)
    form = "&".join(f"name=a{i}" for i in range(15))
    response = bounded.post("Patient/_search?_count=1&" + "&".join(f"given=b{i}" for i in range(5)), form,
                            content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and outcome_codes(response) == ["too-costly"]
    assert "21 parameters" in diagnostics(response)
    response = bounded.post("Patient/_search", "&".join(f"name=lef{'e' * i}" for i in range(20)),
                            content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.get_data(as_text=True)


def test_the_budget_in_settings_bounds_the_statement_timeout() -> None:
    from dui.settings import Settings, SettingsError

    assert Settings().request_budget == 20 and Settings().statement_timeout_ms == 20_000
    assert Settings(statement_timeout=5).statement_timeout_ms == 5000
    assert Settings(request_budget=0, statement_timeout=0).statement_timeout_ms == 0
    assert Settings.from_env({"DUI_REQUEST_BUDGET": "2.5"}).statement_timeout_ms == 2500
    assert Settings.from_env({"DUI_MAX_PARAMETERS": "50"}).limits.max_parameters == 50
    for bad in ("-1", "abc", "nan", "0.01", "100000"):
        with pytest.raises(SettingsError, match="DUI_REQUEST_BUDGET"):
            Settings.from_env({"DUI_REQUEST_BUDGET": bad})


def test_serve_refuses_a_worker_timeout_not_above_the_budget() -> None:
    from click.testing import CliRunner

    from dui.cli.serve import serve
    from dui.settings import SettingsError
    from tests.conftest import TEST_MASTER_KEY_FILE

    for server in ("gunicorn", "granian"):  # the same checks before either starts
        result = CliRunner().invoke(serve, ["--timeout", "20", "--server", server],
                                    env={"DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE), "DUI_REQUEST_BUDGET": "20"})
        assert isinstance(result.exception, SettingsError)
        assert "DUI_REQUEST_BUDGET (20 s) must be below dui serve --timeout (20 s)" in str(result.exception)
