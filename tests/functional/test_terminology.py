"""Terminology over the value sets and code systems in force: $expand, $lookup, $validate-code, $subsumes, and the
token modifiers :in, :not-in, :below, :above (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests import testscripts
from tests.conftest import conformance_dir
from tests.helpers import FhirClient, patient

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_VS = "http://terminology.hl7.org/ValueSet/v3-ActCode"
LOINC_VS = "http://hl7.org/fhir/ValueSet/observation-codes"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CATEGORY_VS = "http://hl7.org/fhir/ValueSet/observation-category"
FR_CORE = "https://hl7.fr/ig/fhir/core/ValueSet/"
ORG_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-3307"
STRICT = {"Prefer": "handling=strict"}
LENIENT = {"Prefer": "handling=lenient"}


def frcore_package_dir() -> Path:
    return conformance_dir("ans", "fr-core", "2.1.0", "extracted", "package")


@pytest.fixture
def fr_core(app: Flask, client: FhirClient) -> FhirClient:
    result = app.test_cli_runner().invoke(args=["profiles", "install",
                                                str(conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz")])
    assert result.exit_code == 0, result.output
    return client


def ok(response: TestResponse) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def refused(response: TestResponse, status: int, code: str | None = None) -> str:
    body = response.get_json()
    assert response.status_code == status, response.get_data(as_text=True)
    assert body["resourceType"] == "OperationOutcome", body
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return str(body["issue"][0]["diagnostics"])


def codes(expanded: dict[str, Any]) -> list[str]:
    return [c["code"] for c in expanded["expansion"].get("contains", [])]


def params(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in body["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        out.setdefault(p["name"], []).append(value)
    return out


# -- $expand ----------------------------------------------------------------------------------------------------


def test_expand_a_base_value_set_by_url_by_id_and_posted(client: FhirClient) -> None:
    by_url = ok(client.get(f"ValueSet/$expand?url={GENDER_VS}"))
    assert codes(by_url) == ["male", "female", "other", "unknown"]
    assert by_url["expansion"]["total"] == 4 and by_url["expansion"]["offset"] == 0
    assert {"name": "used-codesystem", "valueUri": f"{GENDER}|4.0.1"} in by_url["expansion"]["parameter"]
    assert by_url["expansion"]["contains"][0] == {"system": GENDER, "version": "4.0.1", "code": "male",
                                                  "display": "Male"}
    by_id = ok(client.get("ValueSet/administrative-gender/$expand"))
    assert codes(by_id) == codes(by_url)
    posted = ok(client.post("ValueSet/$expand", {"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
            {"system": GENDER, "concept": [{"code": "female", "display": "Femme"}]},
            {"system": ACT, "filter": [{"property": "concept", "op": "is-a", "value": "CC"}]}]}}}]}))
    assert codes(posted) == ["female", "CC", "AE", "DN", "DV", "MC", "V"]
    assert posted["expansion"]["contains"][0]["display"] == "Femme"


def test_expand_filter_paging_and_the_size_cap(client: FhirClient) -> None:
    whole = client.get(f"ValueSet/$expand?url={ACT_VS}")
    assert "count and offset" in refused(whole, 422, "too-costly")
    first = ok(client.get(f"ValueSet/$expand?url={ACT_VS}&count=10"))
    total = first["expansion"]["total"]
    assert total > 1000 and len(codes(first)) == 10
    second = ok(client.get(f"ValueSet/$expand?url={ACT_VS}&count=10&offset=10"))
    assert second["expansion"]["offset"] == 10 and not set(codes(first)) & set(codes(second))
    echoed = {p["name"]: p for p in second["expansion"]["parameter"]}
    assert echoed["count"]["valueInteger"] == 10 and echoed["offset"]["valueInteger"] == 10
    filtered = ok(client.get(f"ValueSet/$expand?url={GENDER_VS}&filter=FEM"))
    assert codes(filtered) == ["female"] and filtered["expansion"]["total"] == 1
    assert {"name": "filter", "valueString": "FEM"} in filtered["expansion"]["parameter"]
    refused(client.get(f"ValueSet/$expand?url={GENDER_VS}&count=x"), 400)
    refused(client.get(f"ValueSet/$expand?url={GENDER_VS}&count=5000"), 422, "too-costly")


def test_expand_refuses_what_it_cannot_do_in_full(client: FhirClient) -> None:
    assert "not known" in refused(client.get("ValueSet/$expand?url=http://example.org/vs/none"), 404)
    refused(client.get("ValueSet/no-such-value-set/$expand"), 404)
    loinc = refused(client.get(f"ValueSet/$expand?url={LOINC_VS}"), 422, "not-supported")
    assert "http://loinc.org" in loinc and "not at hand" in loinc
    refused(client.get("ValueSet/$expand"), 400, "required")
    refused(client.get(f"ValueSet/$expand?url={GENDER_VS}&date=2020-01-01"), 400, "not-supported")
    refused(client.get(f"ValueSet/$expand?url={GENDER_VS}&bogus=1", headers=STRICT), 400)
    refused(client.post("ValueSet/$expand", {"resourceType": "Patient"}), 400)
    refused(client.post("ValueSet/$expand", {"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "valueString": "x"}]}), 400)


def test_expand_every_fr_core_value_set_that_can_be(fr_core: FhirClient) -> None:
    """Each FR Core 2.1.0 value set: expanded in full, or refused naming what is not at hand, never in part. The
    expansion is checked against the package's own where it ships one, and against the package's compose and code
    systems, read here independently, where the compose lists its codes or takes whole FR Core code systems."""
    folder = frcore_package_dir()
    systems = {}
    for path in folder.glob("CodeSystem-*.json"):
        cs = json.loads(path.read_text())
        systems[cs["url"]] = [c["code"] for c in cs.get("concept", [])]
    expanded, compared, not_at_hand = [], 0, []
    for path in sorted(folder.glob("ValueSet-*.json")):
        vs = json.loads(path.read_text())
        response = fr_core.get(f"ValueSet/$expand?url={quote(vs['url'], safe=':/')}")
        if response.status_code == 422:
            reason = refused(response, 422, "not-supported")
            assert "cannot be expanded in full" in reason and "code system http" in reason, reason
            not_at_hand.append(vs["id"])
            continue
        got = {(c["system"], c["code"]) for c in ok(response)["expansion"].get("contains", [])}
        expanded.append(vs["id"])
        assert ok(fr_core.get(f"ValueSet/{vs['id']}/$expand"))["expansion"]["total"] == len(got)
        if "expansion" in vs:
            assert got == {(c["system"], c["code"]) for c in vs["expansion"]["contains"]}, vs["id"]
            compared += 1
        expected: set[tuple[str, str]] = set()
        independent = True
        for item in vs["compose"]["include"]:
            if item.get("concept"):
                expected |= {(item["system"], c["code"]) for c in item["concept"]}
            elif item.get("system") in systems and not item.get("filter"):
                expected |= {(item["system"], c) for c in systems[item["system"]]}
            else:
                independent = False
        if independent and "exclude" not in vs["compose"]:
            assert got == expected, vs["id"]
            compared += 1
    # FR Core 2.1.0 ships no expansion; 38 value sets, those over the ANS terminologies (TRE-R..., JDV) and SNOMED
    # CT filters are not at hand.
    assert len(expanded) + len(not_at_hand) == 38
    assert len(expanded) >= 20 and compared >= 20, (expanded, not_at_hand)
    assert "fr-core-vs-height-body-position" in not_at_hand  # SNOMED CT filters
    assert "fr-core-vs-organization-type" in expanded
    print(f"\nFR Core 2.1.0: {len(expanded)} expanded ({compared} compared), {len(not_at_hand)} not: {not_at_hand}")


def test_expand_french_displays_and_accent_insensitive_filter(fr_core: FhirClient) -> None:
    url = FR_CORE + "fr-core-vs-organization-type"
    french = ok(fr_core.get(f"ValueSet/$expand?url={url}&displayLanguage=fr-FR&filter=entite"))
    # the value set's own display comes first ("Entité juridique"; the code system says "Entité légale")
    first = french["expansion"]["contains"][0]
    assert (first["code"], first["display"]) == ("LEGAL-ENTITY", "Entité juridique")
    assert {"name": "displayLanguage", "valueCode": "fr-FR"} in french["expansion"]["parameter"]
    upper = ok(fr_core.get(f"ValueSet/$expand?url={url}&filter=ENTITÉ"))
    assert codes(upper) == codes(french)


def test_designations_in_the_display_language(client: FhirClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "displayLanguage", "valueCode": "fr"}, {"name": "includeDesignations", "valueBoolean": True},
        {"name": "activeOnly", "valueBoolean": True},
        {"name": "valueSet", "resource": {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
            {"system": GENDER, "concept": [
                {"code": "female", "display": "Female",
                 "designation": [{"language": "fr-FR", "value": "Féminin"}, {"language": "de", "value": "Weiblich"}]},
                {"code": "male", "display": "Male"}]}]}}}]}
    contains = ok(client.post("ValueSet/$expand", body))["expansion"]["contains"]
    assert [(c["code"], c["display"]) for c in contains] == [("female", "Féminin"), ("male", "Male")]
    assert len(contains[0]["designation"]) == 2 and "designation" not in contains[1]


# -- $lookup ----------------------------------------------------------------------------------------------------


def test_lookup_with_hierarchy_and_properties(client: FhirClient) -> None:
    gender = params(ok(client.get(f"CodeSystem/$lookup?system={GENDER}&code=female")))
    assert gender["name"] == ["AdministrativeGender"] and gender["version"] == ["4.0.1"]
    assert gender["display"] == ["Female"]
    act = ok(client.get(f"CodeSystem/$lookup?system={ACT}&code=CC"))
    props = [(p["part"][0]["valueCode"], next(v for k, v in p["part"][1].items() if k.startswith("value")))
             for p in act["parameter"] if p["name"] == "property"]
    assert ("parent", "_ActAccountCode") in props and ("child", "AE") in props and ("inactive", False) in props
    abstract = ok(client.post("CodeSystem/$lookup", {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": ACT, "code": "_ActAccountCode"}},
        {"name": "property", "valueCode": "notSelectable"}]}))
    props = [p["part"] for p in abstract["parameter"] if p["name"] == "property"]
    assert props == [[{"name": "code", "valueCode": "notSelectable"}, {"name": "value", "valueBoolean": True}]]


def test_lookup_french_display_and_errors(fr_core: FhirClient) -> None:
    found = params(ok(fr_core.get(f"CodeSystem/$lookup?system={ORG_TYPE}&code=LEGAL-ENTITY&displayLanguage=fr")))
    assert found["display"] == ["Entité légale"]
    refused(fr_core.get(f"CodeSystem/$lookup?system={GENDER}&code=nope"), 404, "not-found")
    loinc = refused(fr_core.get("CodeSystem/$lookup?system=http://loinc.org&code=85354-9"), 422, "not-supported")
    assert "http://loinc.org" in loinc
    refused(fr_core.get("CodeSystem/$lookup?code=male"), 400, "required")


# -- $validate-code ---------------------------------------------------------------------------------------------


def test_validate_code_true_false_and_undecided(fr_core: FhirClient) -> None:
    yes = params(ok(fr_core.get(f"ValueSet/$validate-code?url={GENDER_VS}&system={GENDER}&code=male")))
    assert yes["result"] == [True] and yes["display"] == ["Male"]
    shown = params(ok(fr_core.get(f"ValueSet/$validate-code?url={GENDER_VS}&system={GENDER}&code=male&display=Homme")))
    assert shown["result"] == [True] and "'Homme'" in shown["message"][0] and "'Male'" in shown["message"][0]
    no = params(ok(fr_core.get(f"ValueSet/$validate-code?url={GENDER_VS}&system={GENDER}&code=neutral")))
    assert no["result"] == [False] and "not in value set" in no["message"][0]
    undecided = refused(fr_core.get(f"ValueSet/$validate-code?url={LOINC_VS}&system=http://loinc.org&code=1-8"),
                        422, "not-supported")
    assert "http://loinc.org" in undecided
    url = FR_CORE + "fr-core-vs-organization-type"
    wrong = params(ok(fr_core.post("ValueSet/$validate-code", {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": url},
        {"name": "coding", "valueCoding": {"system": ORG_TYPE, "code": "LEGAL-ENTITY", "display": "Legal entity"}}]})))
    assert wrong["result"] == [True] and "Legal entity" in wrong["message"][0]
    assert wrong["display"] == ["Entité juridique"]  # the value set's display (the code system's is also right)
    for display in ("entité légale", "Entite juridique"):
        right = params(ok(fr_core.get(f"ValueSet/$validate-code?url={url}&code=LEGAL-ENTITY&display={display}")))
        assert right["result"] == [True] and "message" not in right
    concept = params(ok(fr_core.post("ValueSet/fr-core-vs-patient-gender-INS/$validate-code", {
        "resourceType": "Parameters", "parameter": [{"name": "codeableConcept", "valueCodeableConcept": {"coding": [
            {"system": GENDER, "code": "unknown"}, {"system": GENDER, "code": "female"}]}}]})))
    assert concept["result"] == [True]
    in_system = params(ok(fr_core.get(f"CodeSystem/$validate-code?url={ACT}&code=CC")))
    assert in_system["result"] == [True]
    assert params(ok(fr_core.get(f"CodeSystem/$validate-code?url={ACT}&code=ZZZ")))["result"] == [False]
    assert params(ok(fr_core.get("CodeSystem/administrative-gender/$validate-code?code=male")))["result"] == [True]
    refused(fr_core.get("CodeSystem/$validate-code?url=http://loinc.org&code=1-8"), 422, "not-supported")


# -- $subsumes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "outcome"), [
    ("_ActAccountCode", "CC", "subsumes"), ("AE", "_ActAccountCode", "subsumed-by"), ("CC", "CC", "equivalent"),
    ("CC", "CASH", "not-subsumed")])
def test_subsumes_in_a_v3_hierarchy(client: FhirClient, a: str, b: str, outcome: str) -> None:
    got = params(ok(client.get(f"CodeSystem/$subsumes?system={ACT}&codeA={a}&codeB={b}")))
    assert got["outcome"] == [outcome]


def test_subsumes_errors(client: FhirClient) -> None:
    refused(client.get(f"CodeSystem/$subsumes?system={ACT}&codeA=CC&codeB=NOPE"), 404)
    refused(client.get("CodeSystem/$subsumes?system=http://snomed.info/sct&codeA=1&codeB=2"), 422, "not-supported")
    posted = params(ok(client.post("CodeSystem/$subsumes", {"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": ACT, "code": "CC"}},
        {"name": "codingB", "valueCoding": {"system": ACT, "code": "MC"}}]})))
    assert posted["outcome"] == ["subsumes"]


# -- search -----------------------------------------------------------------------------------------------------


def _observation(subject: str, system: str, code: str, category: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": subject},
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": system, "code": code}]}}


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def warnings(bundle: dict[str, Any]) -> list[str]:
    return [i["diagnostics"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]


def test_search_in_not_in_below_above(client: FhirClient) -> None:
    who = f"Patient/{client.create(patient())['id']}"
    cc = client.create(_observation(who, ACT, "CC", "vital-signs"))["id"]
    ae = client.create(_observation(who, ACT, "AE", "laboratory"))["id"]
    cash = client.create(_observation(who, ACT, "CASH", "laboratory"))["id"]
    other = client.create(_observation(who, "http://example.org/local", "CC", "not-a-category"))["id"]
    everyone = {cc, ae, cash, other}
    assert ids(client.search(f"Observation?category:in={CATEGORY_VS}")) == {cc, ae, cash}
    assert ids(client.search(f"Observation?category:not-in={CATEGORY_VS}")) == {other}
    assert ids(client.search("Observation?category:in=ValueSet/observation-category")) == {cc, ae, cash}
    assert ids(client.search(f"Observation?code:below={ACT}|CC")) == {cc, ae}
    assert ids(client.search(f"Observation?code:below={ACT}|_ActAccountCode")) == {cc, ae, cash}
    assert ids(client.search(f"Observation?code:above={ACT}|AE")) == {cc, ae}
    assert ids(client.search(f"Observation?code:in={ACT_VS}")) == {cc, ae, cash}
    assert ids(client.search(f"Observation?code:not-in={ACT_VS}&category=laboratory")) == set()
    assert ids(client.search(f"Observation?code:in={ACT_VS}&category:not-in={CATEGORY_VS}")) == set()
    # a value set of several thousand codes: one bound array per code system, whatever its size
    assert ids(client.search(f"Observation?code:in={ACT_VS},{CATEGORY_VS}")) == {cc, ae, cash}
    # chained and in _has
    assert ids(client.search(f"Patient?_has:Observation:subject:code:below={ACT}|CC")) == {who.split("/")[1]}
    assert everyone == ids(client.search("Observation"))


def test_search_terminology_strict_and_lenient(client: FhirClient) -> None:
    who = f"Patient/{client.create(patient())['id']}"
    cc = client.create(_observation(who, ACT, "CC", "vital-signs"))["id"]
    for query in (f"Observation?code:in={LOINC_VS}", "Observation?code:below=http://loinc.org|1-8"):
        assert "http://loinc.org" in refused(client.get(query, headers=STRICT), 400, "not-supported")
        lenient = client.search(query, headers=LENIENT)
        assert ids(lenient) == {cc}
        assert any("http://loinc.org" in w for w in warnings(lenient)), warnings(lenient)
    refused(client.get("Observation?code:in=http://example.org/vs/none"), 400, "not-found")
    refused(client.get(f"Observation?code:below={ACT}|NOPE"), 400, "code-invalid")
    refused(client.get("Observation?code:below=CC"), 400)
    refused(client.get("Observation?subject:in=x"), 400, "not-supported")


# -- the CapabilityStatement and the mock.health scripts ---------------------------------------------------------


def test_the_capability_statement_lists_the_terminology_operations(client: FhirClient) -> None:
    rest = ok(client.get("metadata"))["rest"][0]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    core = "http://hl7.org/fhir/OperationDefinition/"
    assert {"name": "expand", "definition": core + "ValueSet-expand"} in by_type["ValueSet"]
    assert {"name": "validate-code", "definition": core + "ValueSet-validate-code"} in by_type["ValueSet"]
    for name in ("lookup", "validate-code", "subsumes"):
        assert {"name": name, "definition": f"{core}CodeSystem-{name}"} in by_type["CodeSystem"]


@pytest.mark.parametrize("name", ["expand-valueset.json", "lookup-loinc.json"])
def test_the_mock_health_terminology_testscripts(app: Flask, client: FhirClient, name: str) -> None:
    path = conformance_dir("testscripts", "mock-health", "testscripts", "fhir-r4-base", "MAY") / name
    result = testscripts.run(app.test_client(), json.loads(path.read_text()))
    assert not result.failures, result.failures
    assert result.passed


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_large_code_set_binds_one_array_per_code_system(dialect: str) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from sqlalchemy.dialects import postgresql, sqlite

    from dui.fhir.search.plan import Leaf
    from dui.fhir.search.where import Criteria

    pairs = frozenset({(ACT, f"C{i}") for i in range(5000)} | {(CATEGORY, "laboratory")})
    leaf = Leaf("Observation", "code", "token", "in", ("x",), codes=pairs)
    statement = Criteria(ZoneInfo("Europe/Paris"), "http://x/fhir", datetime.now(UTC)).rids(leaf)
    compiled = statement.compile(dialect=sqlite.dialect() if dialect == "sqlite" else postgresql.dialect())
    assert len(compiled.params) < 10, compiled.params.keys()
    arrays = [v for v in compiled.params.values() if isinstance(v, str) and v.startswith("[")]
    assert sorted(len(json.loads(a)) for a in arrays) == [1, 5000]


def test_active_only_and_inactive_concepts(client: FhirClient) -> None:
    url = "http://terminology.hl7.org/ValueSet/v3-AcknowledgementDetailType"
    every = ok(client.get(f"ValueSet/$expand?url={url}"))["expansion"]
    retired = {c["code"] for c in every["contains"] if c.get("inactive")}
    assert {"ERR", "INFO", "WARN"} <= retired
    active = ok(client.get(f"ValueSet/$expand?url={url}&activeOnly=true"))["expansion"]
    assert active["total"] == every["total"] - len(retired) and not retired & set(codes({"expansion": active}))
    lookup = ok(client.get("CodeSystem/$lookup?system=http://terminology.hl7.org/CodeSystem/v3-AcknowledgementDetailType"
                           "&code=ERR&property=inactive"))
    assert [p["part"] for p in lookup["parameter"] if p["name"] == "property"] == [
        [{"name": "code", "valueCode": "inactive"}, {"name": "value", "valueBoolean": True}]]


def test_a_narrowly_scoped_staff_member_may_use_the_terminology(app: Flask, client: FhirClient) -> None:
    from dui.auth.actor import Actor
    from dui.auth.scopes import ScopeSet
    from dui.fhir import jsontext, router
    from dui.fhir.interactions.base import FhirRequest

    who = Actor("staff", "staff-1", frozenset({"aide-soignant"}), "690002662",
                scopes=ScopeSet.parse("user/Patient.r"))
    svc = app.extensions["dui"]
    for path, query in (("ValueSet/$expand", (("url", GENDER_VS),)),
                        ("CodeSystem/$lookup", (("system", GENDER), ("code", "male")))):
        with svc.unit_of_work(write=False) as session:
            result = router.handle(svc.fhir_context(session, who), FhirRequest("GET", path, query))
        assert result.status == 200, jsontext.dump(result.body)
