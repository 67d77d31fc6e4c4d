"""How string values are compared: the way EHPAD staff type French names.

FHIR string search is case- and accent-insensitive and matches the start of a value
(http://hl7.org/fhir/R4/search.html#string). Beyond that, names are written in many ways: Hélène,
HELENE, Helene; Lefèvre, LEFEVRE; N'Guessan, N’GUESSAN, NGUESSAN; Jean-Pierre, JEAN PIERRE; Œuvray,
OEUVRAY. Index values and search values go through the same ``normalize`` so that all of those
match:

1. Unicode compatibility decomposition (NFKD), then combining marks dropped: é -> e, ç -> c, and
   NFC/NFD inputs become identical;
2. ligatures and letters NFKD keeps whole are spelled out: œ -> oe, æ -> ae, ß -> ss, ø -> o...;
3. case folded;
4. everything that is not a letter or a digit is removed: apostrophes (' and ’), hyphens, spaces,
   dots. ``jean pierre``, ``jean-pierre`` and ``jeanpierre`` all find Jean-Pierre, and
   ``nguessan`` finds N'Guessan.
"""

from __future__ import annotations

import unicodedata

_SPELLED_OUT = str.maketrans({
    "œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D",
    "ł": "l", "Ł": "L", "ı": "i", "þ": "th", "Þ": "TH",
})  # fmt: skip


def normalize(value: str) -> str:
    """The comparison form of a string (see the module docstring)."""
    # Decomposed first, so that a letter the table spells out is found whatever accent it carries (ǿ -> ø + ́)
    decomposed = unicodedata.normalize("NFKD", value).translate(_SPELLED_OUT)
    return "".join(ch for ch in decomposed.casefold() if ch.isalnum() and not unicodedata.combining(ch))
