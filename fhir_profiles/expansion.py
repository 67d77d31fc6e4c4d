"""The terminology operations over what a Context holds: expand, look up, validate a code, subsumption.

Built on ``Terminology`` (value-set membership) and ``Codes`` (a code system's concepts and hierarchy). Nothing is
fetched from elsewhere: a value set that cannot be enumerated in full from the code systems at hand (SNOMED CT,
LOINC, a filter the data cannot answer) raises ``NotExpandable`` naming the reason, rather than giving part of it;
so does a membership question the data cannot decide (``Undecided``). Text filters fold case and accents
(``"hopital"`` finds ``"Hôpital"``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_profiles.codesystems import Codes
from fhir_profiles.context import Context
from fhir_profiles.terminology import Membership, Terminology

__all__ = [
    "Concept",
    "Expander",
    "Expansion",
    "LookupResult",
    "NotExpandable",
    "NotFound",
    "Undecided",
    "Validation",
    "fold",
]


class NotFound(LookupError):
    """An unknown value set or an unknown code of a code system at hand."""


class NotExpandable(Exception):
    """What the data at hand cannot answer; ``code`` is the OperationOutcome issue code (not-supported, too-costly)."""

    def __init__(self, message: str, code: str = "not-supported") -> None:
        super().__init__(message)
        self.code = code


class Undecided(NotExpandable):
    """Whether a code is in a value set cannot be decided from the data at hand."""


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str | None = None
    version: str | None = None
    designations: tuple[dict[str, Any], ...] = ()
    inactive: bool = False
    abstract: bool = False

    def display_in(self, language: str | None, fallback_language: str | None = None) -> str | None:
        """The display in ``language`` (``fr`` matches ``fr-FR``): a designation in it, else the display."""
        if language:
            for designation in self.designations:
                lang = designation.get("language")
                if isinstance(lang, str) and _same_language(lang, language) and isinstance(designation.get("value"),
                                                                                         str):
                    return str(designation["value"])
        return self.display

    def matches(self, folded: str) -> bool:
        """Whether the folded text filter is in the code, the display or a designation."""
        texts = [self.code, self.display or "", *(str(d.get("value", "")) for d in self.designations)]
        return any(folded in fold(text) for text in texts)


@dataclass(frozen=True)
class Expansion:
    concepts: list[Concept]
    used: dict[str, str | None] = field(default_factory=dict)  # code system url -> its version, for those used


@dataclass(frozen=True)
class LookupResult:
    codes: Codes
    concept: Concept
    parents: tuple[str, ...]
    children: tuple[str, ...]
    properties: tuple[dict[str, Any], ...]  # the concept's own properties, as the data has them


@dataclass(frozen=True)
class Validation:
    result: bool
    message: str | None = None
    display: str | None = None


def fold(text: str) -> str:
    """Lower case without accents: the form text filters compare."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _same_language(have: str, wanted: str) -> bool:
    have, wanted = have.lower(), wanted.lower()
    return have == wanted or (have.split("-")[0] == wanted.split("-")[0] and (
        "-" not in wanted or "-" not in have))


class Expander:
    """The terminology operations over one Context (and its Terminology, whose caches it shares)."""

    def __init__(self, context: Context, terminology: Terminology | None = None) -> None:
        self.context = context
        self.terminology = terminology or Terminology(context)

    # -- $expand --------------------------------------------------------------------------------------------------

    def value_set(self, url: str, version: str | None = None) -> dict[str, Any]:
        """The ValueSet of ``url`` (and ``version``); NotFound when it is not at hand."""
        found = self.context.value_set(f"{url}|{version}" if version else url)
        if found is None:
            raise NotFound(f"value set {url}{f' version {version}' if version else ''} is not known to this server")
        return found

    def expand(self, value_set: dict[str, Any], *, from_compose: bool = False, limit: int | None = None) -> Expansion:
        """Every concept of ``value_set``, in a stable order; NotExpandable when the list cannot be complete, or
        ``too-costly`` when it holds more than ``limit`` concepts."""
        members = self.terminology.members_of(value_set, from_compose=from_compose)
        name = value_set.get("url") or value_set.get("id") or "the value set given"
        if not members.complete:
            raise NotExpandable(f"value set {name} cannot be expanded in full here: {'; '.join(members.incomplete)}")
        if limit is not None and len(members.pairs) > limit:
            raise NotExpandable(f"value set {name} has {len(members.pairs):,} codes, more than the {limit:,} an "
                                "expansion may hold here: use filter, or count and offset", "too-costly")
        hints = self._hints(value_set, from_compose)
        concepts: list[tuple[tuple[int, int, str], Concept]] = []
        used: dict[str, str | None] = {}
        rank: dict[str, int] = {}
        for system, code in members.pairs:
            codes = self.terminology.code_system(system)
            if codes is not None:
                used[system] = codes.version
            concept = self._concept(system, code, codes, hints.get((system, code)))  # the value set's display first
            hint = hints.get((system, code))
            position = hint["#"] if hint is not None else codes.order.get(code, 0) if codes is not None else 0
            order = rank.setdefault(system, self._system_rank(value_set, system))
            concepts.append(((order, int(position), code), concept))
        concepts.sort(key=lambda item: (item[0][0], item[1].system, item[0][1], item[0][2]))
        return Expansion([c for _, c in concepts], used)

    @staticmethod
    def _system_rank(value_set: dict[str, Any], system: str) -> int:
        for index, item in enumerate((value_set.get("compose") or {}).get("include", [])):
            if item.get("system") == system:
                return index
        return 1_000

    def _hints(self, value_set: dict[str, Any], from_compose: bool) -> dict[tuple[str, str], dict[str, Any]]:
        """What the value set (and those it imports) says of its concepts: display, designations, order."""
        hints: dict[tuple[str, str], dict[str, Any]] = {}
        seen: set[str] = set()

        def walk(vs: dict[str, Any], use_expansion: bool) -> None:
            if use_expansion and "expansion" in vs:
                for position, item in enumerate(_contains(vs["expansion"].get("contains", []))):
                    hints.setdefault((item["system"], item["code"]), {**item, "#": position})
            for item in (vs.get("compose") or {}).get("include", []):
                system = item.get("system")
                for position, concept in enumerate(item.get("concept", [])):
                    if isinstance(system, str) and isinstance(concept.get("code"), str):
                        hints.setdefault((system, concept["code"]), {**concept, "#": position})
                for url in item.get("valueSet", []):
                    if url not in seen:
                        seen.add(url)
                        imported = self.context.value_set(url)
                        if imported is not None:
                            walk(imported, True)

        walk(value_set, not from_compose)
        return hints

    @staticmethod
    def _concept(system: str, code: str, codes: Codes | None, hint: dict[str, Any] | None) -> Concept:
        hint = hint or {}
        designations = [d for d in hint.get("designation", []) if isinstance(d, dict)]
        display = hint.get("display") if isinstance(hint.get("display"), str) else None
        if codes is None:
            return Concept(system, code, display, hint.get("version"), tuple(designations),
                           bool(hint.get("inactive")), bool(hint.get("abstract")))
        designations += [d for d in codes.designations.get(code, []) if d not in designations]
        return Concept(system, code, display or codes.displays.get(code), codes.version, tuple(designations),
                       codes.inactive(code), codes.abstract(code))

    # -- $lookup --------------------------------------------------------------------------------------------------

    def codes(self, system: str, version: str | None = None) -> Codes:
        """The code system at hand; NotExpandable (not-supported) when it is not, or not in that version."""
        codes = self.terminology.code_system(system)
        if codes is None or (codes.content == "not-present" and not codes.codes):
            raise NotExpandable(f"code system {system} is not at hand on this server (only the code systems of the "
                                "installed packages and of base FHIR R4 are, and R4 lists none of its codes)"
                                if codes is not None else
                                f"code system {system} is not at hand on this server (only the code systems of the "
                                "installed packages and of base FHIR R4 are)")
        if version and codes.version and version != codes.version:
            raise NotExpandable(f"code system {system} is at hand in version {codes.version}, not {version}")
        return codes

    def lookup(self, system: str, code: str, version: str | None = None) -> LookupResult:
        codes = self.codes(system, version)
        found = codes.canonical(code)
        if found is None:
            if not codes.complete:
                raise NotExpandable(f"code {code!r} is not listed in code system {system}, whose content is "
                                    f"{codes.content!r} here: whether it exists is not known")
            raise NotFound(f"code {code!r} is not in code system {system}")
        return LookupResult(codes, self._concept(system, found, codes, None),
                            tuple(sorted(codes.parents.get(found, ()))), tuple(sorted(codes.children.get(found, ()))),
                            tuple(codes.concept_properties.get(found, ())))

    # -- $subsumes ------------------------------------------------------------------------------------------------

    def subsumes(self, system: str, code_a: str, code_b: str, version: str | None = None) -> str:
        """equivalent, subsumes (A subsumes B), subsumed-by or not-subsumed."""
        codes = self.codes(system, version)
        a, b = (self.lookup(system, c, version).concept.code for c in (code_a, code_b))
        if a == b:
            return "equivalent"
        if b in codes.descendants(a):
            return "subsumes"
        if a in codes.descendants(b):
            return "subsumed-by"
        return "not-subsumed"

    # -- $validate-code -------------------------------------------------------------------------------------------

    def validate_in_code_system(self, system: str, code: str, display: str | None = None,
                                version: str | None = None, language: str | None = None) -> Validation:
        try:
            found = self.lookup(system, code, version)
        except NotFound as err:
            return Validation(False, str(err))
        return self._display_check(found.concept, display, language)

    def validate_in_value_set(self, value_set: dict[str, Any], system: str | None, code: str,
                              display: str | None = None, language: str | None = None) -> Validation:
        """Undecided when the data cannot tell (a code system not at hand, a filter it cannot answer)."""
        url = value_set.get("url")
        at_hand = isinstance(url, str) and self.context.value_set(url) is value_set
        members = self.terminology.members(str(url)) if at_hand else self.terminology.members_of(value_set)
        assert members is not None
        if at_hand:
            check = self.terminology.check(str(url), system, code)
        else:
            check = _check(members.pairs, members.incomplete, system, code, str(url or "the value set given"))
        if check.membership is Membership.UNKNOWN:
            raise Undecided(check.reason)
        if check.membership is Membership.NOT_MEMBER:
            return Validation(False, check.reason)
        systems = sorted([system] if system else {s for s, c in members.pairs if c == code})
        for candidate in systems:
            codes = self.terminology.code_system(candidate)
            spelled = codes.canonical(code) if codes is not None else None
            if codes is not None and spelled is not None:
                hint = self._hints(value_set, False).get((candidate, spelled))
                concept = self._concept(candidate, spelled, codes, hint)  # the value set's display first
                also = (codes.displays.get(spelled, ""),)
                return self._display_check(concept, display, language, also)
        hint = self._hints(value_set, False).get((systems[0], code)) if systems else None
        return self._display_check(self._concept(systems[0] if systems else "", code, None, hint), display, language)

    @staticmethod
    def _display_check(concept: Concept, display: str | None, language: str | None,
                       also: tuple[str, ...] = ()) -> Validation:
        preferred = concept.display_in(language)
        if display is None or preferred is None:
            return Validation(True, None, preferred)
        known = {concept.display or "", *also, *(str(d.get("value", "")) for d in concept.designations)} - {""}
        if display in known or fold(display) in {fold(k) for k in known}:
            return Validation(True, None, preferred)
        return Validation(True, f"the display {display!r} is not a display of {concept.system}|{concept.code} "
                                f"(expected {preferred!r})", preferred)


def _check(pairs: frozenset[tuple[str, str]], incomplete: tuple[str, ...], system: str | None, code: str,
           name: str) -> Any:
    from fhir_profiles.terminology import CodeCheck

    listed = any(c == code and (system is None or s == system) for s, c in pairs)
    if listed and not any(r.startswith("excluded codes:") for r in incomplete):
        return CodeCheck(Membership.MEMBER)
    if incomplete:
        return CodeCheck(Membership.UNKNOWN, f"code {system or ''}|{code} in {name}: {'; '.join(incomplete)}")
    return CodeCheck(Membership.NOT_MEMBER, f"code {system + '|' if system else ''}{code} is not in {name}")


def _contains(items: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for item in items:
        if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
            yield item
        yield from _contains(item.get("contains", []))
