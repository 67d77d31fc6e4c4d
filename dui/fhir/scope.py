"""Which residents an actor may see: establishment scoping in SQL.

An actor tied to an organization (a staff member of an EHPAD, an API client registered with a FINESS)
sees the residents of that organization and nobody else's:

- the residents it manages: ``Patient.managingOrganization`` is the Organization with that FINESS;
- the residents it cares for elsewhere (a partner hospital): an active ``Consent`` whose
  ``provision.actor`` is that Organization, or a current ``Encounter`` (planned, arrived, in progress)
  whose ``serviceProvider`` is that Organization (a transfer).

A resource of a type in the R4 Patient compartment is visible when one of its compartment references
points at a visible resident; resources of other types (organizations, professionals, medications...)
are directory data, visible to all. Everything is a subquery on the search index, so a search, an
include, a history or ``$everything`` never sees another establishment's residents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import CompoundSelect, Select, and_, false, literal, or_, select

from dui.fhir.definitions import patient_compartment
from dui.fhir.tables import resource, search_reference, search_token

FINESS_SYSTEM = "https://finess.esante.gouv.fr"
CURRENT_ENCOUNTER = ("planned", "arrived", "in-progress")


@cache
def compartment_params() -> dict[str, tuple[str, ...]]:
    """Resource type -> the reference parameters that place it in a Patient's compartment."""
    return {rtype: tuple(params) for rtype, params in patient_compartment().items() if params}


def is_resident_data(rtype: str) -> bool:
    return rtype == "Patient" or rtype in compartment_params()


@dataclass(frozen=True)
class Scope:
    """The residents of one organization (by FINESS)."""

    finess: str

    def organizations(self) -> Select[Any]:
        """Ids of the Organizations that carry this FINESS."""
        return (select(resource.c.res_id)
                .join(search_token, search_token.c.rid == resource.c.rid)
                .where(search_token.c.res_type == "Organization", search_token.c.param == "identifier",
                       search_token.c.system == FINESS_SYSTEM, search_token.c.code == self.finess,
                       resource.c.deleted == false())
                .correlate(None))

    def residents(self) -> CompoundSelect[Any]:
        """Ids of the Patients this organization manages or cares for."""
        orgs = self.organizations()
        managed = _referrers("Patient", "organization", orgs)
        consent = _referrers("Consent", "actor", orgs, status=("active",), patient_param="patient")
        stay = _referrers("Encounter", "service-provider", orgs, status=CURRENT_ENCOUNTER, patient_param="patient")
        return managed.union(consent, stay)

    def rids(self, rtype: str) -> Select[Any] | None:
        """Row ids of the visible resources of ``rtype``; None when the type is not resident data."""
        if rtype == "Patient":
            return (select(resource.c.rid)
                    .where(resource.c.res_type == "Patient", resource.c.res_id.in_(self.residents()),
                           resource.c.deleted == false())
                    .correlate(None))
        params = compartment_params().get(rtype)
        if not params:
            return None
        ref = search_reference.alias()
        return (select(ref.c.rid)
                .where(ref.c.res_type == rtype, ref.c.param.in_(params), ref.c.target_type == "Patient",
                       ref.c.target_id.in_(self.residents()))
                .correlate(None))

    def visible(self, rows: Sequence[tuple[int, str]]) -> Select[Any]:
        """Of (row id, type) pairs, a query for the row ids that are visible."""
        branches = []
        types: dict[str, list[int]] = {}
        for rid, rtype in rows:
            types.setdefault(rtype, []).append(rid)
        free = [rid for rtype, rids in types.items() if not is_resident_data(rtype) for rid in rids]
        for rtype, rids in types.items():
            scoped = self.rids(rtype)
            if scoped is not None:
                branches.append(and_(resource.c.rid.in_(rids), resource.c.rid.in_(scoped)))
        if free:
            branches.append(resource.c.rid.in_(free))
        return select(resource.c.rid).where(or_(*branches) if branches else literal(False))


def _referrers(rtype: str, param: str, orgs: Select[Any], *, status: tuple[str, ...] = (),
               patient_param: str | None = None) -> Select[Any]:
    """Patient ids: the ``rtype`` resources whose ``param`` points at one of ``orgs`` (with ``status``),
    or, for ``Patient`` itself, their ids."""
    ref = search_reference.alias()
    conditions = [ref.c.res_type == rtype, ref.c.param == param, ref.c.target_type == "Organization",
                  ref.c.target_id.in_(orgs)]
    if status:
        tok = search_token.alias()
        conditions.append(ref.c.rid.in_(select(tok.c.rid).where(tok.c.res_type == rtype, tok.c.param == "status",
                                                                 tok.c.code.in_(status)).correlate(None)))
    if patient_param is None:
        owner = resource.alias()
        return (select(owner.c.res_id).join(ref, ref.c.rid == owner.c.rid)
                .where(*conditions, owner.c.deleted == false()).correlate(None))
    pat = search_reference.alias()
    return (select(pat.c.target_id)
            .where(pat.c.res_type == rtype, pat.c.param == patient_param, pat.c.target_type == "Patient",
                   pat.c.rid.in_(select(ref.c.rid).where(*conditions).correlate(None)))
            .correlate(None))
