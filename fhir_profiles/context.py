"""Where conformance resources come from: installed packages, the shipped DUI definitions, base R4.

A Context resolves a canonical url (optionally ``url|version``) to a StructureDefinition, ValueSet or CodeSystem,
looking in the installed packages first (in the order given), then in the definitions shipped with the DUI, then in
the built-in base R4. A url found nowhere falls back to a shipped transcription of it: a resource carrying the
extension TRANSCRIPTION_EXTENSION whose value is that url (for a published profile whose package is not
installed). A Context is immutable once built and safe to read from several threads; build a new one when the
installed packages change. The resources it hands out are shared: callers must not modify them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fhir_profiles import CANONICAL, base, definitions
from fhir_profiles.base import BASE_PACKAGE
from fhir_profiles.package import Package

__all__ = ["BASE_PACKAGE", "TRANSCRIPTION_EXTENSION", "Context", "shipped_source"]

TRANSCRIPTION_EXTENSION = f"{CANONICAL}/StructureDefinition/transcription-of"
_KINDS = ("StructureDefinition", "ValueSet", "CodeSystem")
_BASE_NAME, _BASE_VERSION = BASE_PACKAGE.split("#")


def shipped_source() -> str:
    """The source name of the shipped definitions: ``dui#<version of the installed dui distribution>``."""
    try:
        return f"dui#{metadata.version('dui')}"
    except metadata.PackageNotFoundError:
        return "dui#unreleased"


@dataclass(frozen=True)
class _Entry:
    resource: dict[str, Any]
    source: str


class _Index:
    """One kind of resource (StructureDefinition, ValueSet or CodeSystem) from packages and shipped definitions."""

    def __init__(self) -> None:
        self.by_url: dict[str, _Entry] = {}
        self.by_version: dict[str, _Entry] = {}
        self.transcriptions: dict[str, _Entry] = {}

    def add(self, resource: dict[str, Any], source: str, shipped: bool) -> None:
        url = resource.get("url")
        if not isinstance(url, str):
            return
        entry = _Entry(resource, source)
        self.by_url.setdefault(url, entry)  # the first layer to define a url wins
        version = resource.get("version")
        if isinstance(version, str):
            self.by_version.setdefault(f"{url}|{version}", entry)
        if shipped:
            for target in _transcribed(resource):
                self.transcriptions.setdefault(target, entry)
                self.transcriptions.setdefault(target.split("|")[0], entry)

    def transcription(self, url: str) -> _Entry | None:
        """The shipped transcription of ``url``; for ``url|version``, one of that version or of the bare url."""
        return self.transcriptions.get(url) or self.transcriptions.get(url.split("|")[0])


def _transcribed(resource: dict[str, Any]) -> list[str]:
    return [
        ext["valueCanonical"]
        for ext in resource.get("extension", [])
        if isinstance(ext, dict)
        and ext.get("url") == TRANSCRIPTION_EXTENSION
        and isinstance(ext.get("valueCanonical"), str)
    ]


def _version_matches(wanted: str, have: str) -> bool:
    """An NPM dependency version: exact, or with ``x`` wildcards (``1.3.x``)."""
    if "x" not in wanted.split("."):
        return wanted == have
    pattern = r"\.".join(r"[^.]+" if part == "x" else re.escape(part) for part in wanted.split("."))
    return re.fullmatch(pattern + r"(\..*)?", have) is not None


class Context:
    """The conformance resources in force: installed packages, then shipped definitions, then base R4."""

    def __init__(self, packages: Sequence[Package] = (), *, shipped: bool = True) -> None:
        self._packages = tuple(packages)
        self._indexes = {kind: _Index() for kind in _KINDS}
        layers: list[tuple[str, Iterable[dict[str, Any]], bool]] = [
            (p.id, p.resources, False) for p in self._packages
        ]
        if shipped:
            layers.append((shipped_source(), definitions(), True))
        for source, items, is_shipped in layers:
            for resource in items:
                index = self._indexes.get(resource.get("resourceType", ""))
                if index is not None:
                    index.add(resource, source, is_shipped)

    @property
    def packages(self) -> tuple[Package, ...]:
        return self._packages

    def _find(self, kind: str, url: str) -> _Entry | None:
        index = self._indexes[kind]
        entry = index.by_version.get(url) if "|" in url else index.by_url.get(url)
        if entry is not None:
            return entry
        resource = self._base(kind, url)
        if resource is not None:
            return _Entry(resource, BASE_PACKAGE)
        return index.transcription(url)

    @staticmethod
    def _base(kind: str, url: str) -> dict[str, Any] | None:
        plain, _, version = url.partition("|")
        if kind == "StructureDefinition":
            structures = base.structures()
            found = structures.by_url.get(plain) or (structures.by_type.get(plain) if "/" not in plain else None)
        elif kind == "ValueSet":
            found = base.terminology().value_sets.get(plain)
        else:
            found = base.terminology().code_systems.get(plain)
        if found is None or (version and found.get("version") != version):
            return None
        return found

    def structure_definition(self, url: str) -> dict[str, Any] | None:
        """The StructureDefinition of a canonical url, ``url|version``, or base R4 type name (``Patient``)."""
        entry = self._find("StructureDefinition", url)
        return entry.resource if entry else None

    def value_set(self, url: str) -> dict[str, Any] | None:
        entry = self._find("ValueSet", url)
        return entry.resource if entry else None

    def code_system(self, url: str) -> dict[str, Any] | None:
        entry = self._find("CodeSystem", url)
        return entry.resource if entry else None

    def by_id(self, kind: str, rid: str) -> dict[str, Any] | None:
        """The ValueSet, CodeSystem or StructureDefinition whose ``id`` is ``rid``: the first layer holding one wins
        (installed packages in order, shipped definitions, then base R4)."""
        index = self._indexes.get(kind)
        if index is None:
            return None
        for entry in index.by_url.values():
            if entry.resource.get("id") == rid:
                return entry.resource
        if kind == "ValueSet":
            pool: Iterable[dict[str, Any]] = base.terminology().value_sets.values()
        elif kind == "CodeSystem":
            pool = base.terminology().code_systems.values()
        else:
            pool = base.structures().by_url.values()
        return next((resource for resource in pool if resource.get("id") == rid), None)

    def source_of(self, url: str) -> str | None:
        """Where the resource of ``url`` comes from: a package id, BASE_PACKAGE, or ``dui#<version>``."""
        for kind in _KINDS:
            entry = self._find(kind, url)
            if entry is not None:
                return entry.source
        return None

    def stands_in_for(self, url: str) -> str | None:
        """The url of the shipped transcription used for ``url``, when ``url`` itself is not at hand."""
        for kind in _KINDS:
            index = self._indexes[kind]
            direct = index.by_version.get(url) if "|" in url else index.by_url.get(url)
            if direct is not None or self._base(kind, url) is not None:
                return None
        for kind in _KINDS:
            entry = self._indexes[kind].transcription(url)
            if entry is not None:
                found: str = entry.resource["url"]
                return found
        return None

    def profiles(self) -> list[dict[str, Any]]:
        """Every StructureDefinition in force that is not base R4 (profiles, extensions, logical models)."""
        return [entry.resource for entry in self._indexes["StructureDefinition"].by_url.values()]

    def missing_dependencies(self) -> dict[str, list[str]]:
        """Per installed package with unmet dependencies: the ``name#version`` neither installed nor built in."""
        missing: dict[str, list[str]] = {}
        for package in self._packages:
            unmet = [
                f"{name}#{version}"
                for name, version in package.dependencies.items()
                if not (name == _BASE_NAME and _version_matches(version, _BASE_VERSION))
                and not any(p.name == name and _version_matches(version, p.version) for p in self._packages)
            ]
            if unmet:
                missing[package.id] = unmet
        return missing
