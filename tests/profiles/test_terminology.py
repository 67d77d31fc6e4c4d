"""Terminology.check: value-set membership from compose and expansion, and UNKNOWN when the data cannot tell."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_profiles.context import Context
from fhir_profiles.package import Package, read_package
from fhir_profiles.terminology import Membership, Terminology
from tests.conftest import conformance_dir

MEMBER, NOT_MEMBER, UNKNOWN = Membership.MEMBER, Membership.NOT_MEMBER, Membership.UNKNOWN
H = "http://example.org/cs/hierarchy"
FLAT = "http://example.org/cs/flat"
ABSENT = "http://example.org/cs/absent"
VS = "http://example.org/vs/"

HIERARCHY = {
    "resourceType": "CodeSystem", "url": H, "content": "complete", "hierarchyMeaning": "is-a",
    "concept": [
        {"code": "A", "concept": [
            {"code": "A1", "concept": [{"code": "A11"}]},
            {"code": "A2", "property": [{"code": "status", "valueCode": "retired"}]},
        ]},
        {"code": "B", "property": [{"code": "child", "valueCode": "A11"}]},  # a second parent, v3 style
    ],
}
FRAGMENT = {"resourceType": "CodeSystem", "url": FLAT, "content": "fragment", "caseSensitive": False,
            "concept": [{"code": "Known"}]}


def vs(name: str, include: list[dict[str, Any]], exclude: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    compose: dict[str, Any] = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": VS + name, "compose": compose}


def filtered(op: str, value: str, prop: str = "concept") -> list[dict[str, Any]]:
    return [{"system": H, "filter": [{"property": prop, "op": op, "value": value}]}]


VALUE_SETS = [
    vs("explicit", [{"system": H, "concept": [{"code": "A1"}, {"code": "Z"}]}]),
    vs("whole", [{"system": H}]),
    vs("absent", [{"system": ABSENT}]),
    vs("import", [{"valueSet": [VS + "explicit"]}, {"system": FLAT, "concept": [{"code": "Other"}]}]),
    vs("cycle-1", [{"system": H, "concept": [{"code": "B"}]}, {"valueSet": [VS + "cycle-2"]}]),
    vs("cycle-2", [{"valueSet": [VS + "cycle-1"]}]),
    vs("is-a", filtered("is-a", "A")),
    vs("descendent-of", filtered("descendent-of", "A")),
    vs("is-not-a", filtered("is-not-a", "A1")),
    vs("retired", filtered("=", "retired", "status")),
    vs("no-such-property", filtered("=", "x", "colour")),
    vs("unsupported-op", filtered("is-b", "A")),
    vs("exclude", [{"system": H}], [{"system": H, "concept": [{"code": "A1"}]}]),
    vs("exclude-absent", [{"system": H}], [{"system": ABSENT}]),
    vs("exclude-undecided", [{"system": H}], filtered("=", "x", "colour")),
    vs("exclude-unknown-vs", [{"system": H}], [{"valueSet": [VS + "nowhere"]}]),
    vs("fragment", [{"system": FLAT}]),
    vs("two-systems", [{"system": H, "concept": [{"code": "A"}]}, {"system": FLAT, "concept": [{"code": "A"}]}]),
    {"resourceType": "ValueSet", "url": VS + "expanded", "compose": {"include": [{"system": ABSENT}]},
     "expansion": {"contains": [{"system": ABSENT, "code": "x"}, {"code": "group", "abstract": True,
                                 "contains": [{"system": ABSENT, "code": "y"}]}]}},
]


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    package = Package("example.terminology", "1.0.0", resources=(HIERARCHY, FRAGMENT, *VALUE_SETS))
    return Terminology(Context([package], shipped=False))


@pytest.mark.parametrize(("value_set", "system", "code", "expected"), [
    ("explicit", H, "A1", MEMBER),
    ("explicit", H, "Z", MEMBER),  # listed in the value set: a member whatever the code system says
    ("explicit", H, "A", NOT_MEMBER),
    ("explicit", FLAT, "A1", NOT_MEMBER),
    ("whole", H, "A11", MEMBER),
    ("whole", H, "C", NOT_MEMBER),
    ("import", H, "A1", MEMBER),
    ("import", FLAT, "Other", MEMBER),
    ("import", H, "B", NOT_MEMBER),
    ("cycle-1", H, "B", MEMBER),
    ("is-a", H, "A", MEMBER),
    ("is-a", H, "A11", MEMBER),
    ("is-a", H, "A2", MEMBER),
    ("is-a", H, "B", NOT_MEMBER),
    ("descendent-of", H, "A", NOT_MEMBER),
    ("descendent-of", H, "A1", MEMBER),
    ("is-not-a", H, "A11", NOT_MEMBER),
    ("is-not-a", H, "B", MEMBER),
    ("is-not-a", H, "A2", MEMBER),
    ("retired", H, "A2", MEMBER),
    ("retired", H, "A", NOT_MEMBER),
    ("exclude", H, "A1", NOT_MEMBER),
    ("exclude", H, "A11", MEMBER),
    ("exclude-absent", H, "A", MEMBER),  # excluding codes of another system leaves these alone
    ("fragment", FLAT, "Known", MEMBER),
    ("fragment", FLAT, "known", MEMBER),  # the code system is not case-sensitive
    ("expanded", ABSENT, "y", MEMBER),
    ("expanded", ABSENT, "z", NOT_MEMBER),
    ("two-systems", None, "A", MEMBER),
    ("whole", None, "A2", MEMBER),
    ("whole", None, "Q", NOT_MEMBER),
])
def test_membership(terminology: Terminology, value_set: str, system: str | None, code: str,
                    expected: Membership) -> None:
    result = terminology.check(VS + value_set, system, code)
    assert result.membership is expected, result.reason
    if expected is NOT_MEMBER:
        named = f"{system}|{code}" if system else repr(code)
        assert result.reason == f"code {named} is not in value set {VS + value_set}"
    if expected is MEMBER:
        assert result.reason == ""


def test_a_second_parent_from_the_child_property(terminology: Terminology) -> None:
    hierarchy_b = Package("b", "1", resources=(HIERARCHY, vs("is-a-b", [{"system": H, "filter": [
        {"property": "concept", "op": "is-a", "value": "B"}]}])))
    check = Terminology(Context([hierarchy_b], shipped=False)).check
    assert check(VS + "is-a-b", H, "A11").membership is MEMBER
    assert check(VS + "is-a-b", H, "A1").membership is NOT_MEMBER


@pytest.mark.parametrize(("value_set", "system", "code", "words"), [
    ("absent", ABSENT, "x", f"code system {ABSENT} is not at hand"),
    ("nowhere", H, "A", f"value set {VS}nowhere is not at hand"),
    ("cycle-1", H, "A", "imports itself"),
    ("cycle-2", H, "A", "imports itself"),
    ("no-such-property", H, "A", "no property 'colour'"),
    ("unsupported-op", H, "A", "is-b"),
    ("exclude-undecided", H, "A", "no property 'colour'"),
    ("exclude-unknown-vs", H, "A", f"value set {VS}nowhere is not at hand"),
    ("exclude-unknown-vs", None, "A", f"value set {VS}nowhere is not at hand"),
    ("fragment", FLAT, "Unlisted", "content 'fragment'"),
    ("absent", None, "x", f"code system {ABSENT} is not at hand"),
])
def test_unknown_says_why(terminology: Terminology, value_set: str, system: str | None, code: str,
                          words: str) -> None:
    result = terminology.check(VS + value_set, system, code)
    assert result.membership is UNKNOWN
    assert words in result.reason
    assert VS + value_set in result.reason


def test_expansions_are_cached_per_instance(terminology: Terminology, monkeypatch: pytest.MonkeyPatch) -> None:
    terminology.check(VS + "is-a", H, "A")
    monkeypatch.setattr(Context, "value_set", lambda self, url: pytest.fail(f"value set {url} read again"))
    assert terminology.check(VS + "is-a", H, "A1").membership is MEMBER


@pytest.fixture(scope="module")
def base_only() -> Terminology:
    return Terminology(Context(shipped=False))


@pytest.mark.parametrize(("value_set", "system", "code", "expected"), [
    ("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1", "http://hl7.org/fhir/administrative-gender",
     "female", MEMBER),
    ("http://hl7.org/fhir/ValueSet/administrative-gender", None, "unknown", MEMBER),
    ("http://hl7.org/fhir/ValueSet/administrative-gender", "http://hl7.org/fhir/administrative-gender", "F",
     NOT_MEMBER),
    # v3 hierarchy: ActEncounterCode is ActCode is-a _ActEncounterCode; ACUTE is nested under IMP
    ("http://terminology.hl7.org/ValueSet/v3-ActEncounterCode", "http://terminology.hl7.org/CodeSystem/v3-ActCode",
     "ACUTE", MEMBER),
    ("http://terminology.hl7.org/ValueSet/v3-ActEncounterCode", "http://terminology.hl7.org/CodeSystem/v3-ActCode",
     "CASH", NOT_MEMBER),
    ("http://hl7.org/fhir/ValueSet/marital-status", "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "UNK",
     MEMBER),
    ("http://hl7.org/fhir/ValueSet/marital-status", "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "NI",
     NOT_MEMBER),
    ("http://hl7.org/fhir/ValueSet/observation-codes", "http://loinc.org", "29463-7", UNKNOWN),
])
def test_base_r4_value_sets(base_only: Terminology, value_set: str, system: str | None, code: str,
                            expected: Membership) -> None:
    assert base_only.check(value_set, system, code).membership is expected


@pytest.mark.conformance
def test_fr_core_value_sets() -> None:
    fr_core = read_package((conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz").read_bytes())
    check = Terminology(Context([fr_core], shipped=False)).check
    gender_ins = "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-patient-gender-INS"
    gender = "http://hl7.org/fhir/administrative-gender"
    assert check(gender_ins, gender, "female").membership is MEMBER
    assert check(gender_ins, None, "male").membership is MEMBER
    assert check(gender_ins, gender, "other").membership is NOT_MEMBER
    identifier_type = "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-patient-identifier-type"
    fr_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
    assert check(identifier_type, fr_0203, "INS-NIR").membership is MEMBER
    assert check(identifier_type, fr_0203, "INS-NIR-TEST").membership is NOT_MEMBER  # in the system, not the set
    assert check(identifier_type, "http://terminology.hl7.org/CodeSystem/v2-0203", "PI").membership is MEMBER
    assert check(identifier_type, "http://terminology.hl7.org/CodeSystem/v2-0203", "MR").membership is NOT_MEMBER
    reliability = "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-identity-reliability"
    assert check(reliability, "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445", "VALI").membership \
        is MEMBER
    civility = check("https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-civility",
                     "https://mos.esante.gouv.fr/NOS/TRE_R81-Civilite/FHIR/TRE-R81-Civilite", "MME")
    assert civility.membership is UNKNOWN and "TRE-R81-Civilite is not at hand" in civility.reason
