"""The ``FhirRepository`` of a restricted actor (a staff member, an API client): the access rules of
``dui.fhir.scope`` applied on every path out of and into the store.

Reads, for an actor tied to an establishment: a search gets the scope as one more criterion on its own type and on
every hop of its chains and ``_has`` (so pages and totals stay right, and nothing is tested outside the scope);
reads and histories of what the actor may not see answer exactly as for what does not exist; fetched pages,
includes and ``$everything`` keep only what is visible.

Writes, for every restricted actor: before a write, every reference to resident data must point at a record the
actor sees, a change of grants or of an establishment's FINESS must be the act of the right administration, and
resident data is never created at an id the client chose (``PUT`` to an unknown id could otherwise tell an id
the actor may not see from one that does not exist); after it, the written resource must be visible to its writer.
A refusal raises, and the request's transaction is rolled back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from dui.auth.actor import Actor
from dui.direct_sql import DirectQuery
from dui.errors import Forbidden
from dui.fhir.interactions.base import not_found
from dui.fhir.repository import Current, HistoryPage, ResourceVersion, SearchResult
from dui.fhir.scope import (
    FINESS_SYSTEM,
    GRANTING_TYPES,
    KEPT_TYPES,
    OWNED_TYPES,
    Grant,
    Residents,
    Sight,
    administers,
    granted_residents,
    is_hidden,
    is_resident_data,
)
from dui.fhir.search.plan import Include, SearchPlan
from dui.fhir.sql import SqlFhirRepository
from dui.fhir.tables import resource, search_reference, search_token

# Types whose writes may change who sees whom: the grants, and the Organizations (FINESS) they name.
SIGHT_TYPES = GRANTING_TYPES | {"Organization"}


# The row of one live resource (a reference a write makes): built once, on the unit's own connection (dui.direct_sql).
_LIVE_ROW = DirectQuery(select(resource.c.rid).where(resource.c.res_type == bindparam("rtype"),
                                                     resource.c.deleted.is_(False),
                                                     resource.c.res_id == bindparam("id")))


class ScopedRepository:
    """``sight``: what the actor's establishment sees (None for an API client registered without one, which sees
    every establishment and is bound by the write rules only). ``planned``: ``Type/id`` of the resources the
    current transaction creates, which its other entries may reference before they exist."""

    def __init__(self, inner: SqlFhirRepository, actor: Actor, sight: Sight | None, residents: Residents,
                 now: datetime, planned: set[str] | None = None) -> None:
        self.inner = inner
        self.actor = actor
        self.sight = sight
        self.residents = residents
        self.now = now
        self.planned = planned if planned is not None else set()
        self._judged: set[int] = set()  # rows a scoped search just returned: the SQL scope has judged them

    # -- visibility: one rule, on the bodies (dui.fhir.scope.Sight.sees) --------------------------------

    def _sees(self, version: ResourceVersion) -> bool:
        if self.sight is None or not is_hidden(version.type):
            return True
        return version.body is not None and self.sight.sees(version.type, version.resource())

    def _hidden(self, rtype: str) -> bool:
        """Whether resources of ``rtype`` may be hidden from this actor (resident data, for a scoped actor)."""
        return self.sight is not None and is_hidden(rtype)

    # -- reads ------------------------------------------------------------------------------------

    def current(self, rtype: str, rid: str, *, for_update: bool = False) -> Current | None:
        found = self.inner.current(rtype, rid, for_update=for_update)
        if found is None or not self._hidden(rtype):
            return found
        # A deleted resource has no body left to judge by: resident data stays hidden, as unknown.
        return found if not found.deleted and self.read(rtype, rid) is not None else None

    def read(self, rtype: str, rid: str) -> ResourceVersion | None:
        found = self.inner.read(rtype, rid)
        if found is None or not self._hidden(rtype):
            return found
        return found if not found.deleted and self._sees(found) else None

    def vread(self, rtype: str, rid: str, version: int) -> ResourceVersion | None:
        if self.read(rtype, rid) is None:
            return None
        found = self.inner.vread(rtype, rid, version)
        return found if found is None or found.deleted or self._sees(found) else None

    def fetch(self, rids: Sequence[int]) -> list[ResourceVersion]:
        return self._keep(self.inner.fetch(rids))

    def _keep(self, versions: list[ResourceVersion]) -> list[ResourceVersion]:
        """The versions the actor sees (one query for the residents of them all)."""
        if self.sight is None or not any(is_hidden(v.type) and v.rid not in self._judged for v in versions):
            return versions
        bodies = [(v.type, v.resource() if v.body is not None and is_hidden(v.type) else None)
                  for v in versions]
        return [v for v, seen in zip(versions, self.sight.visible(bodies), strict=True)
                if seen or not is_hidden(v.type)]

    def history(self, *, rtype: str | None = None, rid: str | None = None, since: datetime | None = None,
                before_vid: int | None = None, count: int = 20, types: Sequence[str] | None = None) -> HistoryPage:
        if rtype is not None and rid is not None and self._hidden(rtype) and self.read(rtype, rid) is None:
            raise not_found(rtype, rid)
        page = self.inner.history(rtype=rtype, rid=rid, since=since, before_vid=before_vid, count=count,
                                  types=types)
        kept = self._keep(page.versions)
        return dataclasses.replace(page, versions=kept, total=page.total if len(kept) == len(page.versions)
                                   else None)

    def search(self, plan: SearchPlan, *, total: str | None = None) -> SearchResult:
        if self.sight is None:
            return self.inner.search(plan, total=total)
        result = self.inner.search(dataclasses.replace(plan, within=self.sight), total=total)
        self._judged = set(result.rids)  # the page that is fetched next needs no second look
        return result

    def everything(self, patient_rid: int, patient_id: str,
                   options: dict[str, Any]) -> tuple[list[int], dict[str, Any] | None]:
        if self.sight is not None and not self.sight.seen([patient_id]):
            raise not_found("Patient", patient_id)
        return self.inner.everything(patient_rid, patient_id, options)

    def include(self, include: Include, rids: Sequence[int]) -> list[int]:
        found = self.inner.include(include, rids)
        if not found or self.sight is None:
            return found
        seen = {v.rid for v in self.fetch(found)}  # the page fetches them again: the bodies are what is judged
        return [r for r in found if r in seen]

    def referrers(self, rtype: str, rid: str) -> list[int]:
        return self.inner.referrers(rtype, rid)

    # -- writes -----------------------------------------------------------------------------------

    def create(self, rtype: str, resource: dict[str, Any], *, rid: str | None = None,
               method: str = "POST") -> ResourceVersion:
        self._before(rtype, None, resource)
        return self._checked(self._written(self.inner.create(rtype, resource, rid=rid, method=method)))

    def update(self, current: Current | None, rtype: str, rid: str, resource: dict[str, Any],
               *, method: str = "PUT") -> ResourceVersion:
        if current is None or current.deleted:
            if self._hidden(rtype):
                raise Forbidden(f"Not allowed: {rtype}/{rid} is not among the records you may update; a resident's "
                                "records are created with POST (the server assigns the id) or a conditional update")
            before = None
        else:
            before = self._stored(current)
        ends_own_sight = self._before(rtype, before, resource)
        version = self._written(self.inner.update(current, rtype, rid, resource, method=method))
        return version if ends_own_sight else self._checked(version)

    def delete(self, current: Current) -> ResourceVersion:
        self._before(current.type, self._stored(current), None)
        return self._written(self.inner.delete(current))  # ``current`` came through the scope already

    def _stored(self, current: Current) -> dict[str, Any] | None:
        """The body a write replaces, for the rules that compare before and after (grants, FINESS) only."""
        if current.deleted or (current.type not in SIGHT_TYPES and current.type not in KEPT_TYPES):
            return None
        found = self.inner.read(current.type, current.id)
        return found.resource() if found is not None and found.body is not None else None

    def _written(self, version: ResourceVersion) -> ResourceVersion:
        """After any write that may change who sees whom (whatever else follows), read the grants again."""
        if self.sight is not None and version.type in SIGHT_TYPES:
            self.sight.invalidate()
            self._judged = set()
        return version

    def _before(self, rtype: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
        """Apply the write rules; True when the write ends the actor's own sight of the resident (a partner closing
        its stay or consent), so that the written resource is not expected to stay visible to it."""
        if after is not None and self.sight is not None:
            self._check_references(after)
        if rtype in KEPT_TYPES:
            self._check_keeper(rtype, before, after)
        if rtype == "Organization":
            self._check_establishment(before, after)
        elif rtype == "Patient":
            old = self.residents.grants(rtype, before, self.now)
            new = self.residents.grants(rtype, after, self.now)
            for grant in sorted(old ^ new, key=lambda g: (g.org, g.resident)):
                self._check_admission(grant, added=grant in new)
        elif rtype in ("Encounter", "Consent"):
            return self._check_partner_grants(rtype, self.residents.grants(rtype, before, self.now),
                                              self.residents.grants(rtype, after, self.now))
        return False

    def _checked(self, version: ResourceVersion) -> ResourceVersion:
        if self._hidden(version.type) and not self._sees(version):
            what = ("a resident is admitted by an establishment: set managingOrganization to yours"
                    if version.type == "Patient" else
                    "its owner extension must name your establishment's Organization"
                    if version.type in OWNED_TYPES and not is_resident_data(version.type) else
                    "it must belong to the record of a resident your organization may see")
            raise Forbidden(f"Not allowed: this {version.type} would not be visible to you ({what})")
        return version

    # -- the write rules (dui.fhir.scope) ---------------------------------------------------------

    def _check_references(self, content: dict[str, Any]) -> None:
        """Every reference to resident data points at a record the actor sees (or one this transaction creates):
        one answer for a record that does not exist and one the actor may not see. One look-up per type, one fetch
        and one question about grants, however many references the body holds."""
        wanted = sorted((t, i) for t, i in self.residents.references(content)
                        if is_hidden(t) and f"{t}/{i}" not in self.planned)
        if not wanted:
            return
        self.inner.flush()
        rows: list[int] = []
        for rtype in sorted({t for t, _ in wanted}):
            ids = [i for t, i in wanted if t == rtype]
            if len(ids) == 1:  # most often: the one resident a resource is about
                rows += [row[0] for row in _LIVE_ROW.rows(self.inner.session, {"rtype": rtype, "id": ids[0]})]
                continue
            rows += self.inner.session.execute(
                select(resource.c.rid).where(resource.c.res_type == rtype, resource.c.deleted.is_(False),
                                             resource.c.res_id.in_(ids))).scalars()
        seen = {(v.type, v.id) for v in self._keep(self.inner.fetch(rows)) if v.body is not None}
        for rtype, rid in wanted:
            if (rtype, rid) not in seen:
                raise Forbidden(f"Not allowed: the reference {rtype}/{rid} does not point at a record you may see "
                                "(it does not exist, or belongs to a resident of another establishment)")

    def _check_establishment(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """An Organization carrying a FINESS is kept by that establishment's administration."""
        old, new = self.residents.finess(before), self.residents.finess(after)
        for finess in sorted(old | new):
            if not administers(self.actor, [finess]):
                raise Forbidden(f"Not allowed: the Organization of establishment FINESS {finess} is kept by that "
                                "establishment's administration (administrative staff, or its own API client)")
        added = new - old
        if added and before is not None and isinstance(before.get("id"), str):
            # The Organization may already grant sight of residents (admissions, stays, consents naming it): its new
            # FINESS must not bring in residents its writer does not see.
            self.inner.flush()
            granted = {str(i) for i in self.inner.session.execute(
                select(granted_residents([before["id"]], self.now).subquery().c[0])).scalars()}
            if granted - (self.sight.seen(granted) if self.sight is not None else set()):
                raise Forbidden("Not allowed: this Organization is named by the records of residents your "
                                f"establishment does not see; FINESS {', '.join(sorted(added))} cannot be added to it")

    def _check_keeper(self, rtype: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """Directory data an establishment keeps (its rooms, sensors...) is written by that establishment only: every
        Organization it names as keeper, before and after, that carries a FINESS must carry the writer's."""
        named = self.residents.owners(rtype, before, KEPT_TYPES) | self.residents.owners(rtype, after, KEPT_TYPES)
        for org in sorted(named):
            finess = self._finess_of(org)
            if finess and self.actor.establishment not in finess:
                raise Forbidden(f"Not allowed: this {rtype} is kept by the establishment of Organization/{org} "
                                f"(FINESS {', '.join(sorted(finess))}); only its staff and clients write it")

    def _check_admission(self, grant: Grant, *, added: bool) -> None:
        """Admission, transfer, discharge (``managingOrganization``): the administration of the establishments
        left and joined."""
        if not administers(self.actor, self._finess_of(grant.org)):
            verb = "admit a resident to" if added else "move a resident out of"
            raise Forbidden(f"Not allowed: only the administration of an establishment may {verb} it "
                            f"(managingOrganization Organization/{grant.org})")

    def _check_partner_grants(self, rtype: str, old: set[Grant], new: set[Grant]) -> bool:
        """A stay or consent that lets another organization than the resident's own see the resident is recorded,
        and changed, by the administration of the resident's establishment; the organization it names may only
        end it."""
        homes = {g.resident: self._managing_org(g.resident) for g in old | new}
        partners = {g for g in old | new if homes[g.resident] != g.org}
        if not partners:
            return False  # the resident's own establishment already sees them: nothing widens
        if all(administers(self.actor, self._finess_of(homes[g.resident] or "")) for g in partners):
            return False
        if not (new & partners) and all(self.actor.establishment in self._finess_of(g.org) for g in old):
            return True  # a partner ends its own sight
        what = "stay" if rtype == "Encounter" else "consent"
        org = sorted(g.org for g in partners)[0]
        raise Forbidden(f"Not allowed: a {what} that lets Organization/{org} see a resident is recorded and changed "
                        "by the administration of the resident's establishment; the organization it names may only "
                        "end it")

    def _finess_of(self, org_id: str) -> set[str]:
        self.inner.flush()
        rows = self.inner.session.execute(
            select(search_token.c.code).join(resource, resource.c.rid == search_token.c.rid)
            .where(resource.c.res_type == "Organization", resource.c.res_id == org_id, resource.c.deleted.is_(False),
                   search_token.c.param == "identifier", search_token.c.system == FINESS_SYSTEM)).scalars()
        return {str(code) for code in rows if code}

    def _managing_org(self, patient_id: str) -> str | None:
        self.inner.flush()
        return self.inner.session.execute(
            select(search_reference.c.target_id).join(resource, resource.c.rid == search_reference.c.rid)
            .where(resource.c.res_type == "Patient", resource.c.res_id == patient_id,
                   search_reference.c.param == "organization", search_reference.c.target_type == "Organization")
            .limit(1)).scalar()

    # -- the rest, unchanged ---------------------------------------------------------------------------

    def savepoint(self) -> AbstractContextManager[Any]:
        return self.inner.savepoint()

    def lock(self, key: str) -> None:
        self.inner.lock(key)

    def flush(self) -> None:
        self.inner.flush()
