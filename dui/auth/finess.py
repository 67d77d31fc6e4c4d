"""FINESS numbers of establishments, as accounts, clients and tokens carry them.

Nine characters: the département (two digits, or 2A / 2B in Corsica), six digits, and a Luhn key over the
first eight (the rule of ``dui.demo.identities.finess``). For Corsican numbers the key is computed with the
département read as 20: UNCONFIRMED against the FINESS nomenclature.
"""

from __future__ import annotations

import re

_FINESS = re.compile(r"(?:\d{2}|2A|2B)\d{7}")


def luhn_key(digits: str) -> str:
    """The Luhn check digit that completes ``digits``."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 0:
            n *= 2
            n = n - 9 if n > 9 else n
        total += n
    return str((10 - total % 10) % 10)


def check_finess(value: str) -> str:
    """``value`` (upper-cased) if it is a FINESS number with a right key; ``ValueError`` saying what is wrong."""
    number = value.strip().upper()
    if not _FINESS.fullmatch(number):
        raise ValueError(f"a FINESS number has 9 characters (département, 6 digits, key), not {value!r}")
    body = number[:8].replace("2A", "20", 1).replace("2B", "20", 1) if number[:2] in ("2A", "2B") else number[:8]
    if luhn_key(body) != number[8]:
        raise ValueError(f"FINESS {number}: the key (last digit) is wrong")
    return number
