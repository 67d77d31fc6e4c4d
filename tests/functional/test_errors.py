"""Bad input gets a clear 4xx OperationOutcome, never a 500 (RELIABILITY: bad inputs)."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from tests.helpers import FhirClient, diagnostics, outcome_codes, patient


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{", "not valid JSON"),
    (b'{"resourceType": "Patient",}', "not valid JSON"),
    (b"\xef\xbb\xbf{}", "byte-order mark"),
    (b'{"resourceType": "Patient", "birthDate": NaN}', "NaN"),
    (b'{"resourceType": "Patient", "gender": "male", "gender": "female"}', "duplicate property 'gender'"),
    (b"\xff\xfe", "UTF-8"),
    (b"[]", "JSON object"),
    (b'{"gender": "male"}', "resourceType"),
    (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', "URL is for Patient"),
])
def test_malformed_bodies_are_400(client: FhirClient, body: bytes, fragment: str) -> None:
    response = client.post("Patient", body)
    assert response.status_code == 400
    assert fragment in diagnostics(response)


def test_structure_problems_are_all_listed_with_locations(client: FhirClient) -> None:
    bad = patient(gender="F", birthDate="2020-02-30", foo=1,
                  name=[{"family": "x", "given": []}],
                  photo=[{"data": "%%%"}], id="a" * 70)
    response = client.post("Patient", bad)
    assert response.status_code == 400
    body = response.get_json()
    expressions = {e for issue in body["issue"] for e in issue.get("expression", [])}
    assert {"Patient.gender", "Patient.birthDate", "Patient.foo", "Patient.name[0].given",
            "Patient.photo[0].data", "Patient.id"} <= expressions
    assert {"code-invalid", "value", "structure"} <= set(outcome_codes(response))
    assert client.search("Patient")["total"] == 0


@pytest.mark.parametrize("extra", [
    {"name": [{"family": "x\u0000y"}]},
    {"name": [{"family": "   "}]},
    {"contact": [{}]},
    {"multipleBirthInteger": 2**31},
    {"birthDate": "1932-04-05T10:00:00"},
    {"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>x</script></div>'}},
    {"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml" onclick="x">a</div>'}},
    {"extension": [{"valueString": "sans url"}]},
])
def test_gaps_of_the_model_library_are_caught(client: FhirClient, extra: dict) -> None:
    """Values fhir.resources lets through are refused by the R4 checker (ECOSYSTEM: traps)."""
    response = client.post("Patient", patient(**extra))
    assert response.status_code == 400, extra


def test_deep_nesting_is_413(client: FhirClient) -> None:
    nested = '{"url": "u", "extension": [' * 80 + '{"url": "u", "valueString": "x"}' + "]}" * 80
    body = '{"resourceType": "Patient", "extension": [' + nested + "]}"
    response = client.post("Patient", body)
    assert response.status_code == 413
    assert "nested deeper" in diagnostics(response)
    very_deep = "[" * 50_000 + "]" * 50_000
    assert client.post("Patient", very_deep).status_code == 413


def test_body_over_the_limit_is_413(client: FhirClient) -> None:
    big = patient(name=[{"family": "x" * (3 * 1024 * 1024)}])
    response = client.post("Patient", big)
    assert response.status_code == 413
    assert outcome_codes(response) == ["too-costly"]


def test_media_types(client: FhirClient) -> None:
    turtle = client.post("Patient", "[] a fhir:Patient .", content_type="text/turtle")
    assert turtle.status_code == 415
    assert outcome_codes(turtle) == ["not-supported"]
    old_version = client.post("Patient", patient(), content_type="application/fhir+json; fhirVersion=3.0")
    assert old_version.status_code == 415
    assert client.post("Patient", patient(), content_type="application/json").status_code == 201
    xml = client.post("Patient", "<Patient xmlns='http://hl7.org/fhir'/>", content_type="application/fhir+xml")
    assert xml.status_code == 201  # FHIR XML is served too (tests/functional/test_xml_format.py)
    wants_turtle = client.get("metadata", headers={"Accept": "text/turtle"})
    assert wants_turtle.status_code == 406
    assert client.get("metadata?_format=ttl").status_code == 406
    assert client.get("metadata?_format=xml").status_code == 200
    assert client.get("metadata?_format=json").status_code == 200
    assert client.get("metadata", headers={"Accept": "*/*"}).status_code == 200


@pytest.mark.parametrize(("accept", "fmt", "answered"), [
    (None, None, "application/fhir+json"),
    ("application/json", None, "application/json"),  # answered as asked
    ("application/fhir+json", None, "application/fhir+json"),
    ("application/json;q=0.5, application/fhir+json", None, "application/fhir+json"),  # the better quality
    ("application/fhir+json;q=0.2, application/json", None, "application/json"),
    ("application/fhir+json; fhirVersion=4.0", None, "application/fhir+json"),
    ("application/fhir+json; fhirVersion=3.0, application/json;q=0.1", None, "application/json"),
    ("*/*", None, "application/fhir+json"),
    ("application/fhir+json", "application/json", "application/json"),  # _format wins over Accept
    (None, "json", "application/fhir+json"),
])
def test_the_answer_is_in_the_json_media_type_asked_for(client: FhirClient, accept: str | None, fmt: str | None,
                                                        answered: str) -> None:
    pid = client.create(patient())["id"]
    query = f"?_format={fmt}" if fmt else ""
    for path in (f"Patient/{pid}{query}", f"Patient{query}", f"metadata{query}"):
        answer = client.get(path, headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.headers["Content-Type"] == f"{answered}; charset=utf-8", path
        assert answer.get_json()["resourceType"]


def test_another_fhir_version_is_not_acceptable(client: FhirClient) -> None:
    for accept in ("application/fhir+json; fhirVersion=3.0", "application/fhir+json; fhirVersion=5.0"):
        answer = client.get("metadata", headers={"Accept": accept})
        assert answer.status_code == 406, accept
        assert "fhirVersion" in answer.get_json()["issue"][0]["diagnostics"]


def test_methods_and_unknown_endpoints(client: FhirClient) -> None:
    not_allowed = client.request("POST", "Patient/123", patient())
    assert not_allowed.status_code == 405
    assert not_allowed.headers["Allow"] == "GET, PUT, PATCH, DELETE"
    assert outcome_codes(not_allowed) == ["not-supported"]
    assert client.get("Patient/1/_history/1/extra").status_code == 404
    assert client.get("Patient/$everything").status_code == 404
    assert client.request("DELETE", "metadata").status_code == 405


def test_error_responses_are_fhir_json_with_request_id(client: FhirClient) -> None:
    response = client.get("Patient/nope")
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert len(response.headers["X-Request-Id"]) >= 8
    echoed = client.get("Patient/nope", headers={"X-Request-Id": "abc-12345678"})
    assert echoed.headers["X-Request-Id"] == "abc-12345678"


def test_hostile_search_values_never_500(client: FhirClient) -> None:
    client.create(patient())
    for query in ["family='; DROP TABLE resource--", "family=%00", "identifier=" + "x" * 10_000,
                  "birthdate=ge99999-01-01", "_count=1e9", "_id=" + ",".join(["a"] * 500),
                  "value-quantity=1e999999", "birthdate=2020-13-45", "_lastUpdated=gt", "_cursor=x",
                  "subject=Patient/../../etc", "family:missing=maybe", "active=" + "é" * 300]:
        response = client.get(f"Patient?{query}")
        assert response.status_code < 500, (query, response.get_data(as_text=True))
    assert client.search("Patient")["total"] == 1


def test_invalid_json_in_bundle_entry_location(client: FhirClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST"}}]}
    response = client.post("", json.dumps(bundle))
    assert response.status_code == 400
    assert "Bundle.entry[0]" in diagnostics(response)


def test_control_characters_in_search_values_are_400(client: FhirClient) -> None:
    """Found by the property-based tests: PostgreSQL refuses NUL in text, which once gave a 500."""
    for value in ("%00", "a%01b", "%1F"):
        response = client.get(f"Patient?family:exact={value}")
        assert response.status_code == 400
        assert "control character" in diagnostics(response)


def test_statement_timeout_answers_503_timeout(database_url: str) -> None:
    """A statement that runs past DUI_STATEMENT_TIMEOUT is stopped: 503 timeout, not a hung worker."""
    import pytest
    from sqlalchemy import text

    from dui.app import create_app
    from dui.web import context
    from tests.conftest import test_settings

    if not database_url.startswith("postgresql"):
        pytest.skip("statement timeouts are a PostgreSQL setting")
    app = create_app(test_settings(database_url, statement_timeout=1))

    @app.get("/fhir-slow-probe")
    def slow() -> str:
        with context.unit_of_work(write=False) as session:
            session.execute(text("SELECT pg_sleep(3)"))
        return "done"

    try:
        response = app.test_client().get("/fhir-slow-probe")
        assert response.status_code == 503
        assert outcome_codes(response) == ["timeout"]
        assert "too long" in diagnostics(response)
        assert response.headers["Retry-After"] == "5"
    finally:
        app.extensions["dui"].dispose()


def test_service_connections_plan_without_parallel_workers(app: Flask, backend: str) -> None:
    """A request is one backend among many: parallel plans are off for the service's connections (the URL's own
    libpq options are kept)."""
    from sqlalchemy import text

    from dui.db import make_engine

    if backend != "postgresql":
        pytest.skip("parallel query is PostgreSQL's")
    with app.extensions["dui"].engine.connect() as conn:
        assert conn.execute(text("SHOW max_parallel_workers_per_gather")).scalar() == "0"
        search_path = conn.execute(text("SHOW search_path")).scalar()
    assert search_path.startswith("dui_test_")  # the test URL's own option survived
    engine = make_engine(str(app.extensions["dui"].engine.url.render_as_string(hide_password=False)))
    try:
        with engine.connect() as conn:  # also without a statement timeout
            assert conn.execute(text("SHOW max_parallel_workers_per_gather")).scalar() == "0"
    finally:
        engine.dispose()
