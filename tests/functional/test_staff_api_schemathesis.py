"""Property tests of the staff API against its own OpenAPI document (Schemathesis): for every operation, requests
generated from the document, valid and invalid, get no server error and answers that follow the document (status
documented, content type, body schema), with a nurse's token and a director's, on SQLite and PostgreSQL.

Every check of Schemathesis runs but one: a request valid by the document may still be refused with 422 (a rule
across fields, such as "systolic above diastolic", or a resident that does not exist is not JSON Schema), so
"positive data acceptance" does not apply. The SSE stream is left out here (it answers for minutes by design);
tests/functional/test_staff_alerts.py reads it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from dui.demo.data import resident_bundle, setup_bundle
from tests.functional.test_staff_api import PARC, token
from tests.helpers import FhirClient

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# The cases Hypothesis generated, with their operation and mode, in the order they were sent, kept by the text of the
# document they were generated from. With SETTINGS (derandomize) and no check feeding back into the generation, a
# run generates the same cases in the same order whatever the role and the database (the two roles' runs sent the
# same 700 cases). The first run of the process generates them (half of its time); a later run on the same document
# sends the same cases again, in the same order, to its own app with its own token, under the same checks (a failure
# is reported with its case as generated, Hypothesis does not shrink it).
_GENERATED: dict[str, list[tuple[str, GenerationMode, Any]]] = {}


@pytest.mark.parametrize("role", ["infirmier", "direction"])
def test_no_server_error_and_answers_follow_the_document(app: Flask, client: FhirClient, role: str) -> None:
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        assert client.post("", bundle).status_code == 200
    headers = token(app, "staff", role, PARC)
    document = app.test_client().get("/api/openapi.json").get_data(as_text=True)
    generated = _GENERATED.get(document)
    if generated is not None:
        assert len({label for label, _, _ in generated}) >= 10
        for label, mode, case in generated:
            try:
                case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance], app=app)
            except Exception as exc:
                raise AssertionError(f"{label} ({mode.value}), a case generated earlier: {exc}") from exc
        return
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app).exclude(path="/api/alerts/stream")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    sent: list[Any] = []
    generated = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @SETTINGS
            def call(case: Any) -> None:
                sent.append(case)
                case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance], app=app)

            try:
                call()
            except Exception as exc:
                raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc
            generated += [(operation.label, mode, case) for case in sent]
            sent.clear()
    _GENERATED[document] = generated
