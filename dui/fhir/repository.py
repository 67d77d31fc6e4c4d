"""The storage contract of the FHIR engine, and its value types.

Interactions (``dui.fhir.interactions``) talk to a ``FhirRepository``; ``dui.fhir.sql`` implements it
on SQLAlchemy. The repository flushes and never commits: the edge (web request, CLI command, worker
job) owns the transaction (http://hl7.org/fhir/R4/http.html for the semantics each method serves).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from dui.fhir import jsontext

if TYPE_CHECKING:
    from dui.fhir.search.plan import Include, SearchPlan


@dataclass(frozen=True, slots=True)
class Current:
    """The ``resource`` row: where a logical resource stands now."""

    rid: int
    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One stored version; ``body`` is the JSON served to clients (None for a delete)."""

    rid: int
    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    method: str
    body: bytes | None
    vid: int = 0

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.type}/{self.id}"

    @property
    def versioned_reference(self) -> str:
        return f"{self.type}/{self.id}/_history/{self.version}"

    def resource(self) -> dict[str, Any]:
        """The body as a dict (decimals keep their text)."""
        if self.body is None:
            raise ValueError("a deleted version has no body")
        value: dict[str, Any] = jsontext.parse(self.body, max_depth=10_000, stored=True)
        return value


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[ResourceVersion]
    next_cursor: int | None  # vid to continue from (exclusive), None on the last page
    total: int | None


@dataclass(frozen=True, slots=True)
class SearchResult:
    rids: list[int]  # one page, in order
    total: int | None
    next_cursor: dict[str, Any] | None  # positions to continue from (``dui.fhir.search.order``)
    previous_cursor: dict[str, Any] | None


class FhirRepository(Protocol):
    """Storage of versioned FHIR resources with a search index."""

    def current(self, rtype: str, rid: str, *, for_update: bool = False) -> Current | None:
        """The resource row, locked against concurrent writers when ``for_update``."""

    def read(self, rtype: str, rid: str) -> ResourceVersion | None:
        """The current version (possibly a delete tombstone), or None if it never existed."""

    def vread(self, rtype: str, rid: str, version: int) -> ResourceVersion | None: ...

    def create(self, rtype: str, resource: dict[str, Any], *, rid: str | None = None,
               method: str = "POST") -> ResourceVersion:
        """Store version 1 under a new id (or ``rid``); raises Conflict on a unique identifier clash."""

    def update(self, current: Current | None, rtype: str, rid: str, resource: dict[str, Any],
               *, method: str = "PUT") -> ResourceVersion:
        """Store the next version (version 1 when ``current`` is None)."""

    def delete(self, current: Current) -> ResourceVersion:
        """Write a tombstone version and drop the resource from the index."""

    def history(self, *, rtype: str | None = None, rid: str | None = None, since: datetime | None = None,
                before_vid: int | None = None, count: int = 20, types: Sequence[str] | None = None) -> HistoryPage: ...

    def fetch(self, rids: Sequence[int]) -> list[ResourceVersion]:
        """Current versions for row ids, in the order given."""

    def search(self, plan: SearchPlan, *, total: str | None = None) -> SearchResult:
        """One page of row ids matching ``plan``; the total when asked ("accurate" or "estimate")."""

    def everything(self, patient_rid: int, patient_id: str,
                   options: dict[str, Any]) -> tuple[list[int], dict[str, Any] | None]:
        """One page of ``Patient/$everything`` and the cursor of the next (None on the last)."""

    def referrers(self, rtype: str, rid: str) -> list[int]:
        """Row ids of current resources whose indexed references point at ``rtype/rid`` (merges)."""

    def include(self, include: Include, rids: Sequence[int]) -> list[int]:
        """Row ids reached from ``rids`` by one ``_include`` / ``_revinclude`` step."""

    def savepoint(self) -> AbstractContextManager[Any]:
        """A nested transaction: rolled back alone if its block raises (batch entries)."""

    def lock(self, key: str) -> None:
        """Serialise, until the transaction ends, the writers working on ``key``."""


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def amend(store: FhirRepository, rtype: str, rid: str, change: Callable[[dict[str, Any]], None]
          ) -> ResourceVersion | None:
    """A new version of ``rtype/rid``: its current body changed in place by ``change`` (the server's ``meta``
    fields dropped, the store sets them), written under the row lock; None when it is gone or deleted."""
    current = store.current(rtype, rid, for_update=True)
    stored = store.read(rtype, rid)
    if current is None or current.deleted or stored is None or stored.body is None:
        return None
    body = copy.deepcopy(stored.resource())
    meta = body.setdefault("meta", {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    change(body)
    return store.update(current, rtype, rid, body)
