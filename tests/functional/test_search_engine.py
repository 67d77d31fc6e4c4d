"""The search engine beyond simple parameters (http://hl7.org/fhir/R4/search.html): chains, _has,
composites, modifiers, _sort with stable paging, _include/_revinclude, _summary, _elements, _total, _list.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import FhirClient, diagnostics, ids, observation, outcome_codes, patient

LOINC = "http://loinc.org"


@pytest.fixture
def ward(client: FhirClient) -> dict[str, Any]:
    """Two EHPADs, two residents, their observations, a practitioner."""
    org_a = client.create({"resourceType": "Organization", "name": "EHPAD Les Tilleuls",
                           "identifier": [{"system": "https://finess.esante.gouv.fr", "value": "690001428"}]})
    org_b = client.create({"resourceType": "Organization", "name": "EHPAD Le Parc"})
    helene = client.create(patient(family="Lefèvre", given="Hélène", managingOrganization={
        "reference": f"Organization/{org_a['id']}"}, identifier=[{"system": "urn:ipp", "value": "H1"}]))
    jean = client.create(patient(family="Dupont", given="Jean", gender="male",
                                 managingOrganization={"reference": f"Organization/{org_b['id']}"}))
    doctor = client.create({"resourceType": "Practitioner", "name": [{"family": "Vidal"}]})
    weight = client.create(dict(observation(f"Patient/{helene['id']}", value=61.5),
                                performer=[{"reference": f"Practitioner/{doctor['id']}"}]))
    bp = client.create({
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{helene['id']}"},
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "effectiveDateTime": "2026-11-03T08:30:00+01:00",
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
             "valueQuantity": {"value": 152, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
             "valueQuantity": {"value": 88, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]})
    jean_weight = client.create(observation(f"Patient/{jean['id']}", value=80, when="2026-11-05T09:00:00+01:00"))
    return {"org_a": org_a["id"], "org_b": org_b["id"], "helene": helene["id"], "jean": jean["id"],
            "doctor": doctor["id"], "weight": weight["id"], "bp": bp["id"], "jean_weight": jean_weight["id"]}


def test_chained_parameters(client: FhirClient, ward: dict[str, Any]) -> None:
    """One- and two-level chains (search.html#chaining)."""
    assert ids(client.search("Observation?subject:Patient.name=helene")) == [ward["weight"], ward["bp"]]
    assert ids(client.search("Observation?subject.family=dupont")) == [ward["jean_weight"]]
    two_levels = client.search("Observation?subject:Patient.organization.name:contains=tilleuls")
    assert ids(two_levels) == [ward["weight"], ward["bp"]]
    by_identifier = client.search("Observation?patient.identifier=urn:ipp|H1")
    assert ids(by_identifier) == [ward["weight"], ward["bp"]]
    assert ids(client.search("Observation?subject:Patient.organization.identifier=690001428")) == \
        [ward["weight"], ward["bp"]]
    assert ids(client.search(f"Observation?subject:Patient._id={ward['jean']}")) == [ward["jean_weight"]]
    assert ids(client.search(f"Patient?_has:Observation:patient:_id={ward['bp']}")) == [ward["helene"]]
    assert ids(client.search("Patient?organization:missing=false&gender:not=male")) == [ward["helene"]]


def test_chain_errors(client: FhirClient, ward: dict[str, Any]) -> None:
    strict = {"Prefer": "handling=strict"}
    assert client.get("Observation?subject:Patient.nope=1", headers=strict).status_code == 400
    assert client.get("Observation?status.name=x", headers=strict).status_code == 400
    too_deep = client.get("Observation?subject:Patient.organization.partof.name=x")
    assert too_deep.status_code == 400
    assert outcome_codes(too_deep) == ["too-costly"]


def test_has(client: FhirClient, ward: dict[str, Any]) -> None:
    """Reverse chaining (search.html#has), nested too."""
    code = f"{LOINC}|85354-9"
    assert ids(client.search(f"Patient?_has:Observation:patient:code={code}")) == [ward["helene"]]
    assert ids(client.search("Patient?_has:Observation:patient:value-quantity=gt70")) == [ward["jean"]]
    nested = client.search(f"Organization?_has:Patient:organization:_has:Observation:patient:code={code}")
    assert ids(nested) == [ward["org_a"]]
    assert client.get(f"Practitioner?_has:Observation:subject:_has:Observation:subject:code={code}").status_code == 400
    assert ids(client.search("Organization?_has:Patient:organization:name=jean")) == [ward["org_b"]]
    assert client.get("Patient?_has:Observation:code:code=x", headers={"Prefer": "handling=strict"}).status_code == 400


def test_composite_parameters(client: FhirClient, ward: dict[str, Any]) -> None:
    """code$value pairs come from the same component (search.html#composite)."""
    assert ids(client.search(f"Observation?component-code-value-quantity={LOINC}|8480-6$gt150")) == [ward["bp"]]
    assert ids(client.search(f"Observation?component-code-value-quantity={LOINC}|8462-4$gt150")) == []
    assert ids(client.search(f"Observation?combo-code-value-quantity={LOINC}|29463-7$61.5")) == [ward["weight"]]
    assert ids(client.search(f"Observation?code-value-quantity={LOINC}|29463-7$ge80")) == [ward["jean_weight"]]
    assert client.get(f"Observation?code-value-quantity={LOINC}|29463-7").status_code == 400


def test_reference_identifier_and_of_type(client: FhirClient) -> None:
    logical = client.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                             "subject": {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.10",
                                                        "value": "279035121518989"}}})
    found = client.search("Observation?subject:identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518989")
    assert ids(found) == [logical["id"]]
    typed = client.create(patient(identifier=[{
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": "urn:ipp", "value": "446053"}]))
    of_type = client.search("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053")
    assert ids(of_type) == [typed["id"]]
    assert ids(client.search("Patient?identifier:of-type=|PI|446053")) == []
    assert client.get("Patient?identifier:of-type=MR|446053").status_code == 400


def test_code_values_have_their_implied_system(client: FhirClient, ward: dict[str, Any]) -> None:
    """Patient.gender is bound to one code system, so system|code matches a bare code."""
    assert ids(client.search("Patient?gender=http://hl7.org/fhir/administrative-gender|male")) == [ward["jean"]]
    assert ids(client.search("Patient?gender=male")) == [ward["jean"]]
    assert ids(client.search("Patient?gender=http://example.org/other|male")) == []


def test_sort_on_several_keys(client: FhirClient) -> None:
    made = {}
    for family, given, birth in [("Martin", "Louise", "1930-05-01"), ("Bernard", "Paul", "1928-01-09"),
                                 ("Martin", "Alice", "1935-07-21"), ("Zola", "Émile", None)]:
        body = patient(family=family, given=given)
        if birth:
            body["birthDate"] = birth
        else:
            body.pop("birthDate")
        made[given] = client.create(body)["id"]
    by_name = ids(client.search("Patient?_sort=family,given"))
    assert by_name == [made["Paul"], made["Alice"], made["Louise"], made["Émile"]]
    by_birth_desc = ids(client.search("Patient?_sort=-birthdate"))
    assert by_birth_desc == [made["Alice"], made["Louise"], made["Paul"], made["Émile"]]  # missing last
    by_birth = ids(client.search("Patient?_sort=birthdate"))
    assert by_birth == [made["Paul"], made["Louise"], made["Alice"], made["Émile"]]
    assert ids(client.search("Patient?_sort=-_lastUpdated"))[0] == made["Émile"]
    assert client.get("Patient?_sort=nope").status_code == 400
    assert client.get("Patient?_sort=link").status_code == 200


def test_sorted_paging_is_stable_under_writes_and_goes_back(client: FhirClient) -> None:
    """Next and previous links stay correct while others write: no result seen twice, none skipped
    except what was deleted meanwhile."""
    subject = client.create(patient())["id"]
    made = [client.create(observation(f"Patient/{subject}", value=60 + i,
                                      when=f"2026-11-{i + 1:02d}T09:00:00+01:00"))["id"] for i in range(9)]
    newest_first = list(reversed(made))
    page = client.search(f"Observation?subject=Patient/{subject}&_sort=-date&_count=4")
    assert page["total"] == 9
    pages = [page]
    client.delete(f"Observation/{made[0]}")  # the oldest, not yet seen
    while (nxt := next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)) is not None:
        # a newer observation sorts before every page already read: it must not shift the next ones
        client.create(observation(f"Patient/{subject}", value=99, when="2026-11-30T09:00:00+01:00"))
        page = client.search(nxt.replace("http://testserver/fhir/", ""))
        pages.append(page)
    seen = [i for p in pages for i in ids(p)]
    assert seen == newest_first[:-1]
    back = next(lk["url"] for lk in pages[1]["link"] if lk["relation"] == "previous")
    assert ids(client.search(back.replace("http://testserver/fhir/", ""))) == ids(pages[0])


def test_include_and_revinclude(client: FhirClient, ward: dict[str, Any]) -> None:
    bundle = client.search(f"Observation?_id={ward['weight']}&_include=Observation:subject"
                           "&_include=Observation:performer:Practitioner")
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("Observation", "match"), ("Patient", "include"), ("Practitioner", "include")}
    assert bundle["total"] == 1
    rev = client.search(f"Patient?_id={ward['helene']}&_revinclude=Observation:subject")
    assert sorted(e["resource"]["id"] for e in rev["entry"] if e["search"]["mode"] == "include") == \
        sorted([ward["weight"], ward["bp"]])
    iterate = client.search(f"Observation?_id={ward['weight']}&_include=Observation:subject"
                            "&_include:iterate=Patient:organization")
    assert ward["org_a"] in [e["resource"]["id"] for e in iterate["entry"]]
    wildcard = client.search(f"Observation?_id={ward['weight']}&_include=*")
    assert {e["resource"]["resourceType"] for e in wildcard["entry"]} == {"Observation", "Patient", "Practitioner"}
    everyone = client.search(f"Patient?_id={ward['helene']}&_revinclude=*")  # whatever points at her, any type
    pointing = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in everyone["entry"]
                if e["search"]["mode"] == "include"}
    assert {("Observation", ward["weight"]), ("Observation", ward["bp"])} <= pointing
    assert all(f"Patient/{ward['helene']}" in str(client.get(f"{t}/{i}").get_json()) for t, i in pointing)
    assert client.get("Observation?_include=Observation:status").status_code == 400
    assert client.get("Observation?_include=Patient:organization").status_code == 400


def test_summary_and_elements(client: FhirClient, ward: dict[str, Any]) -> None:
    summary = client.search(f"Patient?_id={ward['helene']}&_summary=true")["entry"][0]["resource"]
    assert "name" in summary and "contact" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    elements = client.search(f"Patient?_id={ward['helene']}&_elements=name")["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "name"}
    count = client.search("Patient?_summary=count")
    assert count["total"] == 2
    assert "entry" not in count
    data = client.search(f"Patient?_id={ward['helene']}&_summary=data")["entry"][0]["resource"]
    assert "text" not in data and "name" in data
    assert client.get("Patient?_summary=maybe").status_code == 400


def test_total_modes(client: FhirClient, ward: dict[str, Any]) -> None:
    assert "total" not in client.search("Observation?_total=none")
    assert client.search("Observation?_total=accurate")["total"] == 3
    estimate = client.search("Observation?_total=estimate")
    assert isinstance(estimate["total"], int) and estimate["total"] >= 0
    first = client.search("Observation?_count=1")
    assert first["total"] == 3
    nxt = next(lk["url"] for lk in first["link"] if lk["relation"] == "next")
    assert "total" not in client.search(nxt.replace("http://testserver/fhir/", ""))


def test_list_parameter(client: FhirClient, ward: dict[str, Any]) -> None:
    listed = client.create({"resourceType": "List", "status": "current", "mode": "working",
                            "entry": [{"item": {"reference": f"Patient/{ward['jean']}"}}]})
    assert ids(client.search(f"Patient?_list={listed['id']}")) == [ward["jean"]]


def test_cursor_tampering_is_400(client: FhirClient, ward: dict[str, Any]) -> None:
    response = client.get("Patient?_cursor=not-a-cursor")
    assert response.status_code == 400
    assert "cursor" in diagnostics(response)


def test_uri_modifiers_number_and_meta_parameters(client: FhirClient) -> None:
    """uri (exact, :below, :above), number prefixes, _security and _source (search.html#uri, #number)."""
    base = "https://hl7.fr/ig/fhir/core/Questionnaire"
    q = client.create({"resourceType": "Questionnaire", "status": "active", "url": f"{base}/aggir",
                       "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                              "code": "R"}], "source": "https://ehpad.example/dui"}})
    assert ids(client.search(f"Questionnaire?url={base}/aggir")) == [q["id"]]
    assert ids(client.search(f"Questionnaire?url:below={base}")) == [q["id"]]
    assert ids(client.search(f"Questionnaire?url:above={base}/aggir/v2")) == [q["id"]]
    assert ids(client.search(f"Questionnaire?url={base}")) == []
    assert ids(client.search("Questionnaire?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"))\
        == [q["id"]]
    assert ids(client.search("Questionnaire?_source=https://ehpad.example/dui")) == [q["id"]]
    risk = client.create({"resourceType": "RiskAssessment", "status": "final",
                          "subject": {"reference": "Patient/x"},
                          "prediction": [{"outcome": {"text": "chute"}, "probabilityDecimal": 0.72}]})
    assert ids(client.search("RiskAssessment?probability=gt0.5")) == [risk["id"]]
    assert ids(client.search("RiskAssessment?probability=0.72")) == [risk["id"]]
    assert ids(client.search("RiskAssessment?probability=lt0.5")) == []
    assert ids(client.search("RiskAssessment?probability=ap0.7")) == [risk["id"]]


def test_a_composite_the_index_does_not_hold_is_refused_or_ignored_never_a_500(client: FhirClient) -> None:
    """MolecularSequence's coordinates are composites of three components: not in the composite index (two),
    so not in the CapabilityStatement, ignored in lenient handling and refused under handling=strict."""
    for code in ("chromosome-variant-coordinate", "chromosome-window-coordinate",
                 "referenceseqid-variant-coordinate", "referenceseqid-window-coordinate"):
        lenient = client.get(f"MolecularSequence?{code}=1$ge1$lt5", headers={"Prefer": "handling=lenient"})
        assert lenient.status_code == 200, lenient.get_data(as_text=True)
        for headers in ({}, {"Prefer": "handling=strict"}):  # strict is the default
            strict = client.get(f"MolecularSequence?{code}=1$ge1$lt5", headers=headers)
            assert strict.status_code == 400 and "not-supported" in outcome_codes(strict), \
                strict.get_data(as_text=True)
    statement = client.get("metadata").get_json()
    sequence = next(r for r in statement["rest"][0]["resource"] if r["type"] == "MolecularSequence")
    assert "chromosome-variant-coordinate" not in {p["name"] for p in sequence["searchParam"]}


SWEEP_VALUES = ("1", "a|b", "a$b")  # a number, a date, an id; system|code; a composite's pair


def sweep(registry: Any, router_types: list[str]) -> list[tuple[str, str, str]]:
    """(type, code, value) of the sweep below. Invariants: every parameter of every type is sent at least one value;
    every value is sent to every parameter code, with its search type and component kinds, at least once (on the
    first type that has it); on the other types, a parameter gets one value, in turn the next of ``SWEEP_VALUES``
    for its search type, so that all three keep reaching parameters of each search type across the resource types.

    How a value is read, and turned into SQL, depends on the code, the search type and a composite's component
    kinds, not on the resource type (dui.fhir.search.plan and .where): sending all three values to each of the
    2,574 parameters (7,700 requests, 15 s on SQLite, 20 s on PostgreSQL) sent each of these readings the same
    values again and again."""
    cases: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    turn: dict[str, int] = {}
    for rtype in router_types:
        for code, param in registry.for_type(rtype).items():
            shape = (code, param.type, tuple(c.kind for c in param.components))
            if shape not in seen:
                seen.add(shape)
                cases += [(rtype, code, value) for value in SWEEP_VALUES]
                continue
            turn[param.type] = turn.get(param.type, -1) + 1
            cases.append((rtype, code, SWEEP_VALUES[turn[param.type] % len(SWEEP_VALUES)]))
    return cases


def test_no_search_parameter_of_any_type_answers_a_500(client: FhirClient, app: Any) -> None:
    """Every parameter the server knows, for every type, with a few values a client may send (``sweep``): an
    answer, or a clear refusal, never an internal error."""
    registry = app.extensions["dui"].registry
    router_types = [r["type"] for r in client.get("metadata").get_json()["rest"][0]["resource"]]
    cases = sweep(registry, router_types)
    # the invariants of ``sweep``
    parameters = {(t, c): p for t in router_types for c, p in registry.for_type(t).items()}
    assert {(t, c) for t, c, _ in cases} == set(parameters)
    shapes = {(c, p.type, tuple(x.kind for x in p.components)) for (_, c), p in parameters.items()}
    sent = {(c, parameters[t, c].type, tuple(x.kind for x in parameters[t, c].components), v) for t, c, v in cases}
    assert {(*shape, value) for shape in shapes for value in SWEEP_VALUES} <= sent
    failures = []
    for rtype, code, value in cases:
        answer = client.get(f"{rtype}?{code}={value}&_count=1")
        if answer.status_code >= 500:
            failures.append(f"{rtype}?{code}={value}: {answer.status_code}")
    assert not failures, failures[:20]


def test_a_parameter_without_a_value_is_ignored_or_refused_when_strict(client: FhirClient) -> None:
    """``Patient?family=`` is ignored (R4 search.html: a parameter with no value); ``handling=strict`` refuses it;
    an empty value among others (``a,,b``) is always an error."""
    created = client.create(patient(family="Sansvaleur"))["id"]
    lenient = client.get("Patient?family=&_count=100")
    assert lenient.status_code == 200 and created in ids(lenient.get_json())
    assert "family" not in next(link["url"] for link in lenient.get_json()["link"] if link["relation"] == "self")
    strict = client.get("Patient?family=", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and "has no value" in diagnostics(strict)
    assert client.get("Patient?family=a,,b").status_code == 400
    # the criteria of a conditional create are read strictly whatever the client prefers: ignoring the empty
    # parameter would match every Patient
    conditional = client.post("Patient", patient(family="Autre"), headers={"If-None-Exist": "family=",
                                                                           "Prefer": "handling=lenient"})
    assert conditional.status_code == 400 and "has no value" in diagnostics(conditional)
