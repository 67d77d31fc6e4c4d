"""The staff API's payloads: one marshmallow schema per request body, query and answer.

Schemas check the shape and the limits of what a client sends (types, lengths, ranges, choices, unknown fields
refused); the rules that need the record (is the resident visible, did the weight move too much) are the use cases'
(``dui.staff``). The plausibility limits come from ``dui.staff.codes``, the one table of the measures. The
OpenAPI document (``dui.web.staff.openapi``) is generated from these classes.

This module holds what every schema shares (``In``, the text limits, paging) and the schemas of daily care: vital
signs, falls, transmissions, alerts, the residents. The other areas have theirs beside it: ``medication_schemas``,
``admission_schemas`` (and the projet personnalisé), ``document_schemas`` (documents and hospital transfers).
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from dui.staff import codes
from dui.staff.transmissions import SHIFTS
from dui.web.staff.problems import Bilingual

ID = validate.Regexp(r"^[A-Za-z0-9\-.]{1,64}$")
SERIAL = validate.Regexp(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no space
TEXT_SHORT = validate.Length(min=1, max=200)
TEXT_LONG = validate.Length(min=1, max=4000)
REASON_TEXT = validate.Length(min=1, max=500)  # why a dose was not given, a transfer, a rejection


class In(Schema):
    class Meta:
        unknown = RAISE


def _measure_field(measure: codes.Measure) -> fields.Field[Any]:
    limits = validate.Range(min=measure.low, max=measure.high)
    meta = {"description": f"{measure.display} ({measure.unit}, LOINC {measure.code}); plausible from {measure.low:g} "
                           f"to {measure.high:g}"}
    if measure.integer:
        return fields.Integer(validate=limits, strict=True, allow_none=True, metadata=meta)
    return fields.Float(validate=limits, allow_nan=False, allow_none=True, metadata=meta)


class PainIn(In):
    scale = fields.String(required=True, validate=validate.OneOf(sorted(codes.PAIN_SCALES)),
                          metadata={"description": "numeric (EN/EVA, 0-10), algoplus (0-5) or doloplus (0-30)"})
    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=30))

    @validates_schema
    def _score_in_scale(self, data: dict[str, Any], **_: Any) -> None:
        scale = codes.PAIN_SCALES.get(data.get("scale", ""))
        if scale is not None and data.get("score", 0) > scale[3]:
            raise ValidationError(Bilingual(f"The {data['scale']} scale goes from 0 to {scale[3]}",
                                            f"L'échelle {data['scale']} va de 0 à {scale[3]}"), "score")


class VitalSignsIn(In):
    effective = fields.AwareDateTime(allow_none=True, metadata={
        "description": "When the measures were taken (ISO 8601 with offset); default: now"})
    weight_kg = _measure_field(codes.MEASURES["weight_kg"])
    temperature_c = _measure_field(codes.MEASURES["temperature_c"])
    heart_rate = _measure_field(codes.MEASURES["heart_rate"])
    respiratory_rate = _measure_field(codes.MEASURES["respiratory_rate"])
    spo2_percent = _measure_field(codes.MEASURES["spo2_percent"])
    glucose_g_per_l = _measure_field(codes.MEASURES["glucose_g_per_l"])
    systolic = _measure_field(codes.SYSTOLIC)
    diastolic = _measure_field(codes.DIASTOLIC)
    pain = fields.Nested(PainIn, allow_none=True)

    @validates_schema
    def _measures(self, data: dict[str, Any], **_: Any) -> None:
        if not [k for k, v in data.items() if v is not None and k != "effective"]:
            raise ValidationError(Bilingual("Give at least one measure", "Indiquez au moins une mesure"))
        if (data.get("systolic") is None) != (data.get("diastolic") is None):
            raise ValidationError(Bilingual("Blood pressure takes both systolic and diastolic",
                                            "La tension se saisit avec la systolique et la diastolique"), "diastolic")
        if data.get("systolic") is not None and data["systolic"] <= data["diastolic"]:
            raise ValidationError(Bilingual("The systolic pressure must be above the diastolic",
                                            "La systolique doit être supérieure à la diastolique"), "systolic")


class FallIn(In):
    occurred_at = fields.AwareDateTime(allow_none=True, metadata={"description": "default: now"})
    place = fields.String(validate=TEXT_SHORT, allow_none=True, metadata={"description": "chambre, couloir..."})
    activity = fields.String(validate=TEXT_SHORT, allow_none=True,
                             metadata={"description": "what the resident was doing"})
    injury = fields.Boolean(allow_none=True)
    found_on_floor = fields.Boolean(allow_none=True)
    witnessed = fields.Boolean(allow_none=True)
    minutes_on_floor = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0, max=10080))
    note = fields.String(validate=TEXT_LONG, allow_none=True)


class TransmissionIn(In):
    target = fields.String(required=True, validate=validate.Length(min=1, max=100),
                           metadata={"description": "la cible: douleur, alimentation, chute..."})
    donnees = fields.String(validate=TEXT_LONG, allow_none=True)
    actions = fields.String(validate=TEXT_LONG, allow_none=True)
    resultats = fields.String(validate=TEXT_LONG, allow_none=True)

    @validates_schema
    def _written(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("donnees") or data.get("actions")):
            raise ValidationError(Bilingual("A transmission has données or actions",
                                            "Une transmission comporte des données ou des actions"), "donnees")


class ResultsIn(In):
    resultats = fields.String(required=True, validate=TEXT_LONG)


class DeviceEventIn(In):
    event_id = fields.String(required=True, validate=SERIAL,
                             metadata={"description": "the gateway's id of the event; a repeat is merged"})
    sensor = fields.String(required=True, validate=SERIAL,
                           metadata={"description": "serial number of the sensor (Device.identifier)"})
    kind = fields.String(required=True, validate=validate.OneOf(["fall"]))
    occurred_at = fields.AwareDateTime(allow_none=True)


class PageQuery(In):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(validate=validate.Length(min=1, max=512))


class ResidentsQuery(PageQuery):
    unit = fields.String(validate=ID, metadata={"description": "a unit (Location id): its residents only"})


class ShiftQuery(PageQuery):
    date = fields.Date(required=True)
    shift = fields.String(required=True, validate=validate.OneOf(sorted(SHIFTS)))
    resident = fields.String(validate=ID)


class AlertsQuery(In):
    unit = fields.String(validate=ID)


# -- answers ---------------------------------------------------------------------------------------------------

class Named(Schema):
    id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)


class FlagOut(Schema):
    id = fields.String(required=True)
    code = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    since = fields.String(allow_none=True)


class AttentionOut(Schema):
    flags = fields.List(fields.Nested(FlagOut), required=True)
    vitals_missing = fields.Boolean(required=True)
    last_vital_signs = fields.String(allow_none=True)
    dlu = fields.String(allow_none=True, metadata={"description": "current, stale or missing; null: not visible"})
    doses_due = fields.Integer(allow_none=True, metadata={
        "description": "doses of the current round not yet recorded; null: the caller may not read medications"})


class IdentityOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    family = fields.String(allow_none=True)
    given = fields.String(allow_none=True)
    birth_date = fields.String(allow_none=True)
    gender = fields.String(allow_none=True)
    identity_status = fields.String(required=True, validate=validate.OneOf(["PROV", "RECUP", "VALI", "QUAL"]),
                                    metadata={"description": "provisoire, récupérée, validée or qualifiée (RNIV)"})


class ResidentNowOut(IdentityOut):
    room = fields.Nested(Named, allow_none=True)
    unit = fields.Nested(Named, allow_none=True)
    attention = fields.Nested(AttentionOut, required=True)


class ResidentPage(Schema):
    items = fields.List(fields.Nested(ResidentNowOut), required=True)
    next_cursor = fields.String(allow_none=True)


class StayOut(Schema):
    id = fields.String(required=True)
    start = fields.String(allow_none=True)
    room = fields.Nested(Named, allow_none=True)


class TreatmentOut(Schema):
    medication = fields.String(allow_none=True)
    dosage = fields.String(allow_none=True)


class ResidentOut(IdentityOut):
    stay = fields.Nested(StayOut, allow_none=True)
    flags = fields.List(fields.Nested(FlagOut), required=True)
    vital_signs = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True)
    dlu = fields.String(allow_none=True)
    allergies = fields.List(fields.String(allow_none=True), metadata={"description": "absent: not readable"})
    conditions = fields.List(fields.String(allow_none=True),
                             metadata={"description": "absent when the actor may not read diagnoses"})
    treatments = fields.List(fields.Nested(TreatmentOut), metadata={"description": "absent: not readable"})


class WarningOut(Schema):
    field = fields.String(allow_none=True)
    code = fields.String(required=True)
    detail = fields.String(required=True)
    detail_fr = fields.String(required=True)


class RecordedOut(Schema):
    ids = fields.List(fields.String(), required=True, metadata={"description": "the Observations created"})
    warnings = fields.List(fields.Nested(WarningOut), required=True)


class TransmissionOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    resident_id = fields.String(required=True)
    target = fields.String(allow_none=True)
    sent = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    donnees = fields.String(allow_none=True)
    actions = fields.String(allow_none=True)
    resultats = fields.String(allow_none=True)


class TransmissionPage(Schema):
    items = fields.List(fields.Nested(TransmissionOut), required=True)
    next_cursor = fields.String(allow_none=True)


class AlertOut(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    state = fields.String(required=True, metadata={"description": "open or acknowledged"})
    escalated = fields.Boolean(required=True)
    resident_id = fields.String(allow_none=True, metadata={"description": "null: nobody stays in the room"})
    room = fields.Nested(Named, required=True)
    unit_id = fields.String(allow_none=True)
    sensor = fields.String(required=True)
    events = fields.Integer(required=True)
    raised_at = fields.String(required=True)
    last_event_at = fields.String(required=True)
    acknowledged_at = fields.String(allow_none=True)
    acknowledged_by = fields.String(allow_none=True)
    escalated_at = fields.String(allow_none=True)
    observation_id = fields.String(allow_none=True)
    flag_id = fields.String(allow_none=True)


class AlertList(Schema):
    items = fields.List(fields.Nested(AlertOut), required=True)


class ProblemItem(Schema):
    field = fields.String(allow_none=True)
    code = fields.String(allow_none=True)
    detail = fields.String(required=True)
    detail_fr = fields.String(allow_none=True)


class Problem(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.List(fields.Nested(ProblemItem), required=True)
