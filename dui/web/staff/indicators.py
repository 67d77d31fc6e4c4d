"""``/api/indicators``: the direction's indicators of the caller's establishment over a month
(``dui.staff.indicators``; definitions in docs/staff-api.md, "Indicators")."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from marshmallow import Schema, fields, validate

from dui.staff import indicators
from dui.web.staff import problems
from dui.web.staff.edge import Answer, SchemaRefusal, Use, endpoint
from dui.web.staff.problems import Bilingual
from dui.web.staff.schemas import In

SHARE = {"description": "a share from 0 to 1; null when there is nothing to divide by"}


class IndicatorsQuery(In):
    month = fields.String(required=True, validate=validate.Regexp(r"^\d{4}-\d{2}$"),
                          metadata={"description": "YYYY-MM, a month that has begun (the current one: until now)"})


class GmpOut(Schema):
    value = fields.Float(allow_none=True, metadata={"description": "GIR moyen pondéré; null: nobody evaluated"})
    evaluated = fields.Integer(required=True)
    not_evaluated = fields.Integer(required=True, metadata={"description": "present, no evaluation: left out"})
    by_gir = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class PmpOut(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["recorded", "not recorded"]))
    value = fields.Float(allow_none=True)
    recorded = fields.Integer(required=True, metadata={"description": "residents present with PATHOS points"})


class FallsOut(Schema):
    count = fields.Integer(required=True)
    per_1000_resident_days = fields.Float(allow_none=True)


class TransfersOut(Schema):
    fludt = fields.Integer(required=True, metadata={"description": "FLUDT built in the month"})
    residents = fields.Integer(required=True)


class DluFreshnessOut(Schema):
    current = fields.Integer(required=True)
    stale = fields.Integer(required=True)
    missing = fields.Integer(required=True)
    freshness = fields.Float(allow_none=True, metadata=SHARE)


class DmpOut(Schema):
    dlu_built = fields.Integer(required=True)
    reached_dmp = fields.Integer(required=True)
    queued = fields.Integer(required=True)
    refused = fields.Integer(required=True)
    not_queued = fields.Integer(required=True)
    rate = fields.Float(allow_none=True, metadata=SHARE)


class IndicatorsOut(Schema):
    establishment = fields.String(required=True, metadata={"description": "FINESS"})
    name = fields.String(allow_none=True)
    month = fields.String(required=True)
    from_ = fields.String(required=True, data_key="from")
    until = fields.String(required=True)
    as_of = fields.String(required=True)
    complete = fields.Boolean(required=True, metadata={"description": "false: the month in progress, until now"})
    days = fields.Float(required=True)
    places = fields.Integer(required=True, metadata={"description": "rooms"})
    residents_present = fields.Integer(required=True)
    resident_days = fields.Float(required=True)
    occupancy = fields.Float(allow_none=True, metadata=SHARE)
    gmp = fields.Nested(GmpOut, required=True)
    pmp = fields.Nested(PmpOut, required=True)
    falls = fields.Nested(FallsOut, required=True)
    hospital_transfers = fields.Nested(TransfersOut, required=True)
    dlu = fields.Nested(DluFreshnessOut, required=True)
    dmp = fields.Nested(DmpOut, required=True)


@endpoint("GET", "/indicators", name="indicators", summary="The establishment's indicators over a month",
          tag="Indicators", query=IndicatorsQuery, answer=IndicatorsOut)
def read_indicators(use: Use) -> Answer:
    """Occupancy, GMP, PMP if recorded, falls per 1,000 resident-days, hospital transfers, DLU freshness and DMP
    feed rate of the caller's establishment, computed on the search index. The direction and the physicians only
    (403 otherwise)."""
    indicators.require_reader(use.actor)
    try:
        period = indicators.period_of(use.query["month"], use.now, ZoneInfo(use.settings.timezone))
    except indicators.BadMonth as exc:
        raise SchemaRefusal(problems.validation_problem({"month": [Bilingual(str(exc), exc.fr)]}, "query")) from None
    assert use.actor.establishment is not None  # the edge serves the staff of an establishment only
    return Answer(indicators.compute(use.session, use.actor.establishment, period, use.now))
