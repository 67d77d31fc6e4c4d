"""The five INS traits (traits stricts) and their rules.

An INS is a matricule plus the identity traits the national databases hold for it: birth family name,
the full ordered list of birth given names, birth date, sex and birth place (INSEE COG code of the
commune at the date of birth, ``99xxx`` for a country). The rules below check what a record may hold
before it can carry an INS, and whether a matricule is coherent with its traits (sex digit, year and
month of birth, place). Problems name the field and the rule, never the value.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from ins.nir import Matricule

SEXES = {"M": "male", "F": "female", "I": "unknown"}  # INS sex -> FHIR gender (FR Core gender-INS value set)
GENDERS = {gender: sex for sex, gender in SEXES.items()}
UNKNOWN_PLACE = "99999"
EARLIEST_BIRTH_YEAR = 1850  # plausibility bound of a birth date
MAX_NAME_LENGTH = 100

_NAME = re.compile(r"[^\W\d_](?:[^\W\d_]|[ '\-](?=[^\W\d_]))*")  # letters; single separators between letters
_COG = re.compile(r"[0-9]{5}|2[AB][0-9]{3}")
_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


@dataclass(frozen=True)
class TraitProblem:
    field: str  # birth_family, birth_given_names, first_given, birth_date, sex, birth_place, matricule
    message: str
    severity: str = "error"  # or "warning"


@dataclass(frozen=True)
class InsTraits:
    birth_family: str
    birth_given_names: tuple[str, ...]  # the full ordered list
    birth_date: str  # FHIR date text: YYYY-MM-DD (YYYY-MM or YYYY when the day or month is unknown)
    sex: str  # M, F or I
    birth_place: str | None = None  # COG

    @property
    def first_given(self) -> str:
        return self.birth_given_names[0] if self.birth_given_names else ""


def wire_name(text: str) -> str:
    """A name as INS services carry it: upper case, no diacritics, letters, space, hyphen, apostrophe."""
    text = text.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE").replace("’", "'")
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    kept = re.sub(r"[^A-Z' \-]", " ", kept)
    return re.sub(r" {2,}", " ", kept).strip()


def birth_date_parts(text: str) -> tuple[int, int | None, int | None] | None:
    """(year, month, day) of a FHIR date, None when it is not one (or not a real calendar date)."""
    found = _DATE.fullmatch(text)
    if not found:
        return None
    year, month, day = (int(p) if p else None for p in found.groups())
    assert year is not None
    try:
        date(year, month or 1, day or 1)
    except ValueError:
        return None
    return year, month, day


def check_traits(traits: InsTraits, today: date, *, qualified: bool = False) -> list[TraitProblem]:
    """Every way ``traits`` break the INS rules (empty when they hold)."""
    problems = _check_name("birth_family", "birth family name", traits.birth_family)
    if not traits.birth_given_names:
        problems.append(TraitProblem("birth_given_names", "the list of birth given names is empty"))
    for given in traits.birth_given_names:
        problems += _check_name("birth_given_names", "birth given name", given)
    problems += _check_birth_date(traits.birth_date, today)
    if traits.sex not in SEXES:
        problems.append(TraitProblem("sex", "the sex of an INS identity is male, female or unknown"))
    if traits.birth_place is not None and not _COG.fullmatch(traits.birth_place):
        problems.append(TraitProblem("birth_place", "the birth place is an INSEE COG code: 5 characters "
                                     "(2A/2B for Corsica, 99xxx for a country)"))
    elif traits.birth_place == UNKNOWN_PLACE and qualified:
        problems.append(TraitProblem("birth_place", "a qualified identity cannot have an unknown birth place "
                                     "(99999; FR Core fr-core-3)"))
    return problems


def check_coherence(matricule: Matricule, traits: InsTraits) -> list[TraitProblem]:
    """Where the matricule contradicts the traits: sex digit, year and month of birth, place of birth.

    A different place is only a warning: the COG of a commune may have changed since the matricule
    was given (former départements, merged communes).
    """
    problems: list[TraitProblem] = []
    if traits.sex in ("M", "F") and matricule.sex != traits.sex:
        problems.append(TraitProblem("sex", "the sex does not match the first digit of the matricule INS"))
    parts = birth_date_parts(traits.birth_date)
    if parts is not None:
        year, month, _ = parts
        if f"{year % 100:02d}" != matricule.year:
            problems.append(TraitProblem("birth_date", "the year of birth does not match digits 2-3 of the "
                                         "matricule INS"))
        if month is not None and matricule.month is not None and month != matricule.month:
            problems.append(TraitProblem("birth_date", "the month of birth does not match digits 4-5 of the "
                                         "matricule INS"))
    place = traits.birth_place
    if place and place != UNKNOWN_PLACE and place != matricule.place:
        abroad = place.startswith("99")
        if abroad != matricule.born_abroad:
            problems.append(TraitProblem("birth_place", "the birth place (France or abroad) does not match "
                                         "digits 6-10 of the matricule INS", "warning"))
    return problems


def differences(a: InsTraits, b: InsTraits) -> list[str]:
    """The fields on which two sets of traits differ once written as INS services write them."""
    out = []
    if wire_name(a.birth_family) != wire_name(b.birth_family):
        out.append("birth_family")
    if [wire_name(g) for g in a.birth_given_names] != [wire_name(g) for g in b.birth_given_names]:
        out.append("birth_given_names")
    if a.birth_date != b.birth_date:
        out.append("birth_date")
    if a.sex != b.sex:
        out.append("sex")
    if a.birth_place and b.birth_place and a.birth_place != b.birth_place:
        out.append("birth_place")
    return out


def _check_name(field: str, label: str, value: str) -> list[TraitProblem]:
    if not value.strip():
        return [TraitProblem(field, f"the {label} is empty")]
    if len(value) > MAX_NAME_LENGTH:
        return [TraitProblem(field, f"the {label} is longer than {MAX_NAME_LENGTH} characters")]
    if not _NAME.fullmatch(unicodedata.normalize("NFC", value.replace("’", "'"))):
        return [TraitProblem(field, f"the {label} may hold letters, and single spaces, hyphens or apostrophes "
                             "between letters only")]
    return []


def _check_birth_date(text: str, today: date) -> list[TraitProblem]:
    parts = birth_date_parts(text)
    if parts is None:
        return [TraitProblem("birth_date", "the birth date is not a real calendar date (YYYY-MM-DD)")]
    year, month, day = parts
    if year < EARLIEST_BIRTH_YEAR:
        return [TraitProblem("birth_date", f"the birth date is before {EARLIEST_BIRTH_YEAR}")]
    if date(year, month or 1, day or 1) > today:
        return [TraitProblem("birth_date", "the birth date is in the future")]
    return []
