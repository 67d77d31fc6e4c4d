"""A ``FhirRepository`` that shows an actor only the residents of its organization (``dui.fhir.scope``).

Every path out goes through it: a search gets the scope as one more criterion (so paging and totals
stay right), reads and history of an unseen resource answer "not found", fetched pages, includes and
``$everything`` keep only what is visible, and a write that would put data in, or move it to, a record
the actor cannot see is refused (the transaction is rolled back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import select

from dui.errors import Forbidden, NotFound
from dui.fhir.repository import Current, HistoryPage, ResourceVersion, SearchResult
from dui.fhir.scope import Scope, is_resident_data
from dui.fhir.search.plan import Include, SearchPlan, Within
from dui.fhir.sql import SqlFhirRepository
from dui.fhir.tables import resource


class ScopedRepository:
    def __init__(self, inner: SqlFhirRepository, scope: Scope) -> None:
        self.inner = inner
        self.scope = scope

    # -- visibility -------------------------------------------------------------------------------

    def _visible(self, rows: Sequence[tuple[int, str]]) -> set[int]:
        if not rows:
            return set()
        if not any(is_resident_data(rtype) for _, rtype in rows):
            return {rid for rid, _ in rows}
        self.inner.flush()
        return {int(r) for r in self.inner.session.execute(self.scope.visible(rows)).scalars()}

    def _sees(self, rid: int, rtype: str) -> bool:
        return rid in self._visible([(rid, rtype)])

    def _unseen(self, rtype: str, rid: str) -> NotFound:
        return NotFound(f"{rtype}/{rid} is not in the records your organization may see")

    # -- reads ------------------------------------------------------------------------------------

    def current(self, rtype: str, rid: str, *, for_update: bool = False) -> Current | None:
        found = self.inner.current(rtype, rid, for_update=for_update)
        if found is not None and not found.deleted and not self._sees(found.rid, rtype):
            raise self._unseen(rtype, rid)
        return found

    def read(self, rtype: str, rid: str) -> ResourceVersion | None:
        found = self.inner.read(rtype, rid)
        if found is None:
            return None
        if found.deleted:  # a deleted resource has no index rows left to judge by: resident data stays hidden
            return None if is_resident_data(rtype) else found
        return found if self._sees(found.rid, rtype) else None

    def vread(self, rtype: str, rid: str, version: int) -> ResourceVersion | None:
        return self.inner.vread(rtype, rid, version) if self.read(rtype, rid) is not None else None

    def fetch(self, rids: Sequence[int]) -> list[ResourceVersion]:
        versions = self.inner.fetch(rids)
        seen = self._visible([(v.rid, v.type) for v in versions])
        return [v for v in versions if v.rid in seen]

    def history(self, *, rtype: str | None = None, rid: str | None = None, since: datetime | None = None,
                before_vid: int | None = None, count: int = 20) -> HistoryPage:
        if rtype is not None and rid is not None and self.read(rtype, rid) is None:
            raise self._unseen(rtype, rid)
        page = self.inner.history(rtype=rtype, rid=rid, since=since, before_vid=before_vid, count=count)
        seen = self._visible([(v.rid, v.type) for v in page.versions])
        kept = [v for v in page.versions if v.rid in seen]
        return dataclasses.replace(page, versions=kept, total=page.total if len(kept) == len(page.versions)
                                   else None)

    def search(self, plan: SearchPlan, *, total: str | None = None) -> SearchResult:
        rows = self.scope.rids(plan.resource_type)
        if rows is not None:
            plan = dataclasses.replace(plan, criteria=[*plan.criteria, Within(plan.resource_type, rows)])
        return self.inner.search(plan, total=total)

    def everything(self, patient_rid: int, patient_id: str,
                   options: dict[str, Any]) -> tuple[list[int], dict[str, Any] | None]:
        if not self._sees(patient_rid, "Patient"):
            raise self._unseen("Patient", patient_id)
        return self.inner.everything(patient_rid, patient_id, options)

    def include(self, include: Include, rids: Sequence[int]) -> list[int]:
        found = self.inner.include(include, rids)
        if not found:
            return found
        # The types alone decide which rows need a look (not the bodies, which the page fetches afterwards).
        typed = self.inner.session.execute(
            select(resource.c.rid, resource.c.res_type).where(resource.c.rid.in_(found))).all()
        seen = self._visible([(int(rid), str(rtype)) for rid, rtype in typed])
        return [r for r in found if r in seen]

    def referrers(self, rtype: str, rid: str) -> list[int]:
        return self.inner.referrers(rtype, rid)

    # -- writes -----------------------------------------------------------------------------------

    def create(self, rtype: str, resource: dict[str, Any], *, rid: str | None = None,
               method: str = "POST") -> ResourceVersion:
        return self._checked(self.inner.create(rtype, resource, rid=rid, method=method))

    def update(self, current: Current | None, rtype: str, rid: str, resource: dict[str, Any],
               *, method: str = "PUT") -> ResourceVersion:
        return self._checked(self.inner.update(current, rtype, rid, resource, method=method))

    def delete(self, current: Current) -> ResourceVersion:
        return self.inner.delete(current)  # ``current`` came through the scope already

    def _checked(self, version: ResourceVersion) -> ResourceVersion:
        if is_resident_data(version.type) and not self._sees(version.rid, version.type):
            what = ("a resident is admitted by an establishment: set managingOrganization to yours"
                    if version.type == "Patient" else
                    "it must belong to the record of a resident your organization may see")
            raise Forbidden(f"Not allowed: this {version.type} would not be visible to you ({what})")
        return version

    # -- the rest, unchanged ---------------------------------------------------------------------------

    def savepoint(self) -> AbstractContextManager[Any]:
        return self.inner.savepoint()

    def lock(self, key: str) -> None:
        self.inner.lock(key)

    def flush(self) -> None:
        self.inner.flush()
