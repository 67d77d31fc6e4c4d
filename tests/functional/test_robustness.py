"""Whatever a client sends, the answer is never a 500 (property-based)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dui.fhir.definitions import r4
from tests.helpers import FhirClient

PATIENT_ELEMENTS = sorted(r4().children("Patient"))
NAMES = [*PATIENT_ELEMENTS, "reference", "url", "valueString", "system", "code", "value", "extension", "_given"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                   st.sampled_from(["1932-04-05", "2026-13-01", "Patient/1", "urn:uuid:x", "#c", "male", "F"]))
json_values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)),
                           max_leaves=12)
patients = st.dictionaries(st.sampled_from(PATIENT_ELEMENTS), json_values, max_size=5).map(
    lambda d: {"resourceType": "Patient", **d})
queries = st.lists(st.tuples(st.sampled_from(["name", "family:exact", "identifier", "birthdate", "_id",
                                              "_lastUpdated", "gender:not", "organization", "_count", "x"]),
                             st.text(max_size=12)), min_size=1, max_size=3)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(body=patients, method=st.sampled_from(["POST", "PUT"]))
def test_random_resources_get_a_4xx_or_a_2xx(client: FhirClient, body: dict[str, Any], method: str) -> None:
    if method == "PUT":
        body = {**body, "id": "fuzz"}
    response = client.request(method, "Patient" if method == "POST" else "Patient/fuzz", json.dumps(body))
    assert response.status_code < 500, response.get_data(as_text=True)


@PROPERTY
@given(params=queries, strict=st.booleans())
def test_random_searches_get_a_4xx_or_a_2xx(client: FhirClient, params: list[tuple[str, str]], strict: bool) -> None:
    from urllib.parse import urlencode

    response = client.get(f"Patient?{urlencode(params)}", headers={"Prefer": "handling=strict"} if strict else {})
    assert response.status_code < 500, response.get_data(as_text=True)
