"""The FHIR R4 base TestScripts of an independent comparison of FHIR servers (mock.health, MUST / SHOULD / MAY),
run against the demo records by the evaluator of tests/testscripts.py, which fails a script on any assert it cannot
evaluate. Every script of every level must pass."""

from __future__ import annotations

import json
from datetime import date

import pytest
from flask import Flask

from dui.demo.data import resident_bundle, setup_bundle
from tests import testscripts
from tests.conftest import conformance_dir
from tests.helpers import FhirClient

BASE = ("testscripts", "mock-health", "testscripts", "fhir-r4-base")


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    """The demo: two EHPADs, five residents with their records (vital signs among them)."""
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in range(1, 6))):
        assert client.post("", bundle).status_code == 200
    return client


@pytest.mark.parametrize("level", ["MUST", "SHOULD", "MAY"])
def test_the_mock_health_base_testscripts(app: Flask, demo: FhirClient, level: str) -> None:
    folder = conformance_dir(*BASE, level)
    scripts = sorted(folder.glob("*.json"))
    assert scripts, f"no TestScript in {folder}"
    failed = {}
    for path in scripts:
        result = testscripts.run(app.test_client(), json.loads(path.read_text()))
        if result.failures or not result.passed:
            failed[path.name] = result.failures or ["no assert evaluated"]
    assert not failed, failed
