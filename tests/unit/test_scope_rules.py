"""The readings the access rules share (dui.fhir.scope.Residents) and the types a search plan reaches
(SearchPlan.touched_types), on resources and queries built here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dui.fhir.scope import Grant, Residents
from dui.fhir.search.indexer import Indexer
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.search.plan import parse_search
from dui.settings import Limits

REGISTRY = SearchParameterRegistry()
BASE = "http://dui.test/fhir"
RESIDENTS = Residents(Indexer(REGISTRY, BASE))
NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def plan(rtype: str, query: str):  # type: ignore[no-untyped-def]
    pairs = [tuple(p.split("=", 1)) for p in query.split("&")]
    return parse_search(rtype, pairs, REGISTRY, Limits(), strict=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rtype", "query", "types"), [
    ("Patient", "name=x", set()),
    ("Patient", "_has:Condition:subject:code=I10", {"Condition"}),
    ("Patient", "_has:Observation:subject:focus:Condition.code=I10", {"Observation", "Condition"}),
    ("Patient", "general-practitioner:Practitioner._has:DocumentReference:author:status=current",
     {"Practitioner", "DocumentReference"}),
    ("Observation", "subject:Patient.organization:Organization.name=x", {"Patient", "Organization"}),
    ("Observation", "_list=l1", {"List"}),
    ("Patient", "_revinclude=Condition:subject", {"Condition"}),
    ("Observation", "_include=Observation:subject:Patient&_include:iterate=Patient:organization",
     {"Patient", "Organization"}),
])
def test_touched_types(rtype: str, query: str, types: set[str]) -> None:
    assert plan(rtype, query).touched_types() == types


def test_a_wildcard_include_reaches_any_type() -> None:
    assert plan("Observation", "_include=*").touched_types() is None
    assert plan("Observation", "_include:iterate=Observation:*").touched_types() is None


def test_whose_record() -> None:
    assert RESIDENTS.of("Patient", {"resourceType": "Patient", "id": "p1"}) == {"p1"}
    observation = {"resourceType": "Observation", "subject": {"reference": "Patient/p1"},
                   "performer": [{"reference": f"{BASE}/Patient/p2"}, {"reference": "Practitioner/x"}],
                   "focus": [{"reference": "Patient/p3"}]}
    assert RESIDENTS.of("Observation", observation) == {"p1", "p2"}  # focus places it in no compartment
    assert RESIDENTS.of("Appointment", {"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "Patient/p4"}}, {"actor": {"reference": "Practitioner/x"}}]}) == {"p4"}
    assert RESIDENTS.of("Group", {"resourceType": "Group", "member": [{"entity": {"reference": "Patient/p5"}}]}) == \
        {"p5"}
    assert RESIDENTS.of("Organization", {"resourceType": "Organization"}) == set()
    assert RESIDENTS.references(observation) == {("Patient", "p1"), ("Patient", "p2"), ("Practitioner", "x"),
                                                 ("Patient", "p3")}
    assert RESIDENTS.references({"contained": [{"subject": {"reference": "Patient/p6"}}],
                                 "x": {"reference": "#c1"}, "y": {"reference": "https://other.org/fhir/Patient/z"}}) \
        == {("Patient", "p6")}


def test_grants() -> None:
    stay = {"resourceType": "Encounter", "status": "in-progress", "subject": {"reference": "Patient/p1"},
            "serviceProvider": {"reference": "Organization/h"}}
    assert RESIDENTS.grants("Encounter", stay, NOW) == {Grant("stay", "h", "p1")}
    assert RESIDENTS.grants("Encounter", dict(stay, status="finished"), NOW) == set()
    consent = {"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p1"},
               "provision": {"actor": [{"reference": {"reference": "Organization/h"}},
                                       {"reference": {"reference": "Practitioner/x"}}]}}
    assert RESIDENTS.grants("Consent", consent, NOW) == {Grant("consent", "h", "p1")}
    ended = dict(consent, provision=dict(consent["provision"], period={"end": "2026-01-01"}))
    assert RESIDENTS.grants("Consent", ended, NOW) == set()
    future = dict(consent, provision=dict(consent["provision"], period={"start": "2027-01-01"}))
    assert RESIDENTS.grants("Consent", future, NOW) == set()
    assert RESIDENTS.grants("Consent", dict(consent, status="inactive"), NOW) == set()
    patient = {"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "Organization/e"}}
    assert RESIDENTS.grants("Patient", patient, NOW) == {Grant("managed", "e", "p1")}
    assert RESIDENTS.grants("Observation", {"resourceType": "Observation"}, NOW) == set()
    assert RESIDENTS.finess({"resourceType": "Organization", "identifier": [
        {"system": "https://finess.esante.gouv.fr", "value": "690001425"},
        {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1690001425"}]}) == {"690001425"}
