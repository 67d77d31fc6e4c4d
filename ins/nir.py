"""NIR / NIA: the 15-character matricule and its control key.

Layout ``S AA MM LLLLL OOO KK`` (sex, year, month, place of birth, order, key). The key is
``97 - (N mod 97)`` where N is the first 13 characters read as a number, Corsica's ``2A``/``2B``
being read as ``19``/``18`` first (INSEE; the same algorithm as python-stdnum ``fr.nir``).
"""

from __future__ import annotations

import re

from ins.errors import NirError

_SHAPE = re.compile(r"[12378][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])(2[AB]|[0-9]{2})[0-9]{3}[0-9]{3}[0-9]{2}")


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
    if len(nir) != 15 or not _SHAPE.fullmatch(nir):
        return False
    return control_key(nir[:13]) == nir[13:]
