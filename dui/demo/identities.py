"""Synthetic French identities for demonstration and tests: names, birth places, NIR, FINESS, RPPS.

Everything is fictitious and deterministic for a given seed. INS use the TEST OID
(``urn:oid:1.2.250.1.213.1.4.10``), never a production one; their NIR are consistent with the
person's sex, birth month and birth place, and carry a valid key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date

from dui.auth.finess import luhn_key
from ins import control_key

FAMILY_NAMES = [
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
    "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier",
    "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Legrand", "Garnier",
    "Faure", "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Roussel", "Perrin", "Morin", "Mathieu",
    "Clément", "Gauthier", "Dumont", "Fontaine", "Chevalier", "Robin", "N'Guessan", "Le Goff", "Œuvray",
    "Benoît", "Ferrand", "Lefort", "Pélissier", "Chaumette", "Da Silva", "Ben Saïd", "Caron", "Besnard",
]  # fmt: skip
WOMEN = [
    "Jeanne", "Marie", "Marguerite", "Germaine", "Louise", "Yvonne", "Madeleine", "Suzanne", "Simone",
    "Denise", "Paulette", "Hélène", "Odette", "Lucienne", "Andrée", "Renée", "Geneviève", "Thérèse",
    "Colette", "Éliane", "Josette", "Gisèle", "Monique", "Françoise",
]  # fmt: skip
MEN = [
    "Jean", "Pierre", "Louis", "André", "René", "Marcel", "Roger", "Robert", "Henri", "Georges", "Paul",
    "Maurice", "Raymond", "Lucien", "Joseph", "Marcel", "Émile", "Gérard", "Bernard", "Jacques", "Michel",
    "Claude", "Étienne", "François",
]  # fmt: skip
SECOND_GIVEN = {"female": ["Marie", "Louise", "Anne", "Jeanne", "Hélène", "Thérèse"],
                "male": ["Joseph", "Marie", "Louis", "Pierre", "Jean", "Henri"]}

# (COG code, label): communes of birth, and countries (99xxx) for people born abroad.
BIRTH_PLACES = [
    ("69123", "Lyon"), ("69266", "Villeurbanne"), ("42218", "Saint-Étienne"), ("38185", "Grenoble"),
    ("75112", "Paris 12e Arrondissement"), ("13055", "Marseille"), ("63113", "Clermont-Ferrand"),
    ("01053", "Bourg-en-Bresse"), ("71270", "Mâcon"), ("2A004", "Ajaccio"), ("2B033", "Bastia"),
    ("99352", "Algérie"), ("99127", "Italie"), ("99139", "Portugal"), ("99134", "Espagne"),
    ("99350", "Maroc"),
]  # fmt: skip


def finess(departement: str, body: str) -> str:
    """A 9-character FINESS number: département, six digits, Luhn key."""
    return departement + body + luhn_key(departement + body)


def rpps(body: str) -> str:
    """An 11-digit RPPS number: 10 digits and a Luhn key."""
    return body + luhn_key(body)


@dataclass(frozen=True)
class Identity:
    family: str  # birth name
    given: list[str]  # birth given names, in civil-status order
    usual_family: str | None  # married name, when used
    gender: str  # "female" or "male"
    birth_date: date
    birth_place: tuple[str, str]  # (COG, label)
    nir: str

    @property
    def display(self) -> str:
        return f"{self.given[0]} {(self.usual_family or self.family).upper()}"


def nir_for(gender: str, birth: date, cog: str, order: int) -> str:
    """A NIR consistent with the identity: sex, year, month, place of birth, order, key."""
    first13 = f"{1 if gender == 'male' else 2}{birth.year % 100:02d}{birth.month:02d}{cog}{order:03d}"
    return first13 + control_key(first13)


def identity(rng: random.Random, index: int) -> Identity:
    gender = "female" if rng.random() < 0.72 else "male"  # EHPAD residents are mostly women
    given = [rng.choice(WOMEN if gender == "female" else MEN)]
    if rng.random() < 0.6:
        second = rng.choice(SECOND_GIVEN[gender])
        if second != given[0]:
            given.append(second)
    family = rng.choice(FAMILY_NAMES)
    usual = None
    if gender == "female" and rng.random() < 0.7:
        usual = rng.choice([n for n in FAMILY_NAMES if n != family])
    birth = date(rng.randint(1926, 1946), rng.randint(1, 12), rng.randint(1, 28))
    place = rng.choice(BIRTH_PLACES)
    return Identity(family, given, usual, gender, birth, place, nir_for(gender, birth, place[0], 1 + index % 997))
