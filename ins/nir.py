"""NIR / NIA: the 15-character matricule and its control key.

Layout ``S AA MM LLLLL OOO KK`` (sex, year, month, place of birth, order, key). The key is
``97 - (N mod 97)`` where N is the first 13 characters read as a number, Corsica's ``2A``/``2B``
being read as ``19``/``18`` first (INSEE; the same algorithm as python-stdnum ``fr.nir``).

The leading digit is 1 (male) or 2 (female) for a NIR; 7 and 8 are used for temporary numbers
(NIA). Months 20 and above stand for an unknown or special month. Both lists are
UNCONFIRMED against an authoritative source and kept in the two constants below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ins.errors import NirError

MALE_DIGITS = frozenset("17")
FEMALE_DIGITS = frozenset("28")


def _numeric(first13: str) -> int:
    return int(first13.replace("2A", "19").replace("2B", "18"))


def control_key(first13: str) -> str:
    """The two-digit key of the first 13 characters of a NIR."""
    if len(first13) != 13:
        raise NirError("a NIR has 13 characters before its key")
    try:
        return f"{97 - _numeric(first13) % 97:02d}"
    except ValueError:
        raise NirError("a NIR holds digits only, except 2A/2B for Corsica") from None


def is_valid(nir: str) -> bool:
    """True when ``nir`` is 15 characters of the right shape with the right key."""
    try:
        parse_matricule(nir)
    except NirError:
        return False
    return True


@dataclass(frozen=True)
class Matricule:
    """A well-formed matricule INS split into its parts."""

    value: str

    @property
    def sex_digit(self) -> str:
        return self.value[0]

    @property
    def sex(self) -> str:
        """``M`` or ``F``, read from the leading digit."""
        return "M" if self.sex_digit in MALE_DIGITS else "F"

    @property
    def year(self) -> str:
        """The last two digits of the year of birth."""
        return self.value[1:3]

    @property
    def month(self) -> int | None:
        """The month of birth, None when the matricule says it is unknown (20 and above)."""
        month = int(self.value[3:5])
        return month if 1 <= month <= 12 else None

    @property
    def place(self) -> str:
        """Five characters: département + commune (COG), or ``99`` + country code for people born abroad."""
        return self.value[5:10]

    @property
    def born_abroad(self) -> bool:
        return self.place.startswith("99")


def parse_matricule(value: str) -> Matricule:
    """Check a matricule INS; ``NirError`` says which part is wrong (never repeating the value)."""
    if not isinstance(value, str):
        raise NirError("a matricule INS is a string of 15 characters")
    if len(value) != 15:
        raise NirError(f"a matricule INS has 15 characters (13 and a 2-digit key), not {len(value)}")
    if not re.fullmatch(r"[0-9]{5}(2[AB]|[0-9]{2})[0-9]{8}", value):
        raise NirError("a matricule INS holds digits only, except 2A/2B for a birth in Corsica")
    if value[0] not in MALE_DIGITS | FEMALE_DIGITS:
        raise NirError("the first digit of a matricule INS (sex) must be 1 or 2 (7 or 8 for a temporary number)")
    if value[3:5] == "00" or 13 <= int(value[3:5]) <= 19:
        raise NirError("characters 4-5 of a matricule INS (month of birth) must be 01-12, or 20 and above "
                       "for an unknown month")
    if control_key(value[:13]) != value[13:]:
        raise NirError("the control key of the matricule INS is wrong (97 - the first 13 digits mod 97)")
    return Matricule(value)
