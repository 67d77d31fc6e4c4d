"""Installing and listing IG packages (``dui profiles install|list|remove``).

A package is read and checked in full (``fhir_profiles.package.read_package``) and its snapshots are
generated against what would then be in force before anything is written: a malformed package, or one
whose profiles cannot be used, is refused and leaves the profiles in force unchanged. Installing a
package whose name is already installed replaces that version, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dui.auth.actor import Actor
from dui.clock import Clock
from dui.errors import Conflict, Invalid
from dui.profiles.tables import profile_package
from fhir_profiles.context import Context
from fhir_profiles.package import Package, PackageError, read_package
from fhir_profiles.snapshot import SnapshotError, generate_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    """One installed package, as ``dui profiles list`` shows it."""

    id: int
    name: str
    version: str
    fhir_version: str
    canonical: str | None
    dependencies: dict[str, str]
    sha256: str
    installed: datetime
    installed_by: str

    @property
    def package_id(self) -> str:
        return f"{self.name}#{self.version}"


@dataclass(frozen=True)
class InstallResult:
    package: Package
    replaced: str | None  # the version it replaced
    missing: list[str]  # dependencies neither installed nor built in ("name#version")
    profiles: int  # StructureDefinitions it brings


def install(session: Session, data: bytes, actor: Actor, clock: Clock) -> InstallResult:
    """Check ``data`` (a package.tgz) and put it in force; raises ``Invalid`` for a bad package."""
    try:
        package = read_package(data)
    except PackageError as exc:
        raise Invalid(f"not a usable FHIR package: {exc}") from None
    others = [p for p in load_packages(session) if p.name != package.name]
    context = Context([*others, package])
    _check_snapshots(package, context)
    previous = session.execute(select(profile_package.c.version)
                               .where(profile_package.c.name == package.name)).scalar_one_or_none()
    session.execute(delete(profile_package).where(profile_package.c.name == package.name))
    try:
        session.execute(insert(profile_package).values(
            name=package.name, version=package.version, fhir_version=package.fhir_versions[0],
            canonical=package.canonical, dependencies=json.dumps(dict(package.dependencies), sort_keys=True),
            content=data, sha256=hashlib.sha256(data).hexdigest(), installed=clock(),
            installed_by=f"{actor.kind}:{actor.id}"[:200],
        ))
        session.flush()
    except IntegrityError:
        raise Conflict(f"{package.name} was installed by someone else at the same time; run the command again") \
            from None
    profiles = sum(1 for r in package.resources if r.get("resourceType") == "StructureDefinition")
    return InstallResult(package, previous, context.missing_dependencies().get(package.id, []), profiles)


def _check_snapshots(package: Package, context: Context) -> None:
    """Every StructureDefinition of the package must have, or be able to get, a snapshot."""

    for sd in package.resources:
        if sd.get("resourceType") != "StructureDefinition" or sd.get("snapshot"):
            continue
        try:
            generate_snapshot(sd, context)
        except SnapshotError as exc:
            url = sd.get("url", sd.get("id", "?"))
            raise Invalid(f"{package.id}: the profile {url} cannot be used: {exc}") from None


def remove(session: Session, name: str) -> str:
    """Take package ``name`` out of force; returns the version removed."""
    version = session.execute(select(profile_package.c.version)
                              .where(profile_package.c.name == name)).scalar_one_or_none()
    if version is None:
        raise Invalid(f"no package named {name} is installed (see `dui profiles list`)")
    session.execute(delete(profile_package).where(profile_package.c.name == name))
    return str(version)


def installed(session: Session) -> list[Installed]:
    rows = session.execute(select(profile_package).order_by(profile_package.c.name)).mappings()
    return [Installed(id=r["id"], name=r["name"], version=r["version"], fhir_version=r["fhir_version"],
                      canonical=r["canonical"], dependencies=json.loads(r["dependencies"]), sha256=r["sha256"],
                      installed=r["installed"], installed_by=r["installed_by"]) for r in rows]


def state(session: Session) -> tuple[tuple[int, str], ...]:
    """What identifies the set of installed packages: changes with every install and removal."""
    rows = session.execute(select(profile_package.c.id, profile_package.c.sha256).order_by(profile_package.c.id))
    return tuple((int(i), str(s)) for i, s in rows)


def load_packages(session: Session, *, skip_unreadable: bool = False) -> list[Package]:
    """The installed packages, read back (they were checked when installed).

    ``skip_unreadable``: leave out, with a warning, a package that can no longer be read (stored by a version
    that checked less) instead of refusing them all."""
    packages = []
    for name, version, content in session.execute(select(profile_package.c.name, profile_package.c.version,
                                                         profile_package.c.content).order_by(profile_package.c.id)):
        try:
            packages.append(read_package(bytes(content)))
        except PackageError as exc:
            if not skip_unreadable:
                raise
            log.warning("the installed package %s#%s cannot be read any more and is ignored: %s", name, version, exc)
    return packages
