"""The AGGIR evaluation (``POST /api/residents/{id}/evaluations/aggir``) and the direction's indicators
(``GET /api/indicators``, ``dui report``): docs/staff-api.md, "Indicators". Over HTTP and the CLI, on SQLite and
PostgreSQL.

The expected figures are worked out here by hand from the demo data as written in ``dui/demo/data.py`` (the GIR of
each demo resident, stays begun long before the month, one room each) and from what each test adds; never from the
code under test."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from tests.functional.test_staff_api import token
from tests.helpers import FhirClient

PARC, TILLEULS = ESTABLISHMENTS[1]["finess"], ESTABLISHMENTS[0]["finess"]
ANCHOR = date(2026, 11, 30)  # the demo's anchor: every stay began at least 60 days before it
MONTH = "2026-11"
DAYS_IN_MONTH = 30
# The GIR written for each demo resident in dui/demo/data.py (DEMO_GIR): residents 1, 3, 5 stay at Le Parc,
# residents 2, 4, 6 at Les Tilleuls.
WRITTEN_GIR = {"demo-resident-001": 2, "demo-resident-002": 4, "demo-resident-003": 3, "demo-resident-004": 1,
               "demo-resident-005": 5, "demo-resident-006": 4}
PARC_RESIDENTS = ("demo-resident-001", "demo-resident-003", "demo-resident-005")
# GMP points per GIR, as the issue gives them
POINTS = {1: 1000, 2: 840, 3: 660, 4: 420, 5: 250, 6: 70}
FALL = {"system": "http://snomed.info/sct", "code": "1912002", "display": "Fall"}


def by_hand_gmp(girs: list[int]) -> float:
    return round(sum(POINTS[g] for g in girs) / len(girs), 1)


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, ANCHOR) for i in range(1, 7))):
        answer = client.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    return client


@pytest.fixture
def web(app: Flask, demo: FhirClient) -> FlaskClient:
    return app.test_client()


def director(app: Flask, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", "direction", finess)


def indicators(app: Flask, web: FlaskClient, month: str = MONTH, finess: str = PARC) -> dict[str, Any]:
    answer = web.get(f"/api/indicators?month={month}", headers=director(app, finess))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    found: dict[str, Any] = answer.get_json()
    return found


def test_the_gmp_of_the_demo_residents_computed_by_hand_is_the_apis(app: Flask, web: FlaskClient) -> None:
    parc = indicators(app, web)
    hand = by_hand_gmp([WRITTEN_GIR[r] for r in PARC_RESIDENTS])
    assert parc["gmp"]["value"] == hand and parc["gmp"]["evaluated"] == 3 and parc["gmp"]["not_evaluated"] == 0
    assert parc["gmp"]["by_gir"] == {str(g): sum(1 for r in PARC_RESIDENTS if WRITTEN_GIR[r] == g) for g in POINTS}
    tilleuls = indicators(app, web, finess=TILLEULS)
    assert tilleuls["gmp"]["value"] == by_hand_gmp([WRITTEN_GIR[r] for r in WRITTEN_GIR if r not in PARC_RESIDENTS])
    # three residents, each there the whole month, one room each
    assert parc["residents_present"] == 3 and parc["places"] == 3
    assert parc["resident_days"] == 3 * DAYS_IN_MONTH and parc["days"] == DAYS_IN_MONTH
    assert parc["occupancy"] == 1.0
    assert parc["pmp"] == {"status": "not recorded", "value": None, "recorded": 0}
    assert parc["falls"] == {"count": 0, "per_1000_resident_days": 0.0}
