"""Index values: date ranges, precision, references, tokens (http://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dui.fhir.search.indexer import Indexer, date_range, precision_range, token_values, unique_identifiers
from dui.fhir.search.parameters import SearchParameterRegistry

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(("text", "low", "high"), [
    ("2026", datetime(2025, 12, 31, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC)),
    ("2026-07", datetime(2026, 6, 30, 22, tzinfo=UTC), datetime(2026, 7, 31, 22, tzinfo=UTC)),
    ("2026-12-31", datetime(2026, 12, 30, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC)),
    ("2026-11-02T09:00:00+01:00", datetime(2026, 11, 2, 8, tzinfo=UTC), datetime(2026, 11, 2, 8, 0, 1, tzinfo=UTC)),
    ("2026-11-02T09:00:00.5Z", datetime(2026, 11, 2, 9, 0, 0, 500000, tzinfo=UTC),
     datetime(2026, 11, 2, 9, 0, 0, 600000, tzinfo=UTC)),
])
def test_date_ranges(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text, PARIS) == (low, high)


def test_unreadable_dates_give_nothing() -> None:
    assert date_range("2026-02-30", PARIS) is None
    assert date_range("soon", PARIS) is None


def test_precision_range() -> None:
    assert precision_range(Decimal("37.5")) == (Decimal("37.45"), Decimal("37.55"))
    assert precision_range(Decimal("100")) == (Decimal("99.5"), Decimal("100.5"))


def test_token_kinds() -> None:
    assert token_values({"system": "phone", "value": "0601"}, ("ContactPoint",)) == [("phone", "0601", None)]
    assert token_values({"system": "urn:x", "value": "1"}, ("Identifier",)) == [("urn:x", "1", None)]
    assert token_values({"coding": [{"system": "s", "code": "c", "display": "Élan"}]}, ()) == [("s", "c", "elan")]
    assert token_values(True, ()) == [(None, "true", None)]


def test_references_local_and_absolute() -> None:
    indexer = Indexer(SearchParameterRegistry(), "http://x/fhir")
    assert indexer.reference_values({"reference": "Patient/1"}, None) == [("Patient", "1", None)]
    absolute = {"reference": "http://x/fhir/Patient/1/_history/2"}
    assert indexer.reference_values(absolute, None) == [("Patient", "1", None)]
    assert indexer.reference_values({"reference": "http://other/fhir/Patient/1"}, None) == \
        [(None, None, "http://other/fhir/Patient/1")]
    assert indexer.reference_values({"reference": "Group/1"}, "Patient") == []
    assert indexer.reference_values({"reference": "#contained"}, None) == []


def test_unique_identifiers_only_ins() -> None:
    typed = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1",
             "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                                  "code": "INS-NIR"}]}}
    nss = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2",
           "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NH"}]}}
    assert unique_identifiers({"identifier": [typed, nss, typed]}) == \
        [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}]


def test_rows_for_a_patient() -> None:
    indexer = Indexer(SearchParameterRegistry(), "http://x/fhir")
    rows = indexer.rows(1, "Patient", {"resourceType": "Patient", "name": [{"family": "Lefèvre", "given": ["Hélène"]}],
                                       "birthDate": "1932-04-05", "active": True})
    assert {(r["param"], r["value"]) for r in rows.string} >= {("family", "lefevre"), ("given", "helene"),
                                                               ("name", "lefevre"), ("name", "helene")}
    assert {(r["param"], r["code"]) for r in rows.token} >= {("active", "true")}
    assert [r["param"] for r in rows.date] == ["birthdate"]
