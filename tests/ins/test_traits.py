"""The five INS traits: their rules, and the coherence of a matricule with them (DOMAIN.md §1.3-1.4)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ins import InsTraits, NirError, control_key, parse_matricule
from ins.traits import check_coherence, check_traits, differences, wire_name

TODAY = date(2026, 11, 24)
HELENE = InsTraits("Lefèvre", ("Hélène", "Marie-Thérèse"), "1938-04-12", "F", "69123")
NIR = "2380469123045" + control_key("2380469123045")


def fields(traits: InsTraits, qualified: bool = False) -> list[str]:
    return [p.field for p in check_traits(traits, TODAY, qualified=qualified)]


def test_valid_traits() -> None:
    assert check_traits(HELENE, TODAY) == []
    assert check_traits(InsTraits("N'Guessan", ("Jean-Pierre",), "1950-08", "M", "99127"), TODAY) == []
    assert check_traits(InsTraits("Le Goff", ("Yann",), "1930", "M", "2B033"), TODAY) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"birth_family": ""}, "birth_family"),
    ({"birth_family": "Dupont2"}, "birth_family"),
    ({"birth_family": "Du--pont"}, "birth_family"),
    ({"birth_family": "-Dupont"}, "birth_family"),
    ({"birth_family": "A" * 101}, "birth_family"),
    ({"birth_given_names": ()}, "birth_given_names"),
    ({"birth_given_names": ("Jean!",)}, "birth_given_names"),
    ({"birth_date": "1938-02-30"}, "birth_date"),
    ({"birth_date": "2027-01-01"}, "birth_date"),
    ({"birth_date": "1849-12-31"}, "birth_date"),
    ({"birth_date": "12/04/1938"}, "birth_date"),
    ({"sex": "X"}, "sex"),
    ({"birth_place": "6912"}, "birth_place"),
    ({"birth_place": "2C004"}, "birth_place"),
])
def test_each_rule_names_its_field(change: dict[str, object], field: str) -> None:
    traits = InsTraits(**{**HELENE.__dict__, **change})  # type: ignore[arg-type]
    assert fields(traits) == [field]


def test_unknown_birth_place_is_refused_only_when_qualified() -> None:
    unknown = InsTraits(**{**HELENE.__dict__, "birth_place": "99999"})
    assert fields(unknown) == []
    assert fields(unknown, qualified=True) == ["birth_place"]


def test_messages_never_repeat_the_value() -> None:
    traits = InsTraits("Dupont2", ("Jean!",), "1938-02-30", "X", "6912")
    for problem in check_traits(traits, TODAY):
        assert "Dupont2" not in problem.message and "1938" not in problem.message


def test_coherence_with_the_matricule() -> None:
    matricule = parse_matricule(NIR)
    assert check_coherence(matricule, HELENE) == []
    male = InsTraits(**{**HELENE.__dict__, "sex": "M"})
    assert [p.field for p in check_coherence(matricule, male)] == ["sex"]
    other_year = InsTraits(**{**HELENE.__dict__, "birth_date": "1939-04-12"})
    other_month = InsTraits(**{**HELENE.__dict__, "birth_date": "1938-05-12"})
    assert [p.field for p in check_coherence(matricule, other_year)] == ["birth_date"]
    assert [p.field for p in check_coherence(matricule, other_month)] == ["birth_date"]
    abroad = InsTraits(**{**HELENE.__dict__, "birth_place": "99352"})
    assert [(p.field, p.severity) for p in check_coherence(matricule, abroad)] == [("birth_place", "warning")]


@pytest.mark.parametrize(("value", "words"), [
    ("2380469123045", "15 characters"), ("23804691230X5AB", "digits only"), ("5380469123045" + "00", "first digit"),
    ("2380069123045" + control_key("2380069123045"), "month"), ("238046912304500", "control key"),
])
def test_matricule_errors_say_which_part(value: str, words: str) -> None:
    with pytest.raises(NirError, match=words):
        parse_matricule(value)


def test_wire_names() -> None:
    assert wire_name("N’Guessan Œuvray-d'Arc") == "N'GUESSAN OEUVRAY-D'ARC"
    assert wire_name("  Hélène   Marie ") == "HELENE MARIE"


@given(st.text(max_size=40))
def test_wire_name_is_idempotent_and_in_the_ins_alphabet(text: str) -> None:
    once = wire_name(text)
    assert wire_name(once) == once
    assert set(once) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' -")


def test_differences_ignore_case_and_accents() -> None:
    upper = InsTraits("LEFEVRE", ("HELENE", "MARIE-THERESE"), "1938-04-12", "F", "69123")
    assert differences(HELENE, upper) == []
    assert differences(HELENE, InsTraits("LEFEVRE", ("HELENE",), "1938-04-13", "F", None)) == [
        "birth_given_names", "birth_date"]
