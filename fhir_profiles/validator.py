"""Validation of a resource against StructureDefinitions (FHIR R4 validation.html, "Profiles").

``ProfileValidator.validate`` checks a resource against every profile that applies to it: its ``meta.profile``,
the default profiles of its type, and the profiles asked for; with none of them known, against the base definition
of its type (a profile's snapshot holds everything its base says, so the base is not walked twice). Contained
resources and bundle entries are validated the same way, each against its own type and ``meta.profile``.

Profiles are resolved through the Context and compiled once per url; the compiled forms are cached in the
validator, which is safe to share between threads. Every problem is returned (up to MAX_PROBLEMS), with the
element's FHIRPath location and a message naming the profile and the element, what was expected and what was found.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_profiles.bindings import check_binding
from fhir_profiles.context import Context
from fhir_profiles.elements import Definition, Structure, compile_structure
from fhir_profiles.snapshot import SnapshotError, snapshot_elements
from fhir_profiles.terminology import Terminology
from fhir_profiles.walker import Walk

__all__ = ["MAX_PROBLEMS", "Problem", "ProfileValidator"]

MAX_PROBLEMS = 200


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning" | "information"
    code: str  # an OperationOutcome IssueType: structure, required, value, invariant, code-invalid, not-found...
    location: str  # FHIRPath of the element, e.g. "Patient.identifier[1].system"
    message: str
    profile: str | None = None


@dataclass(frozen=True)
class _Unusable:
    reason: str


class ProfileValidator:
    """Validates resources against the profiles of a Context; shared between threads."""

    def __init__(self, context: Context, default_profiles: Mapping[str, Sequence[str]] | None = None,
                 implied: Callable[[Mapping[str, Any]], Sequence[str]] | None = None) -> None:
        """``implied``: the profiles a resource must meet because of what it holds (``vitals.vital_sign_profiles``:
        an Observation of a vital sign), beside its type's ``default_profiles``."""
        self.context = context
        self.implied = implied
        self.terminology = Terminology(context)
        self.default_profiles = {k: tuple(v) for k, v in (default_profiles or {}).items()}
        self._lock = threading.Lock()
        self._structures: dict[str, Structure | _Unusable | None] = {}
        self._types: dict[str, str | None] = {}

    def validate(self, resource: Mapping[str, Any], profiles: Sequence[str] = ()) -> list[Problem]:
        """Every problem of ``resource`` against the profiles that apply to it and ``profiles``."""
        run = Run(self)
        item = dict(resource)
        run.resource(item, str(item.get("resourceType") or "Resource"), item, tuple(profiles))
        return run.finish()

    def compiled(self, url: str) -> Structure | _Unusable | None:
        """The compiled profile of ``url`` (None: not known; _Unusable: its snapshot cannot be had)."""
        if url in self._structures:
            return self._structures[url]
        sd = self.context.structure_definition(url)
        found: Structure | _Unusable | None = None
        if sd is not None:
            try:
                found = compile_structure(sd, snapshot_elements(sd, self.context))
            except (SnapshotError, ValueError) as error:
                found = _Unusable(str(error))
        with self._lock:
            return self._structures.setdefault(url, found)

    def profile_type(self, url: str) -> str | None:
        if url not in self._types:
            sd = self.context.structure_definition(url)
            with self._lock:
                self._types[url] = str(sd["type"]) if sd and sd.get("type") else None
        return self._types[url]


class Run:
    """One call of ``validate``: the problems found, and what the walks share."""

    def __init__(self, validator: ProfileValidator) -> None:
        self.validator = validator
        self.terminology = validator.terminology
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, str, str, str]] = set()
        self._dropped = 0
        self._not_run: set[str] = set()
        self._bundles: list[dict[str, str]] = []
        self._root_loc = ""

    def add(self, severity: str, code: str, location: str, message: str, profile: str | None) -> None:
        key = (severity, code, location, message)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(severity, code, location, message, profile))
        else:
            self._dropped += 1

    def finish(self) -> list[Problem]:
        if self._dropped:
            self.problems.append(Problem("information", "too-costly", self._root_loc,
                                         f"{self._dropped} more problem(s) not listed (the first {MAX_PROBLEMS} are)"))
        return self.problems

    def not_run(self, key: str, expression: str, location: str, reason: str) -> None:
        """An invariant fhirpathpy could not evaluate: said once per expression."""
        if expression in self._not_run:
            return
        self._not_run.add(expression)
        self.add("information", "informational", location,
                 f"constraint {key} not checked: its expression cannot be evaluated here ({reason})", None)

    def structure(self, url: str, location: str | None) -> Structure | None:
        """The compiled profile of ``url``; when it cannot be used and ``location`` is given, a problem says so."""
        found = self.validator.compiled(url)
        if isinstance(found, Structure):
            return found
        if location is not None:
            why = found.reason if isinstance(found, _Unusable) else "not known here"
            self.add("warning", "not-found", location, f"profile {url}: {why}, not checked", url)
        return None

    def profile_type(self, url: str) -> str | None:
        return self.validator.profile_type(url)

    def bundle_type(self, reference: str) -> str | None:
        """The resource type of a bundle entry whose fullUrl is ``reference``."""
        for urls in reversed(self._bundles):
            if reference in urls:
                return urls[reference]
        return None

    def children_of(self, definition: Definition, type_code: str | None = None) -> Definition | None:
        """The definition whose children describe the content of ``definition`` (its type's, or its profile's)."""
        if definition.children:
            return definition
        codes = [t for t in definition.types if type_code is None or t.code == type_code]
        if len({t.code for t in codes}) != 1:
            return None
        profiles = [p for t in codes for p in t.profiles]
        structure = self.structure(profiles[0] if len(profiles) == 1 else codes[0].code, None)
        return structure.root if structure else None

    def conforms(self, value: Any, profile: str) -> bool:
        """Whether ``value`` (a resource or a datatype) has no error against ``profile``."""
        structure = self.structure(profile, None)
        if structure is None or not isinstance(value, dict):
            return False
        quiet = Run(self.validator)
        quiet._bundles = self._bundles
        resource = value if "resourceType" in value else {}
        loc = str(value.get("resourceType", structure.type))
        Walk(quiet, structure, resource or value, resource or value, loc).whole(value, loc, structure.type)
        return not any(p.severity == "error" for p in quiet.problems)

    def member(self, value_set: str, type_code: str, value: Any) -> bool:
        return check_binding(self.terminology, "required", value_set, type_code, value, "") is None

    def resource(self, value: dict[str, Any], loc: str, root: dict[str, Any], extra: Sequence[str] = ()) -> None:
        """A resource (top-level, contained or in a bundle) against its type and the profiles that apply."""
        if not self._root_loc:
            self._root_loc = loc
        kind = value.get("resourceType")
        if not isinstance(kind, str):
            self.add("error", "structure", loc, "a resource without resourceType", None)
            return
        meta = value.get("meta")
        declared = meta.get("profile", []) if isinstance(meta, dict) else []
        implied = self.validator.implied(value) if self.validator.implied is not None else ()
        urls = list(dict.fromkeys([*declared, *self.validator.default_profiles.get(kind, ()), *implied, *extra]))
        structures: list[Structure] = []
        for url in urls:
            if not isinstance(url, str):
                continue
            structure = self.structure(url, loc)
            if structure is None:
                continue
            if structure.type != kind:
                self.add("error", "structure", loc,
                         f"profile {url} ({structure.name}) is for {structure.type}, not {kind}", url)
                continue
            structures.append(structure)
        if not structures:
            base = self.structure(kind, None)
            if base is None:
                self.add("error", "not-found", loc, f"unknown resource type {kind!r}", None)
                return
            structures.append(base)
        if kind == "Bundle":
            self._bundles.append({
                str(entry["fullUrl"]): str(entry["resource"].get("resourceType"))
                for entry in value.get("entry", [])
                if isinstance(entry, dict) and isinstance(entry.get("fullUrl"), str)
                and isinstance(entry.get("resource"), dict)
            })
        try:
            for structure in structures:
                Walk(self, structure, value, root, loc).whole(value, loc, kind)
        finally:
            if kind == "Bundle":
                self._bundles.pop()
