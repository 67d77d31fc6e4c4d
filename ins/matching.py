"""Scoring of potential duplicate persons (identito-vigilance, FHIR ``Patient/$match``).

``compare(query, candidate)`` weighs the identity traits of two persons and returns a score in
[0, 1], a FHIR match grade and short reasons. The score is symmetric: ``compare(a, b).score ==
compare(b, a).score``.

Weights (a field missing on either side is left out of both numerator and denominator, so it
neither adds nor subtracts; it limits the grade instead)::

    family names 0.30   1.0 same (spaces ignored), 0.9 same phonetic key, 0.8 typo (Jaro-Winkler >= 0.92
                        and lengths within 1), 0.6 composed name partly shared, 0 different; best pair over
                        both lists, x0.95 when a usual name matches the other's birth name, x0.7 usual/usual
    given names  0.20   same levels, best pair of any given name against any given name
    birth date   0.40   1.0 same; 0.8 same year and month (one date is partial), 0.5 same year (partial);
                        0.75 day and month swapped, or one digit differs; 0.2 same year only; 0 different
    birth place  0.10   1.0 same COG code, 0.4 same département; 0 otherwise, and -0.10 more when one
                        person was born abroad (99xxx) and the other in France ("99999", unknown, is missing)
    sex                 -0.25 when both are male/female and differ; other/unknown/missing are neutral

Grades: ``certain`` when the score is >= 0.95, the birth family names are the same and so is a given name
(written alike once case, accents, spaces and punctuation are set aside: a name that only sounds alike or has a
typo is another spelling), both full birth dates are equal, and neither sex nor birth place disagree. FHIR
defines ``certain`` as safe to link automatically; identity vigilance (RNIV) never links two records on a
spelling variant, which is at most ``probable``: >= 0.80 with family names, given names and birth dates present
on both sides; ``possible`` >= 0.60 with at least two of those three; otherwise ``certainly-not``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Match", "Person", "compare", "fold", "jaro_winkler", "phonetic"]

_LIGATURES = str.maketrans({"Œ": "OE", "œ": "OE", "Æ": "AE", "æ": "AE", "ß": "SS", "ẞ": "SS", "Ø": "O", "ø": "O",
                            "Ł": "L", "ł": "L", "Đ": "D", "đ": "D", "Ð": "D", "ð": "D", "Þ": "TH", "þ": "TH"})
_NOT_ALNUM = re.compile(r"[^A-Z0-9]+")


def fold(text: str) -> str:
    """Upper-case A-Z, digits and single spaces only: accents removed (É->E, Œ->OE, Æ->AE, ß->SS),
    apostrophes, hyphens and any other character -> space, spaces collapsed and trimmed."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).translate(_LIGATURES).upper()
    return _NOT_ALNUM.sub(" ", bare).strip()


# --- phonetic key -------------------------------------------------------------------------------

_VOWELS = "AEIOU"
_Cond = Callable[[str, int, int], bool]  # (word, start, end of the pattern) -> does the rule apply


def _before(letters: str) -> _Cond:
    return lambda w, i, j: j < len(w) and w[j] in letters


def _nasal(w: str, i: int, j: int) -> bool:
    return j == len(w) or w[j] not in "AEIOUNMH"


def _not_yod(w: str, i: int, j: int) -> bool:
    return not (w.startswith("LL", j) or w[j:] == "L")


def _yod(w: str, i: int, j: int) -> bool:
    return i > 0 and w[i - 1] in _VOWELS


# Tried in this order at each position; the first whose pattern (within the spoken part) and condition
# (which may look at the silent end) match wins. Longer patterns come before their prefixes.
_RULES: tuple[tuple[str, str, _Cond | None], ...] = (
    ("SCH", "X", None), ("SC", "S", _before("EI")), ("SH", "X", None),
    ("CH", "K", _before("RL")), ("CH", "X", None), ("CK", "K", None), ("CQU", "K", None), ("CQ", "K", None),
    ("C", "S", _before("EI")), ("C", "K", None), ("PH", "F", None), ("TH", "T", None), ("QU", "K", None),
    ("Q", "K", None), ("GU", "G", _before("EI")), ("GE", "J", _before("AOU")), ("GN", "NI", None),
    ("GH", "G", None), ("G", "J", _before("EI")), ("JE", "J", _before("AOU")), ("B", "", _before("V")),
    ("X", "KS", None), ("W", "V", None), ("Z", "S", None), ("H", "", None),
    ("EAU", "O", None), ("AUL", "O", _before("T")), ("AU", "O", None), ("OEU", "E", None), ("EU", "E", None),
    ("OIN", "U2", _nasal), ("OI", "UA", None), ("OU", "U", None),
    ("AIN", "2", _nasal), ("AIM", "2", _nasal), ("EIN", "2", _nasal), ("EIM", "2", _nasal),
    ("AI", "E", _not_yod), ("EI", "E", _not_yod), ("IEN", "I2", _nasal), ("ILL", "I", _yod),
    ("IL", "I", lambda w, i, j: _yod(w, i, j) and j == len(w)),
    ("AN", "1", _nasal), ("AM", "1", _nasal), ("EN", "1", _nasal), ("EM", "1", _nasal),
    ("IN", "2", _nasal), ("IM", "2", _nasal), ("UN", "2", _nasal), ("UM", "2", _nasal),
    ("ON", "3", _nasal), ("OM", "3", _nasal), ("U", "Y", None),
)
_REPEATS = re.compile(r"(.)\1+")


def _spoken_end(w: str) -> int:
    """Length of ``w`` without its silent ending (see ``phonetic``)."""
    end, dropped = len(w), ""
    if end < 2:
        return end
    if w[-1] in "SZ" or w.endswith("UX"):
        dropped, end = w[-1], end - 1
    if w[end - 1] == "E" and dropped in ("", "S"):
        while end > 1 and w[end - 1] == "E":
            end -= 1
    elif (end > 1 and w[end - 1] in "TD") or w.endswith("MP", 0, end):
        end -= 1
    return end


def _word_key(word: str) -> str:
    w = "".join(ch for ch in word if ch.isalpha()).replace("Y", "I")
    end, i, out = _spoken_end(w), 0, []
    while i < end:
        for pattern, code, cond in _RULES:
            j = i + len(pattern)
            if j <= end and w.startswith(pattern, i) and (cond is None or cond(w, i, j)):
                out.append(code)
                i = j
                break
        else:
            out.append(w[i])
            i += 1
    return _REPEATS.sub(r"\1", "".join(out))


def phonetic(name: str) -> str:
    """A phonetic key for French personal names: each word of ``fold(name)`` coded, joined by one space.

    Spaces are kept (``N'Guessan`` -> ``N GES1``, ``NGUESSAN`` -> ``NGES1``): ``compare`` ignores them
    and also codes the name with its words run together. Per word, digits are dropped, Y is read as I, then:

    1. Silent ending: a final S or Z, or the X of -UX, is dropped; then if the word ends in E (and the
       dropped letter, if any, was S) every final E goes (-E, -ES, -EE: René = Renée), else a final T or D
       goes (Dupont, Bertrand, Robert(s)), or the P of -MP (Deschamps). The silent letters still serve
       as context: "RENE" keeps EN oral because an E follows. So Louis (LUI) and Louise (LUIS) differ: the E
       silences only itself; Marie (MARI) and Mario (MARIO) differ too.
    2. Left to right, first rule that applies (``_RULES``): SCH/SH/CH -> X (CH before R/L -> K), C before
       E/I -> S else K, CK/CQ/CQU/QU/Q -> K, PH -> F, TH -> T, GH -> G, GU before E/I -> G, GE before A/O/U
       and JE before A/O/U -> J, G before E/I -> J, GN -> NI, B before V silent (Lefebvre), X -> KS, W -> V,
       Z -> S, other H silent; EAU/AU and AUL before T (Gaultier) -> O, EU/OEU -> E (so Lefeuvre = Lefèvre),
       AI/EI -> E (not before L(L) ending a yod), OI -> UA, OIN -> U2, OU -> U, U -> Y, ILL or final IL after
       a vowel -> I (Maillard). Nasals, when followed by a consonant other than N/M/H or by the end of the
       word: AN/AM/EN/EM -> 1, IN/IM/AIN/AIM/EIN/EIM/UN/UM -> 2, IEN -> I2, ON/OM -> 3 (Jeanne, Emma,
       Hélène stay oral). Any other letter is kept.
    3. Runs of the same code collapse into one (Matthieu = Mathieu, Rousseau = Roussot).
    """
    return " ".join(key for key in map(_word_key, fold(name).split()) if key)


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro-Winkler similarity in [0, 1] (common prefix up to 4 characters); symmetric by construction."""
    if a > b:
        a, b = b, a
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    window = max(len(a), len(b)) // 2 - 1
    used = [False] * len(b)
    a_matched: list[str] = []
    for i, ch in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not used[j] and b[j] == ch:
                used[j] = True
                a_matched.append(ch)
                break
    m = len(a_matched)
    if not m:
        return 0.0
    b_matched = [ch for ch, hit in zip(b, used, strict=True) if hit]
    half_transpositions = sum(x != y for x, y in zip(a_matched, b_matched, strict=True)) / 2
    jaro = (m / len(a) + m / len(b) + (m - half_transpositions) / m) / 3
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * prefix_scale * (1 - jaro)


# --- comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """The identity traits compared; every field is optional."""

    family_names: tuple[str, ...] = ()  # birth family name first, then usual / married names
    given_names: tuple[str, ...] = ()  # birth given names (the full list), then the used given name
    birth_date: str | None = None  # FHIR date: "YYYY", "YYYY-MM" or "YYYY-MM-DD"
    sex: str | None = None  # FHIR gender: male / female / other / unknown
    birth_place: str | None = None  # COG code (5 chars), "99xxx" for a country


@dataclass(frozen=True)
class Match:
    score: float  # 0.0 .. 1.0, rounded to 3 decimals
    grade: str  # "certain" | "probable" | "possible" | "certainly-not"
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class _Field:
    similarity: float
    reasons: tuple[str, ...]
    strong: bool = False  # agreement good enough for "certain"
    penalty: float = 0.0  # subtracted from the weighted score


_FAMILY, _GIVEN, _DATE, _PLACE = 0.30, 0.20, 0.40, 0.10
_SEX_PENALTY, _ABROAD_PENALTY = 0.25, 0.10
_PARTICLES = frozenset({"D", "DA", "DAS", "DE", "DEL", "DELLA", "DEN", "DER", "DES", "DI", "DO", "DOS", "DU", "EP",
                        "EPOUSE", "L", "LA", "LE", "LES", "VAN", "VEUVE", "VON", "VVE"})
_PHRASES = {1.0: "same {} name", 0.9: "{} names sound alike", 0.8: "{} names nearly identical",
            0.6: "{} names partly shared", 0.0: "different {} names"}


def _keys(folded: str) -> set[str]:
    return {phonetic(folded).replace(" ", ""), phonetic(folded.replace(" ", ""))} - {""}


def _words(folded: str) -> set[str]:
    return {phonetic(word) for word in folded.split() if word not in _PARTICLES} - {""}


def _name_similarity(a: str, b: str) -> float:
    """Similarity level of two folded, non-empty names (one of the ``_PHRASES`` keys)."""
    flat_a, flat_b = a.replace(" ", ""), b.replace(" ", "")
    if flat_a == flat_b:
        return 1.0
    if _keys(a) & _keys(b):
        return 0.9
    if abs(len(flat_a) - len(flat_b)) <= 1 and jaro_winkler(flat_a, flat_b) >= 0.92:
        return 0.8
    words_a, words_b = _words(a), _words(b)
    if words_a and words_b and (words_a <= words_b or words_b <= words_a):
        return 0.6
    return 0.0


def _folded(names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(1 for the first name - the birth name -, else 0; folded name), blank names left out."""
    return [(int(i == 0), f) for i, f in enumerate(map(fold, names)) if f]


def _family(query: tuple[str, ...], candidate: tuple[str, ...]) -> _Field | None:
    qs, cs = _folded(query), _folded(candidate)
    if not qs or not cs:
        return None
    factors = {2: 1.0, 1: 0.95, 0: 0.7}  # birth/birth, birth/usual, usual/usual
    similarity, rank, level = max((factors[i + j] * level, i + j, level)
                                  for i, a in qs for j, b in cs for level in [_name_similarity(a, b)])
    extra = {1: ("usual family name of one is the birth family name of the other",),
             0: ("only usual family names match",)}.get(rank, ()) if level else ()
    return _Field(similarity, (_PHRASES[level].format("family"), *extra), strong=rank == 2 and level == 1.0)


def _given(query: tuple[str, ...], candidate: tuple[str, ...]) -> _Field | None:
    qs, cs = _folded(query), _folded(candidate)
    if not qs or not cs:
        return None
    level = max(_name_similarity(a, b) for _, a in qs for _, b in cs)
    return _Field(level, (_PHRASES[level].format("given"),), strong=level == 1.0)


_DATE_SHAPE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


def _date_parts(date: str | None) -> tuple[str, ...] | None:
    shape = _DATE_SHAPE.fullmatch((date or "").strip().partition("T")[0])
    return tuple(part for part in shape.groups() if part) if shape else None


def _birth_date(query: str | None, candidate: str | None) -> _Field | None:
    a, b = _date_parts(query), _date_parts(candidate)
    if a is None or b is None:
        return None
    precision = min(len(a), len(b))
    if a[:precision] == b[:precision]:
        if precision == 3:
            return _Field(1.0, ("same birth date",), strong=True)
        if precision == 2:
            return _Field(0.8, ("same birth year and month (partial date)",))
        return _Field(0.5, ("same birth year (partial date)",))
    if precision == 3:
        if a[0] == b[0] and a[1] == b[2] and a[2] == b[1]:
            return _Field(0.75, ("day and month swapped",))
        differing = [k for k, (x, y) in enumerate(zip("".join(a), "".join(b), strict=True)) if x != y]
        if len(differing) == 1:
            where = differing[0]
            reason = ("birth year one digit off" if where < 4 else
                      "birth month one digit off" if where < 6 else "same birth year and month, day typo")
            return _Field(0.75, (reason,))
    if a[0] == b[0]:
        return _Field(0.2, ("same birth year only",))
    return _Field(0.0, ("different birth dates",))


_COG = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{3}")


def _cog(code: str | None) -> str | None:
    code = (code or "").strip().upper()
    return code if _COG.fullmatch(code) and code != "99999" else None


def _departement(cog: str) -> str:
    return cog[:3] if cog.startswith("97") else cog[:2]


def _birth_place(query: str | None, candidate: str | None) -> _Field | None:
    a, b = _cog(query), _cog(candidate)
    if a is None or b is None:
        return None
    if a == b:
        return _Field(1.0, ("same birth place",), strong=True)
    abroad_a, abroad_b = a.startswith("99"), b.startswith("99")
    if abroad_a != abroad_b:
        return _Field(0.0, ("born abroad against born in France",), penalty=_ABROAD_PENALTY)
    if abroad_a:
        return _Field(0.0, ("different birth countries",))
    if _departement(a) == _departement(b):
        return _Field(0.4, ("same birth département",))
    return _Field(0.0, ("different birth places",))


def _sex_conflict(query: str | None, candidate: str | None) -> bool | None:
    """None when either sex is not male/female (other, unknown, missing: neutral)."""
    a, b = (query or "").strip().lower(), (candidate or "").strip().lower()
    known = ("male", "female")
    return a != b if a in known and b in known else None


def compare(query: Person, candidate: Person) -> Match:
    """Score ``candidate`` as a duplicate of ``query`` (see the module docstring for weights and grades)."""
    family = _family(query.family_names, candidate.family_names)
    given = _given(query.given_names, candidate.given_names)
    born = _birth_date(query.birth_date, candidate.birth_date)
    place = _birth_place(query.birth_place, candidate.birth_place)
    conflict = _sex_conflict(query.sex, candidate.sex)
    fields = ((_FAMILY, family), (_GIVEN, given), (_DATE, born), (_PLACE, place))
    weighted = [(w, f) for w, f in fields if f is not None]
    total = sum(w for w, _ in weighted)
    raw = sum(w * f.similarity for w, f in weighted) / total if total else 0.0
    raw -= sum(f.penalty for _, f in weighted) + (_SEX_PENALTY if conflict else 0.0)
    score = round(min(1.0, max(0.0, raw)), 3)
    sex_reasons = () if conflict is None else ("different sex",) if conflict else ("same sex",)
    reasons = tuple(r for _, f in weighted for r in f.reasons) + sex_reasons
    core = [f for f in (family, given, born) if f is not None]
    if (score >= 0.95 and len(core) == 3 and all(f.strong for f in core) and not conflict
            and (place is None or place.strong)):
        grade = "certain"
    elif score >= 0.80 and len(core) == 3:
        grade = "probable"
    elif score >= 0.60 and len(core) >= 2:
        grade = "possible"
    else:
        grade = "certainly-not"
    return Match(score, grade, reasons)
