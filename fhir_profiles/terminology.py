"""Value-set membership of a code, from the ValueSets and CodeSystems a Context holds.

A value set is expanded from its ``expansion`` when it carries one, otherwise from its ``compose``: explicit
concepts, whole code systems, filters over a code system at hand (see codesystems.py), imported value sets
(recursively, cycle-safe), minus the excludes. What cannot be enumerated (a code system or value set not at hand,
a code system whose content is not complete, a filter the data cannot answer) is recorded per code system with the
reason, so that a code of that system gives UNKNOWN rather than a wrong NOT_MEMBER; so does a code of another
system, since a value set that cannot be expanded in full is not used to refuse a code. Code system versions named in
a compose are not distinguished: the version at hand is used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fhir_profiles.codesystems import Codes, Unanswerable
from fhir_profiles.context import Context

__all__ = ["CodeCheck", "Members", "Membership", "Terminology"]

ANY_SYSTEM = ""  # key of the reasons that concern codes of any system


class Membership(Enum):
    MEMBER = "member"
    NOT_MEMBER = "not-member"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CodeCheck:
    membership: Membership
    reason: str = ""  # why UNKNOWN or NOT_MEMBER; empty for MEMBER


@dataclass(frozen=True)
class _Codes:
    """Part of an expansion: the (system, code) pairs known to be in it, and what could not be enumerated."""

    pairs: frozenset[tuple[str, str]] = frozenset()
    unknown: Mapping[str, str] = field(default_factory=dict)  # system -> why its other codes are undecided
    uncertain: Mapping[str, str] = field(default_factory=dict)  # system -> why its listed codes may be excluded

    @staticmethod
    def union(parts: Iterable[_Codes]) -> _Codes:
        pairs: set[tuple[str, str]] = set()
        unknown: dict[str, str] = {}
        uncertain: dict[str, str] = {}
        for part in parts:
            pairs |= part.pairs
            for system, reason in part.unknown.items():
                unknown.setdefault(system, reason)
            for system, reason in part.uncertain.items():
                uncertain.setdefault(system, reason)
        return _Codes(frozenset(pairs), unknown, uncertain)

    @staticmethod
    def intersection(parts: list[_Codes]) -> _Codes:
        """Codes in every part; what any part could not enumerate stays undecided (a conservative answer)."""
        merged = _Codes.union(parts)
        pairs = frozenset.intersection(*(part.pairs for part in parts))
        return _Codes(pairs, merged.unknown, merged.uncertain)

    def minus(self, excluded: _Codes) -> _Codes:
        uncertain = dict(self.uncertain)
        for system, reason in excluded.unknown.items():
            uncertain.setdefault(system, reason)
        return _Codes(self.pairs - excluded.pairs, self.unknown, uncertain)


@dataclass(frozen=True)
class _Expansion:
    codes: _Codes
    systems_of: Mapping[str, frozenset[str]]  # code -> the systems it is listed under

    @staticmethod
    def of(codes: _Codes) -> _Expansion:
        systems: dict[str, set[str]] = {}
        for system, code in codes.pairs:
            systems.setdefault(code, set()).add(system)
        return _Expansion(codes, {code: frozenset(s) for code, s in systems.items()})


@dataclass(frozen=True)
class Members:
    """The (system, code) pairs of a value set, and why the list may not be the whole of it (empty: complete)."""

    pairs: frozenset[tuple[str, str]]
    incomplete: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.incomplete

    @staticmethod
    def of(codes: _Codes) -> Members:
        reasons = sorted({*codes.unknown.values(), *(f"excluded codes: {r}" for r in codes.uncertain.values())})
        return Members(codes.pairs, tuple(reasons))


def _unknown(system: str, reason: str) -> _Codes:
    return _Codes(unknown={system: reason})


class Terminology:
    """Answers whether a code is in a value set; expansions and code-system indexes are cached per instance."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._expansions: dict[str, _Expansion] = {}
        self._code_systems: dict[str, Codes | None] = {}

    def check(self, value_set: str, system: str | None, code: str) -> CodeCheck:
        """Is ``code`` (of ``system``, or of any system of the value set when None) in ``value_set``?"""
        expansion = self._expansion(value_set)
        codes = expansion.codes
        if system is None:
            systems = expansion.systems_of.get(code, frozenset())
            if systems:
                sure = [s for s in systems if s not in codes.uncertain] if ANY_SYSTEM not in codes.uncertain else []
                if sure:
                    return CodeCheck(Membership.MEMBER)
                doubt = codes.uncertain.get(ANY_SYSTEM) or codes.uncertain[next(iter(systems))]
                return CodeCheck(Membership.UNKNOWN, f"code {code!r} in value set {value_set}: {doubt}")
            if codes.unknown:
                why = "; ".join(sorted(set(codes.unknown.values())))
                return CodeCheck(Membership.UNKNOWN, f"code {code!r} in value set {value_set}: {why}")
            return CodeCheck(Membership.NOT_MEMBER, f"code {code!r} is not in value set {value_set}")
        listed = self._codes(system)
        if listed is not None and not listed.case_sensitive:
            code = listed.canonical(code) or code
        if (system, code) in codes.pairs:
            excluded = codes.uncertain.get(system) or codes.uncertain.get(ANY_SYSTEM)
            if excluded:
                return CodeCheck(Membership.UNKNOWN, f"code {system}|{code} in value set {value_set}: {excluded}")
            return CodeCheck(Membership.MEMBER)
        undecided = codes.unknown.get(system) or codes.unknown.get(ANY_SYSTEM)
        if undecided:
            return CodeCheck(Membership.UNKNOWN, f"code {system}|{code} in value set {value_set}: {undecided}")
        if codes.unknown:
            # A value set that cannot be expanded in full is not used to refuse a code, whatever its system (as a
            # conformant validator without the missing code systems does: "not checked", never a false error).
            why = "; ".join(sorted(set(codes.unknown.values())))
            return CodeCheck(Membership.UNKNOWN, f"code {system}|{code} in value set {value_set}: {why}")
        return CodeCheck(Membership.NOT_MEMBER, f"code {system}|{code} is not in value set {value_set}")

    def members(self, url: str) -> Members | None:
        """The members of the value set of ``url`` (``url|version``), or None when it is not at hand."""
        if self._context.value_set(url) is None:
            return None
        return Members.of(self._expansion(url).codes)

    def members_of(self, value_set: dict[str, Any], *, from_compose: bool = False) -> Members:
        """The members of a ValueSet resource (one posted to ``$expand``, say); ``from_compose``: ignore the
        expansion it carries and work from its compose."""
        url = value_set.get("url") if isinstance(value_set.get("url"), str) else "(the value set given)"
        return Members.of(self._resource(value_set, str(url), (), from_compose=from_compose))

    def code_system(self, system: str) -> Codes | None:
        """The code system of ``system`` indexed, or None when it is not at hand (or only a supplement)."""
        return self._codes(system)

    def _expansion(self, url: str) -> _Expansion:
        cached = self._expansions.get(url)
        if cached is None:
            cached = _Expansion.of(self._expand(url, ()))
            with self._lock:
                cached = self._expansions.setdefault(url, cached)
        return cached

    def _expand(self, url: str, importing: tuple[str, ...]) -> _Codes:
        cached = self._expansions.get(url)
        if cached is not None:
            return cached.codes
        if url in importing:
            return _unknown(ANY_SYSTEM, f"value set {url} imports itself ({' -> '.join((*importing, url))})")
        vs = self._context.value_set(url)
        if vs is None:
            return _unknown(ANY_SYSTEM, f"value set {url} is not at hand")
        return self._resource(vs, url, importing)

    def _resource(self, vs: dict[str, Any], url: str, importing: tuple[str, ...], *,
                  from_compose: bool = False) -> _Codes:
        if "expansion" in vs and not from_compose:
            return _Codes(frozenset(_contains(vs["expansion"].get("contains", []))))
        compose = vs.get("compose")
        if not isinstance(compose, dict):
            return _unknown(ANY_SYSTEM, f"value set {url} has neither compose nor expansion")
        chain = (*importing, url)
        included = _Codes.union(self._part(item, chain) for item in compose.get("include", []))
        for item in compose.get("exclude", []):
            included = included.minus(self._part(item, chain))
        return included

    def _part(self, item: dict[str, Any], chain: tuple[str, ...]) -> _Codes:
        """One include or exclude: its system part and its imported value sets, intersected."""
        parts = [self._expand(imported, chain) for imported in item.get("valueSet", [])]
        if isinstance(item.get("system"), str):
            parts.append(self._system_part(item))
        if not parts:
            return _unknown(ANY_SYSTEM, f"value set {chain[-1]} has an include with neither system nor valueSet")
        return parts[0] if len(parts) == 1 else _Codes.intersection(parts)

    def _system_part(self, item: dict[str, Any]) -> _Codes:
        system: str = item["system"]
        if item.get("concept"):
            return _Codes(frozenset((system, c["code"]) for c in item["concept"] if isinstance(c.get("code"), str)))
        listed = self._codes(system)
        if listed is None:
            return _unknown(system, f"code system {system} is not at hand")
        partial = None if listed.complete else (
            f"code system {system} has content {listed.content!r}: codes it does not list are not known"
        )
        selected = set(listed.codes)
        for f in item.get("filter", []):
            try:
                selected &= listed.matching(str(f.get("property")), str(f.get("op")), str(f.get("value")))
            except Unanswerable as err:
                return _unknown(system, partial or str(err))
        return _Codes(frozenset((system, code) for code in selected), {system: partial} if partial else {})

    def _codes(self, system: str) -> Codes | None:
        if system not in self._code_systems:
            resource = self._context.code_system(system)
            found = Codes(resource) if resource is not None and resource.get("content") != "supplement" else None
            with self._lock:
                self._code_systems.setdefault(system, found)
        return self._code_systems[system]


def _contains(items: Iterable[dict[str, Any]]) -> Iterable[tuple[str, str]]:
    for item in items:
        if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
            yield item["system"], item["code"]
        yield from _contains(item.get("contains", []))
