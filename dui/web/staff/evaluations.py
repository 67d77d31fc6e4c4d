"""``/api/residents/{id}/evaluations/aggir``: an AGGIR evaluation and its GIR (``dui.staff.evaluations``)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from marshmallow import Schema, fields, validate

from dui.staff import evaluations
from dui.web.staff import problems
from dui.web.staff.edge import Answer, SchemaRefusal, Use, endpoint
from dui.web.staff.problems import Bilingual
from dui.web.staff.schemas import TEXT_LONG, In


class AggirIn(In):
    gir = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=6),
                         metadata={"description": "the GIR of the AGGIR grid: 1 (the most dependent) to 6"})
    evaluated_on = fields.Date(required=True, metadata={"description": "the day of the evaluation (YYYY-MM-DD), "
                                                                       "not after today"})
    note = fields.String(validate=TEXT_LONG, allow_none=True)


class EvaluationOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    resident_id = fields.String(required=True)
    gir = fields.Integer(allow_none=True)
    code = fields.String(allow_none=True, metadata={"description": "terminologie-cisis: MED-339 (GIR 1) to MED-344"})
    evaluated_on = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    note = fields.String(allow_none=True)


@endpoint("POST", "/residents/<rid>/evaluations/aggir", name="record-aggir", summary="Record an AGGIR evaluation "
          "(GIR)", tag="Evaluations", body=AggirIn, answer=EvaluationOut, status=201, writes=True, etag=True)
def record_aggir(use: Use, rid: str) -> Answer:
    """By the physician or a nurse (403 otherwise). Stored as a TDDUI QuestionnaireResponse (questionnaire AGGIR
    PA, item resultat-eval coded in terminologie-cisis), which the GMP of the indicators reads."""
    if use.body["evaluated_on"] > use.now.astimezone(ZoneInfo(use.settings.timezone)).date():
        raise SchemaRefusal(problems.validation_problem({"evaluated_on": [Bilingual(
            "The evaluation cannot be dated after today", "L'évaluation ne peut pas être datée après aujourd'hui")]},
            "body"))
    response, version = evaluations.record_aggir(use.record, use.actor, rid, use.body["gir"],
                                                 use.body["evaluated_on"], use.body.get("note"))
    return Answer(evaluations.view(response, version), 201, etag=f'W/"{version}"')
