"""FHIR NPM packages (``package.tgz``): read, check, and keep the resources and examples.

A package is untrusted input: it is read as a stream, within limits on its compressed size, on the number and
size of its members and on the total uncompressed size, so that a gzip bomb is refused before it is inflated.
Only regular files under ``package/`` are read; links, devices and paths that leave the folder are refused.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "MAX_COMPRESSED_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_TOTAL_BYTES",
    "Package",
    "PackageError",
    "read_package",
]

# Published implementation guides are a few MB (FR Core 2.1.0: 0.7 MB compressed, 6 MB inflated, 202 members).
MAX_COMPRESSED_BYTES = 20 * 1024 * 1024
MAX_TOTAL_BYTES = 200 * 1024 * 1024
MAX_MEMBER_BYTES = 20 * 1024 * 1024
MAX_MEMBERS = 10_000

# Folders of a package that are not read: other formats and the IG publisher's own files.
IGNORED_FOLDERS = ("package/other/", "package/xml/", "package/openapi/")
_CHUNK = 64 * 1024


class PackageError(ValueError):
    """A package that cannot be used; the message names the member or field at fault."""


@dataclass(frozen=True)
class Package:
    """The content of a FHIR package: its manifest facts, its conformance resources and its examples."""

    name: str
    version: str
    canonical: str | None = None
    fhir_versions: tuple[str, ...] = ("4.0.1",)
    dependencies: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    resources: tuple[dict[str, Any], ...] = ()
    examples: tuple[dict[str, Any], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.name}#{self.version}"


class _Budget:
    """The running total of inflated bytes, checked as the archive is read."""

    def __init__(self) -> None:
        self.total = 0

    def take(self, size: int, what: str) -> None:
        if size > MAX_MEMBER_BYTES:
            raise PackageError(f"package member {what} is {size:,} bytes, more than {MAX_MEMBER_BYTES:,}")
        self.total += size
        if self.total > MAX_TOTAL_BYTES:
            raise PackageError(f"package inflates to more than {MAX_TOTAL_BYTES:,} bytes")


class _LimitedGzip(io.RawIOBase):
    """A gzip stream that stops with PackageError once it has inflated more than the total limit allows.

    The tar headers and padding count too, so a bomb of empty or sparse members is stopped as well.
    """

    def __init__(self, data: bytes) -> None:
        self._inflater = zlib.decompressobj(wbits=31)
        self._data = data
        self._pos = 0
        self._tail = b""
        self._pending = b""
        self._inflated = 0
        # the members' bytes plus their tar headers and padding, and the end-of-archive blocks
        self._limit = MAX_TOTAL_BYTES + 1024 * (MAX_MEMBERS + 2)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if self._inflater.eof:
                return 0
            if self._tail:
                chunk = self._tail
            elif self._pos < len(self._data):
                chunk = self._data[self._pos : self._pos + _CHUNK]
                self._pos += len(chunk)
            else:
                raise PackageError("package is truncated (gzip stream ends early)")
            try:
                self._pending = self._inflater.decompress(chunk, _CHUNK)
            except zlib.error as err:
                raise PackageError(f"package is not valid gzip: {err}") from None
            self._tail = self._inflater.unconsumed_tail
            self._inflated += len(self._pending)
            if self._inflated > self._limit:
                raise PackageError(f"package inflates to more than {MAX_TOTAL_BYTES:,} bytes")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _check_name(member: tarfile.TarInfo) -> str | None:
    """The member's path if it is a regular file to read, None to skip it; PackageError if it is unsafe."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"package member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise PackageError(f"package member {name!r} leaves the package folder")
    if member.issym() or member.islnk():
        raise PackageError(f"package member {name!r} is a link")
    if member.isdir():
        return None
    if not member.isfile():
        raise PackageError(f"package member {name!r} is not a regular file")
    if not name.startswith("package/"):
        raise PackageError(f"package member {name!r} is outside package/")
    return name


def _json_member(name: str, raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise PackageError(f"package member {name} is not valid JSON: {err}") from None


def _resource(name: str, raw: bytes) -> dict[str, Any]:
    data = _json_member(name, raw)
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise PackageError(f"package member {name} is not a FHIR resource (no resourceType)")
    return data


def _is_r4(version: str) -> bool:
    return version == "4.0" or version.startswith("4.0.")


def _manifest(raw: bytes) -> tuple[str, str, str | None, tuple[str, ...], dict[str, str]]:
    data = _json_member("package/package.json", raw)
    if not isinstance(data, dict):
        raise PackageError("package/package.json is not a JSON object")
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name:
        raise PackageError("package/package.json has no name")
    if not isinstance(version, str) or not version:
        raise PackageError(f"package/package.json of {name} has no version")
    fhir_versions = data.get("fhirVersions", data.get("fhir-version-list"))
    if not isinstance(fhir_versions, list) or not all(isinstance(v, str) for v in fhir_versions):
        raise PackageError(f"package/package.json of {name}#{version} has no fhirVersions list")
    if not any(_is_r4(v) for v in fhir_versions):
        raise PackageError(
            f"package {name}#{version} is for FHIR {', '.join(fhir_versions) or 'no version'}, not R4 (4.0.x)"
        )
    dependencies = data.get("dependencies") or {}
    if not isinstance(dependencies, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in dependencies.items()
    ):
        raise PackageError(f"package/package.json of {name}#{version} has malformed dependencies")
    canonical = data.get("canonical")
    return name, version, canonical if isinstance(canonical, str) else None, tuple(fhir_versions), dependencies


def read_package(data: bytes) -> Package:
    """The package in ``data`` (a gzip-compressed tar); PackageError naming the problem if it cannot be used."""
    if len(data) > MAX_COMPRESSED_BYTES:
        raise PackageError(f"package is {len(data):,} bytes, more than {MAX_COMPRESSED_BYTES:,}")
    if data[:2] != b"\x1f\x8b":
        raise PackageError("package is not gzip-compressed (expected an NPM .tgz)")
    stream = _LimitedGzip(data)
    budget = _Budget()
    manifest: bytes | None = None
    resources: list[tuple[str, dict[str, Any]]] = []
    examples: list[tuple[str, dict[str, Any]]] = []
    count = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as archive:
            for member in archive:
                count += 1
                if count > MAX_MEMBERS:
                    raise PackageError(f"package has more than {MAX_MEMBERS:,} members")
                name = _check_name(member)
                if name is None:
                    continue
                budget.take(member.size, name)
                folder, _, base = name.rpartition("/")
                wanted = name == "package/package.json" or (
                    base.endswith(".json")
                    and base != ".index.json"
                    and folder in ("package", "package/example")
                    and not name.startswith(IGNORED_FOLDERS)
                )
                if not wanted:
                    continue
                extracted = archive.extractfile(member)
                raw = extracted.read() if extracted is not None else b""
                if name == "package/package.json":
                    manifest = raw
                elif folder == "package":
                    resources.append((name, _resource(name, raw)))
                else:
                    examples.append((name, _resource(name, raw)))
    except tarfile.TarError as err:
        raise PackageError(f"package is not a valid tar archive: {err}") from None
    except EOFError:
        raise PackageError("package is truncated") from None
    if manifest is None:
        raise PackageError("package has no package/package.json")
    name, version, canonical, fhir_versions, dependencies = _manifest(manifest)
    return Package(
        name=name,
        version=version,
        canonical=canonical,
        fhir_versions=fhir_versions,
        dependencies=MappingProxyType(dict(dependencies)),
        resources=tuple(r for _, r in sorted(resources, key=lambda item: item[0])),
        examples=tuple(r for _, r in sorted(examples, key=lambda item: item[0])),
    )
