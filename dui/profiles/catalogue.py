"""The conformance resources served under /fhir: those of the installed packages and the service's own.

The installed packages (``profile_package``) and the shipped definitions (``fhir_profiles.definitions()``) are the
one source of truth; their conformance resources are *served* from the FHIR store, so that reading and searching
them is the API's ordinary read and search (every R4 search parameter, paging, ``_summary``, ``_elements``,
history, the formats). ``sync`` makes the store match the sources, in the caller's transaction: ``dui profiles
install`` and ``remove`` run it in the transaction that changes the package table (the two cannot disagree), and
``dui db upgrade`` / ``dui profiles sync`` run it for the shipped definitions of a new version of the service.

A served resource carries the tag ``SOURCE_SYSTEM|<package name>`` (``dui`` for the service's own) in
``meta.tag``: ``GET /fhir/StructureDefinition?_tag=<SOURCE_SYSTEM>|hl7.fhir.fr.core`` lists a package's. The store
refuses every other write of a tagged resource, and a client's write of the tag (``guard``): clients still store
their own conformance resources under other ids, as the authorization policy lets them.

The service's own OperationDefinitions and SearchParameters are served with their urls under the deployment's api
base (``dui.profiles.canonical``; ``own_definitions``), and ``sync`` records the base it served
(``served_api_base``): the first worker of ``dui serve`` syncs again when the base has changed since.

Ids (``resource_id``; docs/profiles.md, "Conformance resources served"): a resource keeps its own id when it is a
valid FHIR id; a resource without one gets the last segment of its url, or ``x-`` and a hash of its url. When two
sources have a resource of the same type with the same id, the first in this order keeps it: the service's own
definitions, then the packages by name; a later one gets ``<id cut to 55 characters>-<8 hex digits of
sha256(package name "|" url)>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, false, select

from dui.auth.policy import CONFORMANCE_TYPES
from dui.errors import Conflict, Forbidden
from dui.fhir import jsontext, maintenance
from dui.fhir.repository import Current
from dui.fhir.tables import resource as resource_table
from dui.fhir.tables import search_token
from dui.profiles.canonical import API_TYPES, api_url
from fhir_profiles import CANONICAL, definitions
from fhir_profiles.package import Package

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from dui.fhir.sql import SqlFhirRepository

# The conformance resource types served from packages (a package's other resources, and its examples, are not).
TYPES = CONFORMANCE_TYPES
SOURCE_SYSTEM = f"{CANONICAL}/CodeSystem/dui-conformance-source"
SHIPPED = "dui"  # the source (tag code) of the service's own definitions
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
SERVED_BASE = "conformance api base"  # maintenance_state: the api base of the last sync
SYNC_LOCK = "conformance sync"  # the advisory lock that keeps syncs (and the check before one) one at a time


def own_definitions(api_base: str) -> list[dict[str, Any]]:
    """The service's own definitions as served: those of ``API_TYPES`` with their url under ``api_base``."""
    found = []
    for resource in definitions():
        url = resource.get("url")
        if resource.get("resourceType") in API_TYPES and isinstance(url, str):
            resource = {**resource, "url": api_url(url, api_base)}
        found.append(resource)
    return found


def served_api_base(session: Session) -> str | None:
    """The api base of the served conformance resources (the last ``sync``), None before the first."""
    state = maintenance.read_state(session, SERVED_BASE)
    return str(state["base"]) if state else None


@dataclass(frozen=True)
class Entry:
    """One conformance resource served: its type, id, source (package name, or ``dui``) and body."""

    type: str
    id: str
    source: str
    label: str  # the package id (``name#version``), or ``dui`` for the service's own
    resource: dict[str, Any] = field(repr=False)

    @property
    def url(self) -> str | None:
        url = self.resource.get("url")
        return url if isinstance(url, str) else None


def valid_id(text: Any) -> bool:
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def resource_id(resource: dict[str, Any], source: str, taken: Collection[tuple[str, str]] = ()) -> str:
    """The id under which ``resource`` of ``source`` (a package name, or ``dui``) is served, given the
    ``(type, id)`` already taken by sources before it (the service's own, then packages by name)."""
    rtype = str(resource.get("resourceType", ""))
    url = resource.get("url") if isinstance(resource.get("url"), str) else ""
    own = resource.get("id")
    if not valid_id(own):
        tail = str(url).rstrip("/").rsplit("/", 1)[-1]
        own = tail if valid_id(tail) else "x-" + hashlib.sha256(str(url).encode()).hexdigest()[:16]
    if (rtype, own) not in taken:
        return str(own)
    suffix = hashlib.sha256(f"{source}|{url or own}".encode()).hexdigest()[:8]
    return f"{str(own)[:55]}-{suffix}"


def entries(packages: Sequence[Package], shipped: Iterable[dict[str, Any]] | None = None) -> list[Entry]:
    """Every conformance resource served, with its id: the service's own first (``shipped``: by default the
    definitions as shipped, before ``own_definitions``), then the packages by name."""
    sources: list[tuple[str, str, Iterable[dict[str, Any]]]] = [
        (SHIPPED, SHIPPED, sorted(definitions() if shipped is None else shipped,
                                  key=lambda r: (str(r.get("resourceType")), str(r.get("id")))))]
    sources += [(p.name, p.id, p.resources) for p in sorted(packages, key=lambda p: p.name)]
    taken: set[tuple[str, str]] = set()
    found = []
    for source, label, resources in sources:
        for item in resources:
            rtype = item.get("resourceType")
            if rtype not in TYPES:
                continue
            rid = resource_id(item, source, taken)
            taken.add((str(rtype), rid))
            found.append(Entry(str(rtype), rid, source, label, item))
    return found


def served(entry: Entry) -> dict[str, Any]:
    """The body stored for ``entry``: the resource with its id and the source tag (as the store will order it)."""
    meta = dict(entry.resource.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == SOURCE_SYSTEM)]
    meta["tag"] = [*tags, {"system": SOURCE_SYSTEM, "code": entry.source, "display": entry.label}]
    body: dict[str, Any] = {"resourceType": entry.type, "id": entry.id, "meta": meta}
    body.update((k, v) for k, v in entry.resource.items() if k not in body)
    # as the store will read it back (decimals keep their text): an unchanged resource compares equal
    normalised: dict[str, Any] = jsontext.parse(jsontext.dump(body), max_depth=10_000, stored=True)
    return normalised


def source_of(body: dict[str, Any] | None) -> str | None:
    """The package id (or ``dui``) a stored body was served from, None for a client's own resource."""
    for tag in ((body or {}).get("meta") or {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == SOURCE_SYSTEM:
            return str(tag.get("display") or tag.get("code") or "?")
    return None


def _unversioned(body: dict[str, Any]) -> dict[str, Any]:
    meta = dict(body.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    return {**body, "meta": meta}


@dataclass
class SyncResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


def managed(repo: SqlFhirRepository) -> dict[tuple[str, str], Current]:
    """The live resources of the store that were served from a source (tagged)."""
    repo.flush()
    rows = repo.session.execute(
        select(resource_table.c.rid, resource_table.c.res_type, resource_table.c.res_id, resource_table.c.version,
               resource_table.c.last_updated, resource_table.c.deleted)
        .join(search_token, and_(search_token.c.rid == resource_table.c.rid, search_token.c.param == "_tag",
                                 search_token.c.system == SOURCE_SYSTEM))
        .where(search_token.c.res_type.in_(TYPES), resource_table.c.deleted == false())).all()
    return {(row.res_type, row.res_id): Current(*row) for row in rows}


def sync(repo: SqlFhirRepository, packages: Sequence[Package], api_base: str, now: datetime) -> SyncResult:
    """Make the served conformance resources those of ``packages`` and of the shipped definitions (their API under
    ``api_base``), in the repository's transaction, and record ``api_base``. ``repo`` must be one without ``guard``
    (the store's own writer). Raises ``Conflict`` when a client's own resource holds the id a served one needs
    (nothing of it is then kept)."""
    result = SyncResult()
    existing = managed(repo)
    wanted = entries(packages, own_definitions(api_base))
    for entry in wanted:
        body = served(entry)
        current = existing.pop((entry.type, entry.id), None)
        if current is None:
            held = repo.current(entry.type, entry.id, for_update=True)
            if held is not None and not held.deleted:
                raise Conflict(f"{entry.type}/{entry.id} is a resource a client stored; {entry.label} serves its "
                               f"{entry.type} {entry.url or entry.id} under that id. Delete it (or move it to "
                               "another id) and run the command again")
            repo.update(held, entry.type, entry.id, body, method="PUT")
            result.created += 1
            continue
        stored = repo.read(entry.type, entry.id)
        if stored is not None and stored.body is not None and _unversioned(stored.resource()) == body:
            result.unchanged += 1
            continue
        repo.update(current, entry.type, entry.id, body, method="PUT")
        result.updated += 1
    for current in sorted(existing.values(), key=lambda c: (c.type, c.id)):
        repo.delete(current)
        result.deleted += 1
    maintenance.write_state(repo.session, SERVED_BASE, {"base": api_base}, now)
    return result


def guard(repo: SqlFhirRepository, current: Current | None, rtype: str, content: dict[str, Any] | None) -> None:
    """``SqlFhirRepository``'s write guard: a served conformance resource is read-only to every writer but
    ``sync``, and no other resource may carry the source tag."""
    if rtype not in TYPES:
        return
    stored = repo.read(rtype, current.id) if current is not None and not current.deleted else None
    source = source_of(stored.resource()) if stored is not None and stored.body is not None else None
    if source is None:
        if content is not None and source_of(content) is not None:
            raise Forbidden(f"Not allowed: the tag {SOURCE_SYSTEM} marks the conformance resources this server "
                            f"serves from its installed packages and its own definitions; remove it from your {rtype}")
        return
    how = ("it changes with the service's version (dui db upgrade)" if source == SHIPPED else
           "it changes only with `dui profiles install` or `dui profiles remove`")
    where = f"{rtype}/{stored.id}" if stored is not None else rtype
    raise Forbidden(f"Not allowed: {where} is a conformance resource of {source} served read-only by this server; "
                    f"{how}. Store your own {rtype} under another id")
