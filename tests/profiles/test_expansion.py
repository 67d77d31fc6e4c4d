"""fhir_profiles.expansion: complete expansions or a reason, displays by language, lookups and subsumption."""

from __future__ import annotations

import pytest

from fhir_profiles.context import Context
from fhir_profiles.expansion import Expander, NotExpandable, NotFound, Undecided, fold
from fhir_profiles.package import Package

CS = "http://example.org/cs/soins"
VS = "http://example.org/vs/"
SOINS = {
    "resourceType": "CodeSystem", "url": CS, "version": "1", "name": "Soins", "content": "complete",
    "concept": [
        {"code": "toilette", "display": "Toilette", "designation": [{"language": "en", "value": "Washing"}],
         "concept": [{"code": "douche", "display": "Douche"},
                     {"code": "bain", "display": "Bain", "property": [{"code": "status", "valueCode": "retired"}]}]},
        {"code": "repas", "display": "Aide au repas"},
    ],
}
SHIPPED = {"resourceType": "ValueSet", "url": VS + "shipped", "compose": {"include": [{"system": CS}]},
           "expansion": {"contains": [{"system": CS, "code": "repas"}]}}
PARTIAL = {"resourceType": "ValueSet", "url": VS + "partial",
           "compose": {"include": [{"system": CS}, {"system": "http://loinc.org"}]}}


@pytest.fixture(scope="module")
def expander() -> Expander:
    return Expander(Context([Package("example", "1.0.0", resources=(SOINS, SHIPPED, PARTIAL))], shipped=False))


def test_expand_from_the_shipped_expansion_or_from_the_compose(expander: Expander) -> None:
    assert [c.code for c in expander.expand(SHIPPED).concepts] == ["repas"]
    whole = expander.expand(SHIPPED, from_compose=True)
    assert [c.code for c in whole.concepts] == ["toilette", "douche", "bain", "repas"]
    assert [c.inactive for c in whole.concepts] == [False, False, True, False]
    assert whole.used == {CS: "1"}
    assert whole.concepts[0].display_in("en-GB") == "Washing" and whole.concepts[0].display_in("fr") == "Toilette"


def test_what_cannot_be_complete_is_refused_with_its_reason(expander: Expander) -> None:
    with pytest.raises(NotExpandable, match="loinc") as caught:
        expander.expand(PARTIAL)
    assert caught.value.code == "not-supported"
    with pytest.raises(NotExpandable) as costly:
        expander.expand(SHIPPED, from_compose=True, limit=3)
    assert costly.value.code == "too-costly"
    with pytest.raises(NotFound):
        expander.value_set(VS + "none")
    with pytest.raises(Undecided, match="loinc"):
        expander.validate_in_value_set(PARTIAL, "http://loinc.org", "1-8")
    assert expander.validate_in_value_set(PARTIAL, CS, "bain").result is True


def test_lookup_subsumes_and_fold(expander: Expander) -> None:
    found = expander.lookup(CS, "douche")
    assert found.parents == ("toilette",) and found.concept.display == "Douche"
    assert expander.lookup(CS, "toilette").children == ("bain", "douche")
    assert expander.subsumes(CS, "toilette", "bain") == "subsumes"
    assert expander.subsumes(CS, "repas", "bain") == "not-subsumed"
    with pytest.raises(NotFound):
        expander.lookup(CS, "sieste")
    with pytest.raises(NotExpandable):
        expander.lookup("http://loinc.org", "1-8")
    assert fold("Entité Légale") == "entite legale"
    check = expander.validate_in_code_system(CS, "douche", "Bain")
    assert check.result is True and check.message and check.display == "Douche"
