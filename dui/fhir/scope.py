"""Whose record is this, and who sees it: the one rule set of establishment scoping (docs/security.md,
"Establishment scoping").

**Whose record.** A resource belongs to the residents its Patient-compartment references point at (the R4
Patient CompartmentDefinition: ``Observation.subject`` and ``.performer``, ``Appointment.actor``,
``Group.member``...); a Patient to itself. ``Residents.of`` reads it from a resource's body with the search
parameters' own expressions, the very values the index holds and the SQL below reads: the audit trail, the write
checks and the scope agree because they are one computation.

**Who sees a resident.** An actor tied to an establishment (a staff member, an API client registered with a
FINESS) sees a resident when a *grant* names its establishment's Organization (one carrying its FINESS):

- ``managed``: ``Patient.managingOrganization`` (the admission);
- ``stay``: a current ``Encounter`` (planned, arrived, in progress, or on leave: a resident in hospital keeps her
  place) whose ``serviceProvider`` it is;
- ``consent``: an active ``Consent`` whose ``provision.actor`` it is, within ``provision.period`` if one is given.

A resource of a Patient-compartment type is visible when it belongs to at least one resident and every resident it
belongs to is visible; other types (organizations, professionals, medications...) are directory data, visible to
all. The exception, ``OWNED_TYPES``: a resource of these types that belongs to no resident is the work or the
property of an establishment, visible to the establishment its ``owner`` is (an Organization carrying its FINESS)
and to no other: a ``Task`` of no resident (mail received over MSSanté waiting to be matched with a resident,
``dui.messaging.inbox``), and every ``Subscription`` (it names an endpoint and may carry secret headers,
``dui.subscriptions``), which never belongs to a resident. ``Sight`` applies it for one unit of work:
in SQL on the search index, on the searched type and on each hop of chains and ``_has`` (a search never sees, nor
tests, another establishment's residents), and in memory on the bodies a read, an include, a history or
``$everything`` serves, with the grants of their residents asked of the database.

**Who may write what widens sight.** The grants and the FINESS they hang on are facts only the right actor may
write (checked on every write of a staff member or an API client by ``dui.fhir.scoped``):

- an Organization carrying a FINESS is kept by that establishment's administration (administrative roles, or a
  client registered for it); nobody else adds, removes or changes a FINESS, and a FINESS is never added to an
  Organization that already grants sight of residents the writer could not see;
- setting or changing ``managingOrganization`` (admission, transfer) needs the administration of the
  establishments left and joined;
- a stay or consent for another organization than the resident's own is recorded, and changed, by the
  administration of the resident's establishment; the organization it names may only end it (a partner closes its
  own access);
- every reference a written resource makes to resident data must point at a record the writer sees (subject,
  patient, focus, any reference), and the written resource must be visible to its writer afterwards.

**Who may write directory data an establishment keeps** (``KEPT_TYPES``: its rooms, fall sensors, services,
endpoints and staff roles, read by rules that route alerts, count places and admit residents): the staff and
clients of that establishment, whatever the resource names before and after the write. Seen by all, kept by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Select,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from dui.auth.actor import Actor
from dui.auth.roles import ADMINISTRATEUR, ADMINISTRATIF, DIRECTION
from dui.direct_sql import DirectQuery
from dui.fhir.definitions import patient_compartment
from dui.fhir.search.indexer import Indexer, IndexRows
from dui.fhir.tables import UtcDateTime, resource, search_date, search_reference, search_token

FINESS_SYSTEM = "https://finess.esante.gouv.fr"
CURRENT_ENCOUNTER = ("planned", "arrived", "in-progress", "onleave")
ADMINISTRATIVE_ROLES = frozenset({ADMINISTRATIF, DIRECTION, ADMINISTRATEUR})  # the establishment's administration
GRANTING_TYPES = frozenset({"Patient", "Encounter", "Consent"})
# Types an establishment owns when they belong to no resident: type -> the reference parameter naming the
# Organization it belongs to. A Task may belong to a resident (resident data) or to no one (the establishment's); a
# Subscription is never a resident's (the search parameter ``owner`` is the project's own, fhir_profiles).
OWNED_TYPES: dict[str, str] = {"Task": "owner", "Subscription": "owner"}
# Directory data an establishment keeps: type -> the reference parameter naming the Organization that keeps it. Seen by
# all; written (created, changed, deleted) only by staff and clients of the establishment that Organization carries
# the FINESS of, before and after the write. The rules that read them trust them: a sensor's owner and room route a
# fall alert to a resident (dui.staff.alerts), a room's organization makes it a place of the establishment (admission,
# occupancy), an Endpoint names where an establishment's messages go.
KEPT_TYPES: dict[str, str] = {"Device": "organization", "Location": "organization", "HealthcareService": "organization",
                              "Endpoint": "organization", "PractitionerRole": "organization"}


@cache
def compartment_params() -> dict[str, tuple[str, ...]]:
    """Resource type -> the reference parameters that place it in a Patient's compartment."""
    return {rtype: tuple(params) for rtype, params in patient_compartment().items() if params}


def is_resident_data(rtype: str) -> bool:
    return rtype == "Patient" or rtype in compartment_params()


def is_hidden(rtype: str) -> bool:
    """Whether a scoped actor may be kept from seeing resources of ``rtype``: resident data, and the types an
    establishment owns (``OWNED_TYPES``). Every other type is directory data, visible to all."""
    return is_resident_data(rtype) or rtype in OWNED_TYPES


def administers(actor: Actor, finess: Iterable[str]) -> bool:
    """Whether ``actor`` acts for the administration of the establishment carrying one of ``finess``: a staff
    member of it with an administrative role, or an API client registered for it."""
    if actor.establishment is None or actor.establishment not in set(finess):
        return False
    return actor.kind == "client" or bool(actor.roles & ADMINISTRATIVE_ROLES)


# -- from a resource's body ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """``org`` (an Organization id) sees ``resident`` (a Patient id) by ``kind``: managed, stay or consent."""

    kind: str
    org: str
    resident: str


class Residents:
    """Readings of a resource's body that the access rules share, made with the indexer (the values the index
    holds for it)."""

    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer

    def of(self, rtype: str, content: dict[str, Any]) -> set[str]:
        """The residents ``content`` belongs to: itself for a Patient, else the Patients its compartment
        references point at."""
        if rtype == "Patient":
            return {content["id"]} if isinstance(content.get("id"), str) else set()
        params = compartment_params().get(rtype)
        if not params:
            return set()
        return {rid for _, target, rid in self.indexer.references(rtype, content, params)
                if target == "Patient" and rid is not None}

    def owners(self, rtype: str, content: dict[str, Any] | None, types: dict[str, str] = OWNED_TYPES) -> set[str]:
        """The Organizations a resource of ``types`` (``OWNED_TYPES``, or ``KEPT_TYPES``) names as its owner or
        keeper (empty for other types, and for no body)."""
        param = types.get(rtype)
        if param is None or content is None:
            return set()
        return {oid for _, target, oid in self.indexer.references(rtype, content, (param,))
                if target == "Organization" and oid is not None}

    def references(self, content: Any) -> set[tuple[str, str]]:
        """(type, id) of every reference to this server anywhere in ``content`` (contained resources included)."""
        found: set[tuple[str, str]] = set()
        for ref in _reference_strings(content):
            parsed = self.indexer.parse_reference(ref)
            if parsed is not None:
                found.add(parsed)
        return found

    def grants(self, rtype: str, content: dict[str, Any] | None, now: datetime) -> set[Grant]:
        """The grants ``content`` makes (see the module's docstring), read from its index rows."""
        if content is None or rtype not in GRANTING_TYPES:
            return set()
        rows = self.indexer.rows(0, rtype, content)
        refs = _refs(rows)
        if rtype == "Patient":
            own = content.get("id")  # none yet on a create
            return {Grant("managed", org, own if isinstance(own, str) else "")
                    for org in refs.get(("organization", "Organization"), ())}
        statuses = {r["code"] for r in rows.token if r["param"] == "status"}
        if rtype == "Encounter":
            if not statuses & set(CURRENT_ENCOUNTER):
                return set()
            orgs, kind = refs.get(("service-provider", "Organization"), set()), "stay"
        else:
            periods = [(r["low"], r["high"]) for r in rows.date if r["param"] == "period"]
            if "active" not in statuses or any(high <= now or low > now for low, high in periods):
                return set()
            orgs, kind = refs.get(("actor", "Organization"), set()), "consent"
        return {Grant(kind, org, patient) for org in orgs for patient in refs.get(("patient", "Patient"), ())}

    def finess(self, content: dict[str, Any] | None) -> set[str]:
        """The FINESS numbers an Organization carries."""
        if content is None:
            return set()
        rows = self.indexer.rows(0, "Organization", content)
        return {r["code"] for r in rows.token
                if r["param"] == "identifier" and r["system"] == FINESS_SYSTEM and r["code"]}


def _refs(rows: IndexRows) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for row in rows.reference:
        if row["target_type"] and row["target_id"]:
            out.setdefault((row["param"], row["target_type"]), set()).add(row["target_id"])
    return out


def _reference_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and not value.startswith("#"):
                yield value
            elif key == "url" and isinstance(value, str) and "Binary/" in value:
                yield value  # an Attachment's content kept as a Binary of this server (read by exports)
            elif isinstance(value, dict | list):
                yield from _reference_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _reference_strings(item)


# -- in SQL ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One establishment (by FINESS), at ``now`` (consent periods)."""

    finess: str
    now: datetime


def organizations_of(finess: Any) -> Select[Any]:
    """Ids of the live Organizations that carry ``finess`` (a value or a bound parameter)."""
    return (select(resource.c.res_id)
            .join(search_token, search_token.c.rid == resource.c.rid)
            .where(search_token.c.res_type == "Organization", search_token.c.param == "identifier",
                   search_token.c.system == FINESS_SYSTEM, search_token.c.code == finess,
                   resource.c.deleted == false())
            .correlate(None))


def granted_residents(orgs: Any, now: Any, among: Any = None) -> CompoundSelect[Any]:
    """Ids of the Patients that the Organizations ``orgs`` (a query of ids, or a list) see by a grant; ``among``:
    only those of these ids (a list or an expanding bound parameter), or only that one (a bound parameter that is
    not expanding)."""
    managed = _referrers("Patient", "organization", orgs, among=among)
    consent = _referrers("Consent", "actor", orgs, status=("active",), patient_param="patient", now=now, among=among)
    stay = _referrers("Encounter", "service-provider", orgs, status=CURRENT_ENCOUNTER, patient_param="patient",
                      among=among)
    return managed.union(consent, stay)


def _referrers(rtype: str, param: str, orgs: Any, *, status: tuple[str, ...] = (),
               patient_param: str | None = None, now: Any = None, among: Any = None) -> Select[Any]:
    """Patient ids: the ``rtype`` resources whose ``param`` points at one of ``orgs`` (with ``status``; for a
    Consent, within its period at ``now``), or, for ``Patient`` itself, their ids. Index rows exist for live
    resources only: a deleted stay or consent grants nothing."""
    ref = search_reference.alias()
    conditions = [ref.c.res_type == rtype, ref.c.param == param, ref.c.target_type == "Organization",
                  ref.c.target_id.in_(orgs)]
    if status:
        tok = search_token.alias()
        statuses = [literal(v) for v in status]  # written in the statement: a prebuilt one takes no list parameter
        conditions.append(ref.c.rid.in_(select(tok.c.rid).where(tok.c.res_type == rtype, tok.c.param == "status",
                                                                 tok.c.code.in_(statuses)).correlate(None)))
    if now is not None:  # a consent outside its period grants nothing
        period = search_date.alias()
        conditions.append(ref.c.rid.not_in(select(period.c.rid).where(
            period.c.res_type == rtype, period.c.param == "period",
            or_(period.c.high <= now, period.c.low > now)).correlate(None)))
    if patient_param is None:
        owner = resource.alias()
        mine = [owner.c.res_type == "Patient", _among(owner.c.res_id, among)] if among is not None else []
        return (select(owner.c.res_id).join(ref, ref.c.rid == owner.c.rid)
                .where(*conditions, *mine, owner.c.deleted == false()).correlate(None))
    pat = search_reference.alias()
    mine = [_among(pat.c.target_id, among)] if among is not None else []
    return (select(pat.c.target_id)
            .where(pat.c.res_type == rtype, pat.c.param == patient_param, pat.c.target_type == "Patient", *mine,
                   pat.c.rid.in_(select(ref.c.rid).where(*conditions).correlate(None)))
            .correlate(None))


def _among(column: Any, among: Any) -> Any:
    if isinstance(among, BindParameter) and not among.expanding:
        return column == among
    return column.in_(among)


# The residents an establishment sees, and which of some residents it sees: built once, with bound parameters (a
# statement costs more to build than to run here, and the database keeps the plan of a statement it has seen).
_SEEN = granted_residents(organizations_of(bindparam("finess")), bindparam("now", type_=UtcDateTime()))
_SEEN_AMONG = select(granted_residents(organizations_of(bindparam("finess")), bindparam("now", type_=UtcDateTime()),
                                       among=bindparam("among", expanding=True)).subquery().c[0])
# Whether it sees one resident (a read: one resident's resource), on psycopg directly (``dui.direct_sql``). Not the
# list form with ``= ANY(array)``: deep in the union, PostgreSQL's plan for it read three times the buffers.
_SEEN_ONE = DirectQuery(select(granted_residents(organizations_of(bindparam("finess")),
                                                 bindparam("now", type_=UtcDateTime()),
                                                 among=bindparam("among")).subquery().c[0]))
# The rows of the Patients an establishment sees: the scope of a search of Patients (``Sight.keep``), and the one
# condition a prebuilt page statement carries for a scoped search (``dui.fhir.sql``; ``Sight.page_scope``).
_SEEN_PATIENT = resource.alias("seen_patient")
SEEN_PATIENT_ROWS = select(_SEEN_PATIENT.c.rid).where(
    _SEEN_PATIENT.c.res_type == "Patient", _SEEN_PATIENT.c.deleted == false(),
    _SEEN_PATIENT.c.res_id.in_(_SEEN)).correlate(None)


class Sight:
    """What one scoped actor sees during one unit of work: the residents of its establishment.

    In memory (``sees``, ``visible``, ``seen``): a resource's body, read by ``Residents.of``, against the grants of
    its residents, asked of the database for those residents only and remembered for the unit of work. In SQL
    (``keep``): the scope of a search, on the searched type and on every hop of its chains, ``_has`` and ``_list``,
    applied to the rows the other criteria kept, with the grants read once per statement. ``invalidate`` after a
    write that may change grants."""

    def __init__(self, scope: Scope, session: Session, residents: Residents,
                 flush: Callable[[], None] = lambda: None) -> None:
        self.scope = scope
        self.session = session
        self.residents = residents
        self.flush = flush  # the store's queued rows must be written before the grants are read
        self._known: dict[str, bool] = {}
        self._sql: CompoundSelect[Any] | None = None
        self._patients: Select[Any] | None = None
        self._organizations: set[str] | None = None

    def invalidate(self) -> None:
        self._known.clear()
        self._organizations = None

    # in memory

    def seen(self, patient_ids: Iterable[str]) -> set[str]:
        """Of these residents, those the establishment sees."""
        wanted = set(patient_ids)
        unknown = sorted(wanted - self._known.keys())
        if unknown:
            self.flush()
            params = {"finess": self.scope.finess, "now": self.scope.now}
            if len(unknown) == 1:
                found = {str(row[0]) for row in _SEEN_ONE.rows(self.session, {**params, "among": unknown[0]})}
            else:
                found = {str(i) for i in self.session.execute(_SEEN_AMONG, {**params, "among": unknown}).scalars()}
            self._known.update((pid, pid in found) for pid in unknown)
        return {pid for pid in wanted if self._known[pid]}

    def sees(self, rtype: str, content: dict[str, Any] | None) -> bool:
        """Whether a resource with this body is visible: directory data always; resident data when it belongs to
        at least one resident and every resident it belongs to is seen; a resource of ``OWNED_TYPES`` of no resident
        when the establishment owns it. A deleted version (no body) is not."""
        if not is_hidden(rtype):
            return True
        if content is None:
            return False
        return self.visible([(rtype, content)])[0]

    def visible(self, items: list[tuple[str, dict[str, Any] | None]]) -> list[bool]:
        """``sees`` for many (type, body) pairs at once: one query for all their residents."""
        owners = [self.residents.of(t, c) if is_hidden(t) and c is not None else set() for t, c in items]
        seen = self.seen(set().union(*owners))
        return [not is_hidden(t) or (c is not None and (found <= seen if found else self._owns(t, c)))
                for (t, c), found in zip(items, owners, strict=True)]

    def _owns(self, rtype: str, content: dict[str, Any]) -> bool:
        """Whether a resource of no resident is the establishment's own (``OWNED_TYPES``)."""
        if rtype not in OWNED_TYPES:
            return False
        named = self.residents.owners(rtype, content)
        return bool(named) and bool(named & self.organizations())

    def organizations(self) -> set[str]:
        """Ids of the establishment's Organizations (those carrying its FINESS)."""
        if self._organizations is None:
            self.flush()
            self._organizations = {str(i) for i in self.session.execute(organizations_of(self.scope.finess))
                                   .scalars()}
        return self._organizations

    # in SQL

    def _residents(self) -> CompoundSelect[Any]:
        if self._sql is None:
            self._sql = _SEEN.params(finess=self.scope.finess, now=self.scope.now)
        return self._sql

    def hides(self, rtype: str) -> bool:
        return is_hidden(rtype)

    def keep(self, rtype: str, candidates: Any) -> Select[Any]:
        """Of ``candidates`` (a subquery with a ``rid`` column of resources of ``rtype``, resident data), those the
        establishment sees: applied last, on the rows every other criterion kept, as a join of their compartment
        references grouped per row (the least of "this resident is seen" is 1: some resident, all seen), with the
        residents read once per statement. The work follows the rows the search keeps, not everything the actor
        sees."""
        if rtype == "Patient":
            if self._patients is None:
                self._patients = SEEN_PATIENT_ROWS.params(self.page_scope("Patient"))
            return select(candidates.c.rid).where(candidates.c.rid.in_(self._patients))
        if rtype not in compartment_params():  # never a resident's (Subscription): owned, or hidden
            return select(candidates.c.rid).where(candidates.c.rid.in_(self._owned(rtype)))
        ref = search_reference.alias()
        seen_resident = case((ref.c.target_id.in_(self._residents()), 1), else_=0)
        residents = (select(candidates.c.rid)
                     .join(ref, ref.c.rid == candidates.c.rid)
                     .where(ref.c.param.in_(compartment_params()[rtype]), ref.c.target_type == "Patient")
                     .group_by(candidates.c.rid)
                     .having(func.min(seen_resident) == 1))
        if rtype not in OWNED_TYPES:
            return residents
        # or of no resident, and owned by one of the establishment's Organizations
        anyone = search_reference.alias()
        owned = self._owned(rtype)
        of_nobody = ~exists().where(anyone.c.rid == candidates.c.rid, anyone.c.target_type == "Patient",
                                    anyone.c.param.in_(compartment_params()[rtype])).correlate(candidates)
        return select(candidates.c.rid).where(or_(candidates.c.rid.in_(residents.correlate(None)),
                                                  and_(candidates.c.rid.in_(owned), of_nobody)))

    def page_scope(self, rtype: str) -> dict[str, Any] | None:
        """For ``Patient``, the parameters of ``SEEN_PATIENT_ROWS``, the whole of ``keep`` on that type."""
        return {"finess": self.scope.finess, "now": self.scope.now} if rtype == "Patient" else None

    def _owned(self, rtype: str) -> Select[Any]:
        """Row ids of the resources of ``rtype`` (of ``OWNED_TYPES``) whose owner is one of the establishment's
        Organizations."""
        own = search_reference.alias()
        return select(own.c.rid).where(own.c.res_type == rtype, own.c.param == OWNED_TYPES[rtype],
                                       own.c.target_type == "Organization",
                                       own.c.target_id.in_(organizations_of(self.scope.finess))).correlate(None)
