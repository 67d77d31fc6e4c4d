"""Duplicate detection scoring: fold, the French phonetic key, Jaro-Winkler and compare()."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ins.matching import Match, Person, compare, fold, jaro_winkler, phonetic

# --- fold ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "folded"), [
    ("Hélène", "HELENE"),
    ("Œuvre", "OEUVRE"),
    ("Lætitia", "LAETITIA"),
    ("Straßburger", "STRASSBURGER"),
    ("N'Guessan", "N GUESSAN"),
    ("d’Artagnan", "D ARTAGNAN"),
    ("  Jean--Pierre   MARIE ", "JEAN PIERRE MARIE"),
    ("François", "FRANCOIS"),
    ("Noël Zoë", "NOEL ZOE"),
    ("Øster, Łukasz.", "OSTER LUKASZ"),
    ("Lot 2b", "LOT 2B"),
    ("", ""),
    ("'-.", ""),
])
def test_fold(raw: str, folded: str) -> None:
    assert fold(raw) == folded


@given(st.text())
def test_fold_output_alphabet_and_idempotence(text: str) -> None:
    folded = fold(text)
    assert set(folded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")
    assert folded == folded.strip()
    assert "  " not in folded
    assert fold(folded) == folded


# --- phonetic -----------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [
    ("Lefèvre", "Lefebvre", "Lefeuvre", "LEFEVRE"),
    ("Dupont", "Dupond"),
    ("Philippe", "Filipe", "Philipe"),
    ("Thomas", "Tomas"),
    ("Hélène", "Elène", "Helene"),
    ("Gauthier", "Gautier", "Gaultier"),
    ("Mathieu", "Matthieu"),
    ("Catherine", "Katherine"),
    ("Bertrand", "Bertran"),
    ("Laurent", "Lorent"),
    ("Rousseau", "Roussot"),
    ("N'Guessan", "N Guessan", "N-GUESSAN"),
    ("Jean-Pierre", "Jean Pierre", "JEAN PIERRE"),
    ("René", "Renée"),
    ("Aimé", "Aimée"),
    ("Emmanuel", "Emanuel"),
    ("Arnault", "Arnaud", "Arnaut"),
    ("Christophe", "Kristof"),
    ("Yves", "Ives"),
    ("Michel", "Michèle"),  # a final E after a heard consonant is silent: masculine and feminine share a key
])
def test_same_key(names: tuple[str, ...]) -> None:
    keys = {phonetic(name) for name in names}
    assert len(keys) == 1, keys
    assert keys != {""}


def test_spaces_are_kept_in_the_key_but_runs_together_give_the_same_sounds() -> None:
    assert phonetic("N'Guessan") == "N GES1"
    assert phonetic("NGUESSAN") == "NGES1"
    assert phonetic("N'Guessan").replace(" ", "") == phonetic("NGUESSAN")
    assert phonetic("Jean-Pierre") == "J1 PIER"


@pytest.mark.parametrize(("a", "b"), [
    ("Martin", "Bernard"),
    ("Dubois", "Durand"),
    ("Marie", "Mario"),  # a final O is heard
    ("Louis", "Louise"),  # the final E silences only itself: the S of Louise is heard
    ("Jean", "Jeanne"),  # AN before N is oral
    ("Julien", "Julienne"),
    ("Martin", "Martine"),
    ("Germain", "Germaine"),
    ("Denis", "Denise"),
    ("Schmitt", "Schmidt"),
])
def test_different_keys(a: str, b: str) -> None:
    assert phonetic(a) != phonetic(b)


@pytest.mark.parametrize(("name", "key"), [
    ("Dupont", "DYP3"), ("Lefebvre", "LEFEVR"), ("Gaultier", "GOTIER"), ("Christian", "KRISTI1"),
    ("Michel", "MIXEL"), ("Schmitt", "XMIT"), ("Georges", "JORJ"), ("Guillaume", "GIOM"), ("Maillard", "MAIAR"),
    ("Julien", "JYLI2"), ("Dubois", "DYBUA"), ("Rousseau", "RUSO"), ("Deschamps", "DEX1"), ("Agnès", "ANI"),
    ("Jacques", "JAK"), ("Lopez", "LOPE"), ("Leroux", "LERU"), ("Félix", "FELIKS"), ("H", ""), ("", ""),
])
def test_documented_keys(name: str, key: str) -> None:
    assert phonetic(name) == key


_FRENCH_LETTERS = "abcdefghijklmnopqrstuvwxyzàâäçéèêëîïôöùûüÿœæ"
french_names = st.text(alphabet=_FRENCH_LETTERS + " -'", max_size=30)


def _strip_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))


@given(french_names)
def test_phonetic_ignores_folding_case_and_accents(name: str) -> None:
    key = phonetic(name)
    assert phonetic(fold(name)) == key
    assert phonetic(name.upper()) == key
    assert phonetic(_strip_accents(name)) == key


@given(st.text())
def test_phonetic_of_any_text_is_a_clean_key(text: str) -> None:
    key = phonetic(text)
    assert key == key.strip()
    assert "  " not in key
    assert phonetic(fold(text)) == key


# --- Jaro-Winkler -------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("MARTHA", "MARHTA", 0.961),
    ("DWAYNE", "DUANE", 0.840),
    ("DIXON", "DICKSONX", 0.813),
    ("JELLYFISH", "SMELLYFISH", 0.896),
    ("ABC", "XYZ", 0.0),
    ("", "", 1.0),
    ("A", "", 0.0),
    ("DUPONT", "DUPONT", 1.0),
])
def test_jaro_winkler_known_values(a: str, b: str, expected: float) -> None:
    assert jaro_winkler(a, b) == pytest.approx(expected, abs=0.0005)


@given(st.text(alphabet="ABCDEHLMNORTU", max_size=12), st.text(alphabet="ABCDEHLMNORTU", max_size=12))
def test_jaro_winkler_is_symmetric_and_bounded(a: str, b: str) -> None:
    similarity = jaro_winkler(a, b)
    assert similarity == jaro_winkler(b, a)
    assert 0.0 <= similarity <= 1.0
    assert (similarity == 1.0) == (a == b)


# --- compare ------------------------------------------------------------------------------------

MARIE = Person(("DUPONT",), ("MARIE", "LOUISE", "MARIE"), "1950-03-02", "female", "75056")


_BASE = Person(("Dupont",), ("Marie",), "1950-03-02", "female")


def _marie(**changes: Any) -> Person:
    return replace(_BASE, **changes)


def test_identical_persons_are_certain() -> None:
    match = compare(MARIE, MARIE)
    assert match == Match(1.0, "certain", ("same family name", "same given name", "same birth date",
                                            "same birth place", "same sex"))


def test_same_traits_written_differently_are_certain() -> None:
    other = Person(("dupont",), ("Marie",), "1950-03-02", "female", "75056")
    assert compare(MARIE, other).grade == "certain"
    assert compare(MARIE, other).score == 1.0


@pytest.mark.parametrize("family", ["DUPOND", "DUPOMT", "DUPONTT", "DUPNOT"])
def test_typo_in_family_name_with_same_birth_date_is_at_least_probable(family: str) -> None:
    match = compare(MARIE, _marie(family_names=(family,)))
    assert match.grade in ("certain", "probable"), match
    assert 0.9 <= match.score < 1.0


def test_typo_without_same_sound_is_nearly_identical() -> None:
    match = compare(_marie(family_names=("BERNARD",)), _marie(family_names=("BERNRAD",)))
    assert "family names nearly identical" in match.reasons
    assert match.grade == "probable"


def test_married_name_against_birth_name_is_probable() -> None:
    married = _marie(family_names=("MARTIN", "DUPONT"))  # born Martin, uses Dupont
    match = compare(MARIE, married)
    assert match.grade in ("certain", "probable")
    assert "usual family name of one is the birth family name of the other" in match.reasons
    assert compare(married, MARIE).score == match.score


def test_only_usual_names_matching_counts_less() -> None:
    a = _marie(family_names=("MARTIN", "DUPONT"))
    b = _marie(family_names=("DURAND", "DUPONT"))
    match = compare(a, b)
    assert "only usual family names match" in match.reasons
    assert match.score < compare(MARIE, a).score
    assert match.grade != "certain"


def test_swapped_day_and_month_is_possible_or_better() -> None:
    match = compare(MARIE, _marie(birth_date="1950-02-03"))
    assert "day and month swapped" in match.reasons
    assert match.grade in ("probable", "possible")


@pytest.mark.parametrize(("date", "reason"), [
    ("1950-03-07", "same birth year and month, day typo"),
    ("1950-03-12", "same birth year and month, day typo"),
    ("1951-03-02", "birth year one digit off"),
    ("1950-08-02", "birth month one digit off"),
    ("1950", "same birth year (partial date)"),
    ("1950-03", "same birth year and month (partial date)"),
    ("1950-11-30", "same birth year only"),
    ("1943-07-12", "different birth dates"),
])
def test_birth_date_levels(date: str, reason: str) -> None:
    match = compare(MARIE, _marie(birth_date=date))
    assert reason in match.reasons
    assert match.grade != "certain"


def test_same_name_different_birth_year_and_sex_is_certainly_not() -> None:
    match = compare(MARIE, _marie(birth_date="1938-03-02", sex="male"))
    assert match.grade == "certainly-not"
    assert "different sex" in match.reasons


def test_different_sex_is_strong_but_not_absolute() -> None:
    match = compare(MARIE, _marie(sex="male"))
    assert match.grade == "possible"
    assert compare(MARIE, _marie(sex="unknown")).grade == "certain"
    assert compare(MARIE, _marie(sex=None)).grade == "certain"
    assert compare(MARIE, _marie(sex="other")).grade == "certain"


@pytest.mark.parametrize("place", ["69123", "75112", "99134", "2A004"])
def test_homonyms_born_elsewhere_are_not_certain(place: str) -> None:
    match = compare(MARIE, _marie(birth_place=place))
    assert match.grade == "probable"
    assert match.score < compare(MARIE, _marie(birth_place="75056")).score


def test_birth_place_levels() -> None:
    same_dept = compare(MARIE, _marie(birth_place="75112"))
    other_dept = compare(MARIE, _marie(birth_place="69123"))
    abroad = compare(MARIE, _marie(birth_place="99134"))
    assert "same birth département" in same_dept.reasons
    assert "born abroad against born in France" in abroad.reasons
    assert same_dept.score > other_dept.score > abroad.score
    corsica = compare(_marie(birth_place="2A004"), _marie(birth_place="2A247"))
    assert "same birth département" in corsica.reasons
    countries = compare(_marie(birth_place="99134"), _marie(birth_place="99109"))
    assert "different birth countries" in countries.reasons
    dom = compare(_marie(birth_place="97105"), _marie(birth_place="97209"))  # Guadeloupe / Martinique
    assert "different birth places" in dom.reasons
    unknown = compare(MARIE, _marie(birth_place="99999"))  # "unknown" is missing, not a country
    assert unknown.grade == "certain"


def test_composed_given_name_counts_partially() -> None:
    match = compare(_marie(given_names=("JEAN PIERRE",)), _marie(given_names=("Jean",)))
    assert "given names partly shared" in match.reasons
    assert match.grade == "probable"
    assert compare(_marie(given_names=("Jean-Pierre",)), _marie(given_names=("Jean Pierre",))).grade == "certain"


def test_any_given_name_against_any() -> None:
    match = compare(_marie(given_names=("MARIE", "LOUISE", "LOUISE")), _marie(given_names=("Louise",)))
    assert "same given name" in match.reasons
    assert match.grade == "certain"
    assert "given names sound alike" in compare(_marie(given_names=("Philippe",)),
                                                _marie(given_names=("Filipe",))).reasons


@pytest.mark.parametrize(("family", "given"), [
    ("BERTIER", "Marie"),  # sounds alike: BERTHIER
    ("DUPOND", "Marie"),  # sounds alike: DUPONT
    ("DUPOMT", "Marie"),  # a typo
    ("DUPONT", "Mary"),  # the given name sounds alike
])
def test_a_spelling_variant_is_never_certain(family: str, given: str) -> None:
    """``certain`` links records automatically: only identical traits (or the same INS) may be graded so."""
    base = _marie(family_names=("BERTHIER",)) if family == "BERTIER" else MARIE
    match = compare(base, _marie(family_names=(family,), given_names=(given,)))
    assert match.grade == "probable", match
    assert match.score >= 0.9


def test_names_with_or_without_spaces() -> None:
    match = compare(_marie(family_names=("N'Guessan",)), _marie(family_names=("NGUESSAN",)))
    assert match.grade == "certain"
    assert "same family name" in match.reasons
    match = compare(_marie(family_names=("N'Guessan",)), _marie(family_names=("NGUESAN",)))
    assert "family names sound alike" in match.reasons
    match = compare(_marie(family_names=("N'Guessan",)), _marie(family_names=("NGESSAN",)))  # G before E is soft
    assert "family names nearly identical" in match.reasons


def test_particles_and_composed_family_names() -> None:
    match = compare(_marie(family_names=("DE LA FONTAINE",)), _marie(family_names=("Fontaine",)))
    assert "family names partly shared" in match.reasons
    match = compare(_marie(family_names=("DE LA FONTAINE",)), _marie(family_names=("DE LA ROCHE",)))
    assert "different family names" in match.reasons


def test_long_names_sharing_a_prefix_are_not_typos() -> None:
    match = compare(_marie(family_names=("MARTIN",)), _marie(family_names=("MARTINEZ",)))
    assert "different family names" in match.reasons


def test_missing_fields_limit_the_grade() -> None:
    names_only = compare(Person(("DUPONT",), ("MARIE",)), Person(("Dupont",), ("Marie",)))
    assert names_only.score == 1.0
    assert names_only.grade == "possible"
    no_given = compare(_marie(given_names=()), _marie())
    assert no_given.score == 1.0 and no_given.grade == "possible"
    family_only = compare(Person(("DUPONT",)), Person(("DUPONT",)))
    assert family_only.grade == "certainly-not"
    assert compare(Person(), Person()) == Match(0.0, "certainly-not", ())
    partial = compare(MARIE, _marie(birth_date="1950-03"))
    assert partial.grade == "probable"


def test_malformed_traits_are_missing() -> None:
    assert compare(MARIE, _marie(birth_date="02/03/1950")).reasons == ("same family name", "same given name",
                                                                        "same sex")
    assert compare(MARIE, _marie(birth_place="Paris")).grade == "certain"


def test_clearly_different_persons() -> None:
    other = Person(("MARTIN",), ("JEAN",), "1931-11-21", "male", "69123")
    assert compare(MARIE, other).grade == "certainly-not"
    assert compare(MARIE, other).score == 0.0


# --- properties ---------------------------------------------------------------------------------

_FAMILY_POOL = ["Dupont", "Dupond", "DUPOMT", "Martin", "Martine", "N'Guessan", "NGUESSAN", "Lefèvre", "Lefebvre",
                "de la Fontaine", "Fontaine", "Müller", "", "Ø"]
_GIVEN_POOL = ["Marie", "Mario", "Jean", "Jean-Pierre", "JEAN PIERRE", "Philippe", "Filipe", "Hélène", "Louise", ""]
_PLACES = [None, "", "75056", "75112", "69123", "2A004", "2B033", "97105", "99134", "99999", "bad"]
_SEXES = [None, "male", "female", "other", "unknown", "MALE"]

names = st.one_of(st.sampled_from(_FAMILY_POOL), french_names)
dates = st.one_of(
    st.none(), st.just("not a date"),
    st.builds(lambda d, precision: d.isoformat()[:precision], st.dates(), st.sampled_from([4, 7, 10])),
    st.sampled_from(["1950-03-02", "1950-02-03", "1950-03-07", "1951-03-02", "1950", "1950-03"]),
)
persons = st.builds(
    Person,
    family_names=st.lists(names, max_size=3).map(tuple),
    given_names=st.lists(st.one_of(st.sampled_from(_GIVEN_POOL), french_names), max_size=3).map(tuple),
    birth_date=dates,
    sex=st.sampled_from(_SEXES),
    birth_place=st.sampled_from(_PLACES),
)


@given(persons, persons)
def test_score_is_symmetric_and_bounded(a: Person, b: Person) -> None:
    forward, backward = compare(a, b), compare(b, a)
    assert forward.score == backward.score
    assert forward.grade == backward.grade
    assert 0.0 <= forward.score <= 1.0
    assert forward.score == round(forward.score, 3)
    assert forward.grade in ("certain", "probable", "possible", "certainly-not")


@given(persons, persons)
def test_grades_follow_the_thresholds(a: Person, b: Person) -> None:
    match = compare(a, b)
    floor = {"certain": 0.95, "probable": 0.80, "possible": 0.60, "certainly-not": 0.0}[match.grade]
    assert match.score >= floor
    if match.grade == "certain":
        assert {"same birth date"} <= set(match.reasons)
        assert "different sex" not in match.reasons


@given(persons)
def test_a_person_compared_to_itself(person: Person) -> None:
    match = compare(person, person)
    birth_name = bool(person.family_names) and bool(fold(person.family_names[0]))
    full_date = person.birth_date is not None and len(person.birth_date) == 10 and person.birth_date[4] == "-"
    partial_date = any(reason.endswith("(partial date)") for reason in match.reasons)  # weaker evidence
    if (birth_name or not any(map(fold, person.family_names))) and not partial_date:
        compared = [r for r in match.reasons if r != "same sex"]  # sex only ever subtracts
        assert match.score == (1.0 if compared else 0.0)
    if birth_name and any(map(fold, person.given_names)) and full_date:
        assert match.grade == "certain"
