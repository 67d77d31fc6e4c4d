"""The direction's indicators: one establishment over one month, computed in SQL on the search index.

Stored resources are encrypted at rest; the search index (``dui.fhir.tables``) is what SQL can read. Every figure
below is a handful of SELECTs over the index rows (``search_reference``, ``search_token``, ``search_date``,
``search_quantity``) and ``resident_document``: no resource body is read, whatever the number of residents. The
index holds the current version of live resources only, so a deleted stay or fall counts for nothing.

**The establishment** is the FINESS: its Organizations are those carrying it (``dui.fhir.scope.organizations_of``).
**The month** runs from its first instant to the first instant of the next month in the establishment's time zone
(``DUI_TIMEZONE``); for the month in progress, it ends now (``until``). A month not begun is refused.

- **Stays**: the Encounters whose ``serviceProvider`` is one of the establishment's Organizations, status
  ``arrived``, ``in-progress``, ``onleave`` or ``finished``, that are part of no other Encounter (a TDDUI event is
  ``partOf`` its stay and is no stay itself), and whose period (as the index reads it: a date covers its whole day,
  an open end runs on) overlaps the month.
- **Residents present**: the residents (``Encounter.subject``) of those stays.
- **Resident-days**: the sum, over the stays, of the length of their period within the month, in days (a stay
  from the 1st without end in a 30-day month: 30). Stays of one resident are expected not to overlap.
- **Places**: the rooms, Locations of physical type ``ro`` (search parameter ``physical-type``) whose
  ``managingOrganization`` is one of the establishment's Organizations and whose status is not ``inactive``, as
  they are now. **Occupancy** = resident-days / (places x days of the month); none without places.
- **GMP** (GIR moyen pondéré): over the residents present, each one's latest AGGIR evaluation authored on or
  before the month's last day (``dui.staff.evaluations``; status completed or amended; the latest by ``authored``,
  then the last written), its GIR weighted 1000, 840, 660, 420, 250, 70 points for GIR 1 to 6; GMP = the sum of
  the points / the residents evaluated. A resident without an evaluation is left out of the GMP and counted as
  ``not_evaluated`` (counting her as any GIR would invent a figure).
- **PMP** (PATHOS moyen pondéré): only if recorded. A resident's PATHOS points are recorded as an Observation
  coded ``dui-observation#pathos-points`` (``dui.staff.codes.PATHOS_POINTS``) with ``valueQuantity`` the points
  and ``effectiveDateTime`` the day of the PATHOS survey. PMP = the mean of the latest points (on or before the
  month's last day) of the residents present who have some. With none: ``not recorded``, and no number.
- **Falls**: Observations coded SNOMED CT 1912002 (``dui.staff.codes.FALL``) of a resident present, effective in
  the month, not ``entered-in-error`` or ``cancelled``; **per 1,000 resident-days** = falls x 1000 / resident-days.
- **Hospital transfers**: the FLUDT (fiche de liaison d'urgence - transfert, ``dui.documents.operations.FLUDT``,
  tagged ``dui-document-origin#fludt``) built in the month for a resident present, not ``entered-in-error``; and
  how many residents they concern.
- **DLU freshness**: of the residents present, how many have a DLU that shows their record as it is now
  (``resident_document``: built, not stale), a stale one, or none. This is the state at the time of the report,
  not a history: the service keeps no past states of freshness.
- **DMP feed rate**: of the DLUs built in the month for residents present (``dui-document-origin#dlu``), the
  share that reached the DMP (``dui-dmp-state`` tag ``sent``, ``masked``, ``archived`` or ``deleted``:
  ``dui.documents.dmp_feed``); those ``queued``, ``refused`` and never queued are counted apart. None when no DLU
  was built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Float, and_, case, cast, distinct, exists, extract, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from dui.auth.actor import Actor
from dui.auth.roles import DIRECTION, MEDECIN
from dui.documents.dmp_feed import STATE_SYSTEM
from dui.documents.extract import BUILT_TAG_SYSTEM
from dui.documents.freshness import DLU
from dui.documents.tables import resident_document
from dui.errors import Forbidden
from dui.fhir.scope import FINESS_SYSTEM, organizations_of
from dui.fhir.sql import format_instant
from dui.fhir.tables import (
    UtcDateTime,
    resource,
    search_date,
    search_quantity,
    search_reference,
    search_string,
    search_token,
)
from dui.staff import codes

READERS = frozenset({DIRECTION, MEDECIN})
STAY_STATUSES = ("arrived", "in-progress", "onleave", "finished")
NOT_FACTS = ("entered-in-error", "cancelled")  # Observations that record nothing that happened
EVALUATION_STATUSES = ("completed", "amended")
ROOM = ("http://terminology.hl7.org/CodeSystem/location-physical-type", "ro")
REACHED_DMP = ("sent", "masked", "archived", "deleted")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class BadMonth(ValueError):
    """A month that is not ``YYYY-MM`` or has not begun; ``fr``: the same in French."""

    def __init__(self, en: str, fr: str) -> None:
        super().__init__(en)
        self.fr = fr


@dataclass(frozen=True)
class Period:
    """The month reported: ``start`` to ``until`` (the next month's first instant, or now), in UTC; ``days`` its
    length in days of the establishment's calendar (October is 31 days, though its clocks go back one hour)."""

    month: str
    start: datetime
    end: datetime  # the first instant of the next month
    until: datetime
    days: float

    def in_days(self, seconds: float) -> float:
        """A length in seconds within the period, in calendar days: each second weighs as much as the next."""
        return seconds * self.days / (self.until - self.start).total_seconds()


def period_of(text: str, now: datetime, tz: ZoneInfo) -> Period:
    """The period of month ``text`` (``YYYY-MM``) in time zone ``tz``; ``BadMonth`` for another text or a month
    that has not begun at ``now``."""
    found = _MONTH.fullmatch(text.strip())
    if found is None:
        raise BadMonth(f"{text[:20]!r} is not a month: write YYYY-MM, e.g. 2026-11",
                       f"{text[:20]!r} n'est pas un mois : écrivez AAAA-MM, par exemple 2026-11")
    year, month = int(found.group(1)), int(found.group(2))
    if not 1 <= month <= 12:
        raise BadMonth(f"{text} is not a month: the month goes from 01 to 12",
                       f"{text} n'est pas un mois : le mois va de 01 à 12")
    if year < 1900:
        raise BadMonth(f"{text}: no record goes back before 1900", f"{text} : aucun dossier ne remonte avant 1900")
    start = datetime(year, month, 1, tzinfo=tz).astimezone(UTC)
    if start >= now:  # before the next month is computed: there is none after 9999-12
        raise BadMonth(f"{text} has not begun", f"{text} n'a pas commencé")
    following = date(year + month // 12, month % 12 + 1, 1)
    end = datetime(following.year, following.month, 1, tzinfo=tz).astimezone(UTC)
    until = min(end, now)
    days = (until.astimezone(tz).replace(tzinfo=None) - start.astimezone(tz).replace(tzinfo=None)).total_seconds()
    return Period(f"{year:04d}-{month:02d}", start, end, until, days / 86400)


def require_reader(actor: Actor) -> None:
    """The direction and the physicians read the indicators; anyone else gets ``Forbidden``."""
    if not actor.roles & READERS:
        raise Forbidden("The indicators are read by the direction and the physicians")


def establishments(session: Session) -> list[str]:
    """The FINESS of the establishments that provide stays (what ``dui report`` may report on)."""
    org = resource.alias()
    finess = search_token.alias()
    provider = search_reference.alias()
    query = (select(finess.c.code).distinct()
             .join(org, org.c.rid == finess.c.rid)
             .where(finess.c.res_type == "Organization", finess.c.param == "identifier",
                    finess.c.system == FINESS_SYSTEM, finess.c.code.is_not(None),
                    org.c.res_id.in_(select(provider.c.target_id).where(
                        provider.c.res_type == "Encounter", provider.c.param == "service-provider",
                        provider.c.target_type == "Organization")))
             .order_by(finess.c.code))
    return [str(code) for code in session.execute(query).scalars()]


def compute(session: Session, finess: str, period: Period, now: datetime) -> dict[str, Any]:
    """The indicators of establishment ``finess`` over ``period`` (see the module's docstring)."""
    start, end, until = (literal(moment, UtcDateTime()) for moment in (period.start, period.end, period.until))
    orgs = organizations_of(finess)
    stays = _stays(orgs, start, until).subquery("stays")
    present = select(stays.c.patient)
    dialect = session.get_bind().dialect.name

    clipped_low = case((stays.c.low < start, start), else_=stays.c.low)
    clipped_high = case((stays.c.high > until, until), else_=stays.c.high)
    seconds, residents = session.execute(select(
        func.sum(_epoch(clipped_high, dialect) - _epoch(clipped_low, dialect)),
        func.count(distinct(stays.c.patient)))).one()
    exact_days = period.in_days(float(seconds or 0))
    resident_days = round(exact_days, 2)
    places = _places(session, orgs)
    by_gir = _girs(session, present, end)
    evaluated = sum(by_gir.values())
    pathos_total, pathos_count = _pathos(session, present, end)
    falls = _falls(session, present, start, until)
    transfers, transferred = _documents(session, present, start, until, "fludt")
    current, stale = _freshness(session, present)
    dmp = _dmp_states(session, present, start, until)
    built = sum(dmp.values())
    reached = sum(n for state, n in dmp.items() if state in REACHED_DMP)
    return {
        "establishment": finess, "name": _name(session, finess), "month": period.month,
        "from": format_instant(period.start), "until": format_instant(period.until), "as_of": format_instant(now),
        "complete": period.until == period.end, "days": round(period.days, 2),
        "places": places, "residents_present": residents, "resident_days": resident_days,
        "occupancy": _ratio(exact_days, places * period.days),
        "gmp": {"value": round(sum(codes.GIR_POINTS[g] * n for g, n in by_gir.items()) / evaluated, 1)
                if evaluated else None,
                "evaluated": evaluated, "not_evaluated": residents - evaluated,
                "by_gir": {str(g): by_gir.get(g, 0) for g in sorted(codes.GIR_POINTS)}},
        "pmp": {"status": "recorded" if pathos_count else "not recorded",
                "value": round(pathos_total / pathos_count, 1) if pathos_count else None,
                "recorded": pathos_count},
        "falls": {"count": falls, "per_1000_resident_days": _ratio(falls * 1000, exact_days, 2)},
        "hospital_transfers": {"fludt": transfers, "residents": transferred},
        "dlu": {"current": current, "stale": stale, "missing": residents - current - stale,
                "freshness": _ratio(current, residents)},
        "dmp": {"dlu_built": built, "reached_dmp": reached, "queued": dmp.get("queued", 0),
                "refused": dmp.get("refused", 0), "not_queued": dmp.get(None, 0), "rate": _ratio(reached, built)},
    }


def _name(session: Session, finess: str) -> str | None:
    """The establishment's name, as its Organization gives it."""
    org = resource.alias()
    name = search_string.alias()
    found = session.execute(select(name.c.exact).select_from(name).join(org, org.c.rid == name.c.rid)
                            .where(name.c.res_type == "Organization", name.c.param == "name",
                                   org.c.res_id.in_(organizations_of(finess)))
                            .order_by(name.c.exact).limit(1)).scalar()
    return str(found) if found is not None else None


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


def _epoch(moment: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """Seconds since 1970 of a UTC instant column, on PostgreSQL and on SQLite (naive UTC text)."""
    if dialect == "postgresql":
        return cast(extract("epoch", moment), Float)
    return (func.julianday(moment) - 2440587.5) * 86400.0


def _token(rtype: str, param: str) -> Any:
    alias = search_token.alias()
    return alias, [alias.c.res_type == rtype, alias.c.param == param]


def _with_status(rid: Any, rtype: str, *, among: tuple[str, ...] = (), besides: tuple[str, ...] = ()) -> Any:
    """``rid`` has a status among ``among`` / none of ``besides``."""
    status, where = _token(rtype, "status")
    if among:
        return rid.in_(select(status.c.rid).where(*where, status.c.code.in_(among)))
    return rid.not_in(select(status.c.rid).where(*where, status.c.code.in_(besides)))


def _resident_of(rtype: str, rid: Any, present: Any) -> Any:
    """Join condition: the resource ``rid`` belongs to a resident present (its ``patient`` reference)."""
    patient = search_reference.alias()
    return patient, and_(patient.c.rid == rid, patient.c.res_type == rtype, patient.c.param == "patient",
                         patient.c.target_type == "Patient", patient.c.target_id.in_(present))


def _stays(orgs: Any, start: Any, until: Any) -> Any:
    """(rid, patient, low, high) of the establishment's stays overlapping the period."""
    period = search_date.alias()
    provider = search_reference.alias()
    patient = search_reference.alias()
    part = search_reference.alias()
    return (select(period.c.rid, patient.c.target_id.label("patient"), period.c.low, period.c.high)
            .select_from(period)
            .join(provider, and_(provider.c.rid == period.c.rid, provider.c.res_type == "Encounter",
                                 provider.c.param == "service-provider", provider.c.target_type == "Organization",
                                 provider.c.target_id.in_(orgs)))
            .join(patient, and_(patient.c.rid == period.c.rid, patient.c.res_type == "Encounter",
                                patient.c.param == "patient", patient.c.target_type == "Patient"))
            .where(period.c.res_type == "Encounter", period.c.param == "date", period.c.low < until,
                   period.c.high > start, _with_status(period.c.rid, "Encounter", among=STAY_STATUSES),
                   ~exists().where(part.c.rid == period.c.rid, part.c.res_type == "Encounter",
                                   part.c.param == "part-of")))


def _places(session: Session, orgs: Any) -> int:
    kind, where = _token("Location", "physical-type")
    owner = search_reference.alias()
    query = (select(func.count(distinct(kind.c.rid)))
             .select_from(kind)
             .join(owner, and_(owner.c.rid == kind.c.rid, owner.c.res_type == "Location",
                               owner.c.param == "organization", owner.c.target_type == "Organization",
                               owner.c.target_id.in_(orgs)))
             .where(*where, kind.c.system == ROOM[0], kind.c.code == ROOM[1],
                    _with_status(kind.c.rid, "Location", besides=("inactive",))))
    return int(session.execute(query).scalar_one())


def _girs(session: Session, present: Any, end: Any) -> dict[int, int]:
    """GIR -> how many residents present have it as their latest evaluation's."""
    result, where = _token("QuestionnaireResponse", "evaluation-result")
    authored = search_date.alias()
    patient, joined = _resident_of("QuestionnaireResponse", result.c.rid, present)
    latest = (select(result.c.code, func.row_number().over(
                partition_by=patient.c.target_id, order_by=(authored.c.low.desc(), result.c.rid.desc())).label("n"))
              .select_from(result)
              .join(patient, joined)
              .join(authored, and_(authored.c.rid == result.c.rid, authored.c.res_type == "QuestionnaireResponse",
                                   authored.c.param == "authored", authored.c.low < end))
              .where(*where, result.c.system == codes.CISIS, result.c.code.in_(codes.GIR_CODES.values()),
                     _with_status(result.c.rid, "QuestionnaireResponse", among=EVALUATION_STATUSES))
              .subquery())
    level = {code: gir for gir, code in codes.GIR_CODES.items()}
    rows = session.execute(select(latest.c.code, func.count()).where(latest.c.n == 1).group_by(latest.c.code))
    return {level[code]: int(n) for code, n in rows}


def _pathos(session: Session, present: Any, end: Any) -> tuple[float, int]:
    """The sum and number of the latest PATHOS points of the residents present who have some."""
    system, code, _ = codes.PATHOS_POINTS
    coded, where = _token("Observation", "code")
    value = search_quantity.alias()
    when = search_date.alias()
    patient, joined = _resident_of("Observation", coded.c.rid, present)
    latest = (select(value.c.value, func.row_number().over(
                partition_by=patient.c.target_id, order_by=(when.c.low.desc(), coded.c.rid.desc())).label("n"))
              .select_from(coded)
              .join(patient, joined)
              .join(value, and_(value.c.rid == coded.c.rid, value.c.res_type == "Observation",
                                value.c.param == "value-quantity"))
              .join(when, and_(when.c.rid == coded.c.rid, when.c.res_type == "Observation", when.c.param == "date",
                               when.c.low < end))
              .where(*where, coded.c.system == system, coded.c.code == code,
                     _with_status(coded.c.rid, "Observation", besides=NOT_FACTS))
              .subquery())
    total, count = session.execute(select(func.sum(latest.c.value), func.count()).where(latest.c.n == 1)).one()
    return float(total or 0), int(count)


def _falls(session: Session, present: Any, start: Any, until: Any) -> int:
    system, code, _ = codes.FALL
    coded, where = _token("Observation", "code")
    when = search_date.alias()
    patient, joined = _resident_of("Observation", coded.c.rid, present)
    query = (select(func.count(distinct(coded.c.rid)))
             .select_from(coded)
             .join(patient, joined)
             .join(when, and_(when.c.rid == coded.c.rid, when.c.res_type == "Observation", when.c.param == "date",
                              when.c.low >= start, when.c.low < until))
             .where(*where, coded.c.system == system, coded.c.code == code,
                    _with_status(coded.c.rid, "Observation", besides=NOT_FACTS)))
    return int(session.execute(query).scalar_one())


def _built(kind: str, present: Any, start: Any, until: Any) -> tuple[Any, Any]:
    """The documents of ``kind`` (``dlu``, ``fludt``) built in the period for residents present: the tag row and its
    patient reference."""
    tag, where = _token("DocumentReference", "_tag")
    when = search_date.alias()
    patient, joined = _resident_of("DocumentReference", tag.c.rid, present)
    query = (select(tag.c.rid, patient.c.target_id.label("patient"))
             .select_from(tag)
             .join(patient, joined)
             .join(when, and_(when.c.rid == tag.c.rid, when.c.res_type == "DocumentReference", when.c.param == "date",
                              when.c.low >= start, when.c.low < until))
             .where(*where, tag.c.system == BUILT_TAG_SYSTEM, tag.c.code == kind,
                    _with_status(tag.c.rid, "DocumentReference", besides=("entered-in-error",))))
    return query, patient


def _documents(session: Session, present: Any, start: Any, until: Any, kind: str) -> tuple[int, int]:
    """How many documents of ``kind`` were built in the period, and for how many residents."""
    built = _built(kind, present, start, until)[0].subquery()
    documents, residents = session.execute(select(func.count(distinct(built.c.rid)),
                                                  func.count(distinct(built.c.patient)))).one()
    return int(documents), int(residents)


def _dmp_states(session: Session, present: Any, start: Any, until: Any) -> dict[str | None, int]:
    """DMP state (None: never queued) -> how many DLUs built in the period are in it."""
    built = _built("dlu", present, start, until)[0].subquery()
    state, where = _token("DocumentReference", "_tag")
    query = (select(state.c.code, func.count(distinct(built.c.rid)))
             .select_from(built)
             .outerjoin(state, and_(state.c.rid == built.c.rid, *where, state.c.system == STATE_SYSTEM))
             .group_by(state.c.code))
    return {code: int(n) for code, n in session.execute(query)}


def _freshness(session: Session, present: Any) -> tuple[int, int]:
    """Of the residents present: how many have a current DLU, how many a stale one."""
    row = resident_document.c
    built = row.docref_id.is_not(None)
    current, stale = session.execute(select(
        func.coalesce(func.sum(case((and_(built, row.stale_since.is_(None)), 1), else_=0)), 0),
        func.coalesce(func.sum(case((and_(built, row.stale_since.is_not(None)), 1), else_=0)), 0))
        .where(row.kind == DLU, row.patient_id.in_(present))).one()
    return int(current), int(stale)
