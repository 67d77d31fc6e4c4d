"""Search as far as the store needs it (http://hl7.org/fhir/R4/search.html).

French names are matched the way staff type them: case, accents, apostrophes and hyphens do not
matter (docs/fhir-api.md, "Search").
"""

from __future__ import annotations

import pytest

from tests.helpers import FhirClient, diagnostics, ids, ins_identifier, observation, outcome_codes, patient


@pytest.fixture
def residents(client: FhirClient) -> dict[str, str]:
    made = {}
    for family, given in [("Lefèvre", "Hélène"), ("N'GUESSAN-ŒUVRAY", "Aminata"), ("Dupont", "Jean-Pierre"),
                          ("Müller", "Gaëlle")]:
        made[family] = client.create(patient(family=family, given=given))["id"]
    return made


@pytest.mark.parametrize(("query", "family"), [
    ("name=helene", "Lefèvre"),
    ("name=HÉLÈNE", "Lefèvre"),
    ("family=lefevre", "Lefèvre"),
    ("family=Lefe", "Lefèvre"),
    ("family=nguessan", "N'GUESSAN-ŒUVRAY"),
    ("family=n%E2%80%99guessan", "N'GUESSAN-ŒUVRAY"),
    ("family=nguessan-oeuvray", "N'GUESSAN-ŒUVRAY"),
    ("given=jean pierre", "Dupont"),
    ("given=jeanpierre", "Dupont"),
    ("given=gae%CC%88lle", "Müller"),  # NFD input
    ("family=muller", "Müller"),
])
def test_string_search_matches_french_names(client: FhirClient, residents: dict[str, str], query: str,
                                             family: str) -> None:
    assert ids(client.search(f"Patient?{query}")) == [residents[family]]


def test_string_modifiers_exact_and_contains(client: FhirClient, residents: dict[str, str]) -> None:
    assert ids(client.search("Patient?family:exact=Lefèvre")) == [residents["Lefèvre"]]
    assert ids(client.search("Patient?family:exact=lefevre")) == []
    assert ids(client.search("Patient?family:contains=uvray")) == [residents["N'GUESSAN-ŒUVRAY"]]


def test_string_search_needs_a_letter_or_digit(client: FhirClient) -> None:
    response = client.get("Patient?family=---")
    assert response.status_code == 400


def test_token_forms(client: FhirClient) -> None:
    """system|code, code, |code, system| (search.html#token)."""
    a = client.create(patient(identifier=[{"system": "urn:ehpad:ipp", "value": "A1"}]))["id"]
    b = client.create(patient(identifier=[{"value": "A1"}]))["id"]
    assert ids(client.search("Patient?identifier=urn:ehpad:ipp|A1")) == [a]
    assert sorted(ids(client.search("Patient?identifier=A1"))) == sorted([a, b])
    assert ids(client.search("Patient?identifier=|A1")) == [b]
    assert ids(client.search("Patient?identifier=urn:ehpad:ipp|")) == [a]
    assert ids(client.search("Patient?gender=female&identifier:not=urn:ehpad:ipp|A1")) == [b]


def test_token_on_codeable_concept_and_text(client: FhirClient) -> None:
    subject = client.create(patient())["id"]
    obs = client.create(observation(f"Patient/{subject}"))["id"]
    assert ids(client.search("Observation?code=http://loinc.org|29463-7")) == [obs]
    assert ids(client.search("Observation?code=http://loinc.org|8310-5")) == []
    cond = client.create({"resourceType": "Condition", "subject": {"reference": f"Patient/{subject}"},
                          "code": {"text": "Maladie d'Alzheimer"}})["id"]
    assert ids(client.search("Condition?code:text=maladie dalzheimer")) == [cond]


def test_boolean_token(client: FhirClient) -> None:
    active = client.create(patient(active=True))["id"]
    client.create(patient(active=False))
    assert ids(client.search("Patient?active=true")) == [active]


def test_reference_forms(client: FhirClient) -> None:
    p1 = client.create(patient())["id"]
    p2 = client.create(patient(family="Autre"))["id"]
    o1 = client.create(observation(f"Patient/{p1}"))["id"]
    client.create(observation(f"http://testserver/fhir/Patient/{p2}"))
    assert ids(client.search(f"Observation?subject=Patient/{p1}")) == [o1]
    assert ids(client.search(f"Observation?subject={p1}")) == [o1]
    assert ids(client.search(f"Observation?patient={p1}")) == [o1]
    assert ids(client.search(f"Observation?subject:Patient={p1}")) == [o1]
    assert len(ids(client.search(f"Observation?subject=http://testserver/fhir/Patient/{p2}"))) == 1


@pytest.mark.parametrize(("query", "expected"), [
    ("birthdate=1932-04-05", True), ("birthdate=1932-04", True), ("birthdate=1932", True),
    ("birthdate=1932-04-06", False), ("birthdate=ge1932-04-05", True), ("birthdate=gt1932-04-05", False),
    ("birthdate=lt1932-04-06", True), ("birthdate=le1932-04-04", False), ("birthdate=ne1932-04-05", False),
    ("birthdate=sa1932-04-04", True), ("birthdate=eb1932-04-06", True), ("birthdate=ap1932-04-01", True),
])
def test_date_prefixes_and_precision(client: FhirClient, query: str, expected: bool) -> None:
    created = client.create(patient())["id"]
    assert ids(client.search(f"Patient?{query}")) == ([created] if expected else [])


def test_date_search_reads_values_in_the_service_time_zone(client: FhirClient) -> None:
    """A dateTime at 00:30 in Paris is on that day in Paris, though still the day before in UTC."""
    subject = client.create(patient())["id"]
    obs = client.create(observation(f"Patient/{subject}", when="2026-11-02T00:30:00+01:00"))["id"]
    assert ids(client.search("Observation?date=2026-11-02")) == [obs]
    assert ids(client.search("Observation?date=2026-11-01")) == []


def test_bad_date_is_400(client: FhirClient) -> None:
    response = client.get("Patient?birthdate=yesterday")
    assert response.status_code == 400
    assert "birthdate" in diagnostics(response)


def test_quantity_and_number(client: FhirClient) -> None:
    subject = client.create(patient())["id"]
    heavy = client.create(observation(f"Patient/{subject}", value=82.4))["id"]
    light = client.create(observation(f"Patient/{subject}", value=48))["id"]
    assert ids(client.search("Observation?value-quantity=gt60")) == [heavy]
    assert ids(client.search("Observation?value-quantity=48")) == [light]
    assert ids(client.search("Observation?value-quantity=82.4|http://unitsofmeasure.org|kg")) == [heavy]
    assert ids(client.search("Observation?value-quantity=82.4|http://unitsofmeasure.org|g")) == []
    assert client.get("Observation?value-quantity=heavy").status_code == 400


def test_id_and_last_updated(client: FhirClient) -> None:
    a = client.create(patient())
    b = client.create(patient())
    assert ids(client.search(f"Patient?_id={a['id']}")) == [a["id"]]
    assert sorted(ids(client.search(f"Patient?_id={a['id']},{b['id']}"))) == sorted([a["id"], b["id"]])
    assert len(ids(client.search("Patient?_lastUpdated=gt2000-01-01"))) == 2
    assert ids(client.search("Patient?_lastUpdated=lt2000-01-01")) == []


def test_missing_modifier(client: FhirClient) -> None:
    with_birth = client.create(patient())["id"]
    without = client.create({"resourceType": "Patient", "name": [{"family": "Sans"}]})["id"]
    assert ids(client.search("Patient?birthdate:missing=true")) == [without]
    assert ids(client.search("Patient?birthdate:missing=false")) == [with_birth]
    # every resource has an id and a lastUpdated: true finds none, false keeps all
    for code in ("_id", "_lastUpdated"):
        assert ids(client.search(f"Patient?{code}:missing=true")) == []
        assert sorted(ids(client.search(f"Patient?{code}:missing=false"))) == sorted([with_birth, without])
        assert client.get(f"Patient?{code}:missing=maybe").status_code == 400


def test_tag_and_profile(client: FhirClient) -> None:
    tagged = client.create(patient(meta={"tag": [{"system": "urn:t", "code": "demo"}],
                                         "profile": ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"]}))
    client.create(patient())
    assert ids(client.search("Patient?_tag=urn:t|demo")) == [tagged["id"]]
    assert ids(client.search("Patient?_profile=https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient")) \
        == [tagged["id"]]


def test_unknown_parameter_strict_is_400(client: FhirClient) -> None:
    """Prefer: handling=strict refuses unknown parameters (search.html#errors)."""
    response = client.get("Observation?this-is-not-a-real-param=garbage", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert outcome_codes(response) == ["not-supported"]


def test_unknown_parameter_is_refused_unless_the_client_asks_for_lenient_handling(client: FhirClient) -> None:
    """Results that silently drop a filter the client believes applied are the most dangerous answer: strict is the
    default, ``Prefer: handling=strict`` says the same, ``handling=lenient`` ignores."""
    client.create(patient())
    for headers in ({}, {"Prefer": "handling=strict"}):
        refused = client.get("Patient?family=lefevre&this-is-not-a-real-param=garbage", headers=headers)
        assert refused.status_code == 400, refused.get_data(as_text=True)
        assert "this-is-not-a-real-param" in refused.get_json()["issue"][0]["diagnostics"]
    assert client.get("Patient?family=lefevre&_count=1&_total=accurate").status_code == 200  # known ones pass


def test_unknown_parameter_lenient_is_ignored_and_left_out_of_self_link(client: FhirClient) -> None:
    client.create(patient())
    bundle = client.search("Patient?family=lefevre&this-is-not-a-real-param=garbage",
                           headers={"Prefer": "handling=lenient"})
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "this-is-not-a-real-param" not in self_link
    assert "family=lefevre" in self_link
    assert bundle["total"] == 1
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "this-is-not-a-real-param" in outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_unsupported_modifier_is_always_400(client: FhirClient) -> None:
    response = client.get("Patient?family:sounds-like=martin")
    assert response.status_code == 400
    assert outcome_codes(response) == ["not-supported"]


def test_paging_follows_next_links_without_duplicates_while_others_write(client: FhirClient) -> None:
    made = [client.create(patient(family=f"Martin{i:02d}"))["id"] for i in range(7)]
    page = client.search("Patient?family=martin&_count=3")
    assert page["total"] == 7
    seen = ids(page)
    while True:
        next_link = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
        if next_link is None:
            break
        client.create(patient(family="Martin99"))  # a write between pages
        page = client.search(next_link.replace("http://testserver/fhir/", ""))
        seen += ids(page)
    assert seen[:7] == made
    assert len(seen) == len(set(seen))


def test_count_is_capped_and_zero_gives_only_total(client: FhirClient) -> None:
    client.create(patient())
    capped = client.search("Patient?_count=100000")
    self_link = next(lk["url"] for lk in capped["link"] if lk["relation"] == "self")
    assert "_count=200" in self_link
    only_total = client.search("Patient?_count=0")
    assert only_total["total"] == 1
    assert "entry" not in only_total
    assert client.get("Patient?_count=-1").status_code == 400
    assert client.get("Patient?_count=ten").status_code == 400


def test_post_search_takes_form_parameters(client: FhirClient) -> None:
    created = client.create(patient())["id"]
    response = client.request("POST", "Patient/_search", "family=lefevre",
                              content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert ids(response.get_json()) == [created]


def test_ins_identifier_search(client: FhirClient) -> None:
    created = client.create(patient(identifier=[ins_identifier("279035121518989")]))["id"]
    bundle = client.search("Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518989")
    assert ids(bundle) == [created]
