"""The fast path evaluator gives the same values as fhirpathpy (dui/fhir/search/paths.py)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from dui.demo.data import resident_bundle, setup_bundle
from dui.fhir import jsontext
from dui.fhir.fhirpath import compile_fhirpath
from dui.fhir.search.parameters import SearchParameterRegistry
from tests.conftest import CONFORMANCE

registry = SearchParameterRegistry()


def _resources() -> list[dict[str, Any]]:
    bundles = [setup_bundle(), resident_bundle(1, date(2026, 11, 2)), resident_bundle(2, date(2026, 11, 2))]
    found = [jsontext.parse(jsontext.dump(e["resource"])) for b in bundles for e in b["entry"]]
    if CONFORMANCE.exists():
        for path in sorted((CONFORMANCE / "ans").rglob("*.json")):
            try:
                resource = jsontext.parse(path.read_bytes())
            except Exception:
                continue
            if isinstance(resource, dict) and resource.get("resourceType") in set(registry.resource_types()):
                found.append(resource)
    return found


def _canonical(values: list[Any]) -> list[str]:
    return sorted(jsontext.dump(v).decode() for v in values if v is not None)


def test_most_parameters_take_the_fast_path() -> None:
    total = fast = 0
    for rtype in registry.resource_types():
        for param in registry.indexed(rtype):
            for ex in param.extractions:
                total += 1
                fast += ex.fast is not None
    assert fast / total > 0.99, (fast, total)


@pytest.mark.parametrize("resource", _resources(), ids=lambda r: f"{r['resourceType']}/{r.get('id', '?')}")
def test_fast_path_equals_fhirpathpy(resource: dict[str, Any]) -> None:
    for param in registry.indexed(resource["resourceType"]):
        for ex in param.extractions:
            if ex.fast is None:
                continue
            reference = [v for v in compile_fhirpath(ex.expression)(resource) if v is not None]
            assert _canonical(ex.fast(resource)) == _canonical(reference), (param.code, ex.expression,
                                                                              json.dumps(resource)[:200])
