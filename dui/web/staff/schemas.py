"""The staff API's payloads: one marshmallow schema per request body, query and answer.

Schemas check the shape and the limits of what a client sends (types, lengths, ranges, choices, unknown fields
refused); the rules that need the record (is the resident visible, did the weight move too much) are the use cases'
(``dui.staff``). The plausibility limits come from ``dui.staff.codes``, the one table of the measures. The
OpenAPI document (``dui.web.staff.openapi``) is generated from these classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from dui.auth.finess import luhn_key
from dui.errors import DuiError
from dui.messaging import sending
from dui.staff import codes, medications
from dui.staff.projet import ACHIEVEMENTS
from dui.staff.transmissions import SHIFTS
from dui.web.staff.problems import Bilingual

ID = validate.Regexp(r"^[A-Za-z0-9\-.]{1,64}$")
SERIAL = validate.Regexp(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no space
TEXT_SHORT = validate.Length(min=1, max=200)
TEXT_LONG = validate.Length(min=1, max=4000)


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


# -- medications ---------------------------------------------------------------------------------------------------

ATC_CODE = validate.Regexp(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
ROUND_NAMES = validate.OneOf(list(medications.ROUNDS))
REASON_TEXT = validate.Length(min=1, max=500)


def _dose_quantity(value: float) -> None:
    if not 0 < value <= 10000:
        raise ValidationError(Bilingual("A dose is more than 0 and at most 10000", "Une dose est supérieure à 0 et "
                                        "d'au plus 10000"))


class MedicationIn(In):
    atc = fields.String(validate=ATC_CODE, allow_none=True,
                        metadata={"description": "WHO ATC code (B01AF01); none for a drug written as free text"})
    label = fields.String(required=True, validate=TEXT_SHORT, metadata={"description": "Xarelto 15 mg comprimé"})


class DoseIn(In):
    round = fields.String(required=True, validate=ROUND_NAMES, metadata={
        "description": "matin (08:00), midi (12:00), soir (18:00) or coucher (21:00)"})
    quantity = fields.Float(required=True, allow_nan=False, validate=_dose_quantity)
    unit = fields.String(required=True, validate=validate.OneOf(list(medications.UNITS)))


class PrescriptionIn(In):
    medication = fields.Nested(MedicationIn, required=True)
    text = fields.String(required=True, validate=TEXT_LONG,
                         metadata={"description": "the prescription as the médecin writes it, kept as written"})
    doses = fields.List(fields.Nested(DoseIn), required=True, validate=validate.Length(min=1, max=len(
        medications.ROUNDS)), metadata={"description": "one dose per round it is given at"})
    as_needed = fields.Boolean(load_default=False, metadata={"description": "si besoin: offered, not due"})
    as_needed_reason = fields.String(validate=TEXT_SHORT, allow_none=True,
                                     metadata={"description": "the condition of an as-needed dose: si douleur"})
    start = fields.Date(allow_none=True, metadata={"description": "default: today"})
    end = fields.Date(allow_none=True, metadata={"description": "the last day (included); none: until stopped"})

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        rounds = [d["round"] for d in data.get("doses") or []]
        if len(set(rounds)) != len(rounds):
            raise ValidationError(Bilingual("One dose per round", "Une seule dose par tour"), "doses")
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError(Bilingual("The end date comes before the start date",
                                            "La date de fin précède la date de début"), "end")
        if data.get("as_needed_reason") and not data.get("as_needed"):
            raise ValidationError(Bilingual("A condition is for an as-needed prescription (as_needed: true)",
                                            "Une condition ne se donne que pour un « si besoin » (as_needed: true)"),
                                  "as_needed_reason")


class StopIn(In):
    reason = fields.String(validate=REASON_TEXT, allow_none=True, metadata={"description": "why it is stopped"})


class RoundQuery(In):
    date = fields.Date(required=True)
    round = fields.String(required=True, validate=ROUND_NAMES)
    unit = fields.String(validate=ID, metadata={"description": "a unit (Location id): its residents only"})


class ReasonIn(In):
    code = fields.String(required=True, validate=validate.OneOf(list(medications.NOT_GIVEN_REASONS)), metadata={
        "description": "; ".join(f"{k}: {v}" for k, v in medications.NOT_GIVEN_REASONS.items())})
    text = fields.String(validate=REASON_TEXT, allow_none=True, metadata={"description": "in the nurse's words"})

    @validates_schema
    def _said(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("code") == "autre" and not data.get("text"):
            raise ValidationError(Bilingual("Say what the other reason is", "Précisez l'autre raison"), "text")


class AdministrationIn(In):
    prescription_id = fields.String(required=True, validate=ID)
    date = fields.Date(required=True, metadata={"description": "the date of the round"})
    round = fields.String(required=True, validate=ROUND_NAMES)
    outcome = fields.String(required=True, validate=validate.OneOf(["given", "refused", "not-given"]))
    reason = fields.Nested(ReasonIn, allow_none=True, metadata={
        "description": "not-given: required; refused: optional, its code is refus; given: none"})
    note = fields.String(validate=TEXT_LONG, allow_none=True)

    @validates_schema
    def _reason(self, data: dict[str, Any], **_: Any) -> None:
        outcome, reason = data.get("outcome"), data.get("reason")
        if outcome == "given" and reason is not None:
            raise ValidationError(Bilingual("A dose given has no reason", "Une prise donnée n'a pas de motif"),
                                  "reason")
        if outcome == "not-given" and reason is None:
            raise ValidationError(Bilingual("Give the reason the dose was not given",
                                            "Indiquez pourquoi la prise n'a pas été donnée"), "reason")
        if outcome == "not-given" and reason is not None and reason["code"] == medications.REFUSED:
            raise ValidationError({"reason": {"code": [Bilingual(
                "A refusal is recorded with the outcome refused",
                "Un refus s'enregistre avec le résultat « refused »")]}})
        if outcome == "refused" and reason is not None and reason["code"] != medications.REFUSED:
            raise ValidationError({"reason": {"code": [Bilingual(
                "The reason of a refusal is refus; a dose not given for another reason is not-given",
                "Le motif d'un refus est « refus » ; une prise non donnée pour une autre raison est « not-given »")]}})


class MedicationOut(Schema):
    atc = fields.String(allow_none=True)
    label = fields.String(allow_none=True)


class DoseOut(Schema):
    round = fields.String(required=True)
    time = fields.String(required=True, metadata={"description": "the establishment's time of the round"})
    quantity = fields.Float(required=True)
    unit = fields.String(required=True)


class PrescriptionOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    resident_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "active, stopped..."})
    medication = fields.Nested(MedicationOut, required=True)
    text = fields.String(allow_none=True)
    doses = fields.List(fields.Nested(DoseOut), required=True)
    as_needed = fields.Boolean(required=True)
    as_needed_reason = fields.String(allow_none=True)
    start = fields.String(allow_none=True)
    end = fields.String(allow_none=True, metadata={"description": "the last day, or the instant it was stopped"})
    high_risk = fields.Boolean(required=True, metadata={"description": "a médicament à risque: doses double-checked"})
    high_risk_class = fields.String(allow_none=True)
    prescriber = fields.String(allow_none=True)
    authored_on = fields.String(allow_none=True)


class PrescriptionList(Schema):
    items = fields.List(fields.Nested(PrescriptionOut), required=True)


class ReasonOut(Schema):
    code = fields.String(allow_none=True)
    text = fields.String(allow_none=True)


class AdministrationOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    prescription_id = fields.String(required=True)
    resident_id = fields.String(required=True)
    date = fields.String(allow_none=True)
    round = fields.String(allow_none=True)
    state = fields.String(required=True, metadata={"description": "given, awaiting-check, refused or not-given"})
    status = fields.String(allow_none=True, metadata={"description": "MedicationAdministration.status"})
    reason = fields.Nested(ReasonOut, allow_none=True)
    quantity = fields.Float(allow_none=True)
    unit = fields.String(allow_none=True)
    recorded_by = fields.String(allow_none=True)
    recorded_at = fields.String(allow_none=True)
    checked_by = fields.String(allow_none=True, metadata={"description": "the second nurse of a double-check"})
    checked_at = fields.String(allow_none=True)
    note = fields.String(allow_none=True)


class PlannedDoseOut(Schema):
    prescription_id = fields.String(required=True)
    prescription_status = fields.String(required=True)
    medication = fields.String(allow_none=True)
    atc = fields.String(allow_none=True)
    text = fields.String(allow_none=True, metadata={"description": "the prescription as written"})
    quantity = fields.Float(required=True)
    unit = fields.String(required=True)
    as_needed = fields.Boolean(required=True)
    high_risk = fields.Boolean(required=True)
    high_risk_class = fields.String(allow_none=True)
    state = fields.String(required=True, metadata={
        "description": "pending, awaiting-check (a médicament à risque given, not double-checked yet), given, "
                       "refused or not-given"})
    administration_id = fields.String(allow_none=True)
    reason = fields.Nested(ReasonOut, allow_none=True)
    recorded_by = fields.String(allow_none=True)
    recorded_at = fields.String(allow_none=True)
    double_check = fields.String(allow_none=True, metadata={
        "description": "pending or done; null: none needed (not a médicament à risque, or not given)"})
    checked_by = fields.String(allow_none=True)


class UnscheduledOut(Schema):
    prescription_id = fields.String(required=True)
    medication = fields.String(allow_none=True)
    text = fields.String(allow_none=True)


class RoundResidentOut(Schema):
    id = fields.String(required=True)
    family = fields.String(allow_none=True)
    given = fields.String(allow_none=True)
    room = fields.Nested(Named, allow_none=True)
    doses = fields.List(fields.Nested(PlannedDoseOut), required=True)
    unscheduled = fields.List(fields.Nested(UnscheduledOut), required=True, metadata={
        "description": "active prescriptions without rounds (free text only): read their text"})


class RoundPlanOut(Schema):
    date = fields.String(required=True)
    round = fields.String(required=True)
    time = fields.String(required=True)
    items = fields.List(fields.Nested(RoundResidentOut), required=True)


# -- admission and projet --------------------------------------------------------------------------------------

NAME = validate.Length(min=1, max=100)


def _matching(pattern: str, en: str, fr: str) -> Callable[[str], None]:
    """A validator refusing, in English and French, a string that does not match ``pattern``."""
    compiled = re.compile(pattern)

    def check(value: str) -> None:
        if not compiled.fullmatch(value):
            raise ValidationError(Bilingual(en, fr))

    return check


COG = _matching(r"[0-9]{5}|2[AB][0-9]{3}", "An INSEE COG code: 5 characters (2A/2B for Corsica, 99xxx for a "
                "country)", "Un code COG de l'INSEE : 5 caractères (2A/2B pour la Corse, 99xxx pour un pays)")
PHONE = _matching(r"\+?[0-9 .\-()]{6,25}", "A phone number: digits, spaces, dots, dashes",
                  "Un numéro de téléphone : chiffres, espaces, points, tirets")


class AdmissionIdentityIn(In):
    birth_family = fields.String(required=True, validate=NAME, metadata={"description": "nom de naissance"})
    birth_given_names = fields.List(fields.String(validate=NAME), required=True,
                                    validate=validate.Length(min=1, max=10), metadata={
                                        "description": "prénoms de naissance, in the order of the civil status"})
    birth_date = fields.Date(required=True)
    gender = fields.String(required=True, validate=validate.OneOf(["female", "male", "unknown"]))
    birth_place = fields.String(validate=COG, allow_none=True, metadata={
        "description": "INSEE COG code of the birth commune (99xxx: the country)"})
    used_family = fields.String(validate=NAME, allow_none=True, metadata={"description": "nom d'usage"})
    used_given = fields.String(validate=NAME, allow_none=True, metadata={"description": "prénom utilisé"})
    local_id = fields.String(validate=ID, allow_none=True, metadata={
        "description": "the establishment's own number of the resident (default: one is made)"})


class AdmissionStayIn(In):
    start = fields.Date(required=True, metadata={"description": "the day of arrival"})
    room = fields.String(required=True, validate=ID, metadata={"description": "a room (Location id) of the "
                                                                              "establishment, free"})
    kind = fields.String(validate=TEXT_SHORT, allow_none=True, metadata={
        "description": "default: Hébergement permanent en EHPAD"})
    entry_mode = fields.String(validate=TEXT_SHORT, allow_none=True, metadata={
        "description": "mode d'entrée (from home, from hospital...)"})


def _rpps(value: str) -> None:
    if not (len(value) == 11 and value.isdigit()) or luhn_key(value[:10]) != value[10]:
        raise ValidationError(Bilingual("An RPPS number is 11 digits with its key", "Un numéro RPPS compte 11 "
                                        "chiffres, clé comprise"))


class GeneralPractitionerIn(In):
    id = fields.String(validate=ID, allow_none=True, metadata={"description": "a Practitioner of the record"})
    family = fields.String(validate=NAME, allow_none=True)
    given = fields.String(validate=NAME, allow_none=True)
    rpps = fields.String(validate=_rpps, allow_none=True, metadata={
        "description": "a Practitioner carrying it is reused"})
    phone = fields.String(validate=PHONE, allow_none=True)

    @validates_schema
    def _one_way(self, data: dict[str, Any], **_: Any) -> None:
        named = [k for k in ("family", "given", "rpps", "phone") if data.get(k)]
        if data.get("id") and named:
            raise ValidationError(Bilingual("Give either the id of a Practitioner, or the name and RPPS of a new "
                                            "one", "Indiquez l'id d'un Practitioner, ou le nom et le RPPS d'un "
                                            "nouveau"), "id")
        if not data.get("id") and not data.get("family"):
            raise ValidationError(Bilingual("Give the id of a Practitioner, or the family name of a new one",
                                            "Indiquez l'id d'un Practitioner, ou le nom d'un nouveau"), "family")


class TrustedPersonIn(In):
    family = fields.String(required=True, validate=NAME)
    given = fields.String(validate=NAME, allow_none=True)
    phone = fields.String(validate=PHONE, allow_none=True)
    relationship = fields.String(validate=TEXT_SHORT, allow_none=True, metadata={"description": "fille, neveu..."})


class DmpIn(In):
    informed = fields.Boolean(required=True, metadata={"description": "the information about the DMP was given"})
    informed_on = fields.Date(allow_none=True, metadata={"description": "default: today"})
    opposed = fields.Boolean(load_default=False, metadata={"description": "the resident opposes feeding her DMP"})
    opposition_reason = fields.String(validate=TEXT_SHORT, allow_none=True)

    @validates_schema
    def _reasoned(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("opposed") and not data.get("opposition_reason"):
            raise ValidationError(Bilingual("An opposition states its reason", "Une opposition indique son motif"),
                                  "opposition_reason")
        if data.get("opposition_reason") and not data.get("opposed"):
            raise ValidationError(Bilingual("A reason goes with an opposition (opposed: true)",
                                            "Un motif accompagne une opposition (opposed : true)"),
                                  "opposition_reason")
        if data.get("informed_on") and not data.get("informed"):
            raise ValidationError(Bilingual("informed_on goes with informed: true",
                                            "informed_on accompagne informed : true"), "informed_on")


class AdmissionIn(In):
    identity = fields.Nested(AdmissionIdentityIn, required=True)
    insi = fields.Boolean(load_default=True, metadata={"description": "retrieve the INS through INSi (default)"})
    confirm_new = fields.Boolean(load_default=False, metadata={
        "description": "admit although a probable duplicate was answered (staff checked: another person)"})
    stay = fields.Nested(AdmissionStayIn, required=True)
    general_practitioner = fields.Nested(GeneralPractitionerIn, allow_none=True, metadata={
        "description": "médecin traitant"})
    trusted_person = fields.Nested(TrustedPersonIn, allow_none=True, metadata={"description": "personne de confiance"})
    dmp = fields.Nested(DmpIn, allow_none=True)


class DischargeIn(In):
    date = fields.Date(required=True)
    destination = fields.String(required=True, validate=TEXT_SHORT, metadata={
        "description": "mode de sortie / destination: domicile, autre EHPAD..."})


class DeathIn(In):
    deceased_at = fields.AwareDateTime(required=True)


class GoalIn(In):
    description = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    target_date = fields.Date(allow_none=True)


class ProjetIn(In):
    title = fields.String(validate=TEXT_SHORT, allow_none=True)
    goals = fields.List(fields.Nested(GoalIn), required=True, validate=validate.Length(min=1, max=20))


class GoalStatusIn(In):
    goal_id = fields.String(required=True, validate=ID)
    status = fields.String(required=True, validate=validate.OneOf(ACHIEVEMENTS))


class ReviewIn(In):
    date = fields.Date(required=True)
    text = fields.String(required=True, validate=TEXT_LONG)
    goals = fields.List(fields.Nested(GoalStatusIn), load_default=list, validate=validate.Length(max=50))
    next_review = fields.Date(allow_none=True)

    @validates_schema
    def _after(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("next_review") and data.get("date") and data["next_review"] <= data["date"]:
            raise ValidationError(Bilingual("The next review comes after this one", "Le prochain bilan suit "
                                            "celui-ci"), "next_review")
        ids = [g["goal_id"] for g in data.get("goals") or []]
        if len(ids) != len(set(ids)):
            raise ValidationError(Bilingual("A goal appears twice", "Un objectif figure deux fois"), "goals")


class InsiOut(Schema):
    requested = fields.Boolean(required=True)
    result = fields.String(allow_none=True, metadata={
        "description": "00 found, 01 none, 02 several, unavailable (retry Patient/$ins-fetch later)"})
    message = fields.String(allow_none=True)
    message_fr = fields.String(allow_none=True)


class DuplicateOut(Schema):
    id = fields.String(required=True)
    grade = fields.String(allow_none=True, metadata={"description": "certain, probable or possible"})
    score = fields.Float(allow_none=True)
    family = fields.String(allow_none=True)
    given = fields.String(allow_none=True)
    birth_date = fields.String(allow_none=True)


class StayEndOut(Schema):
    id = fields.String(required=True)
    status = fields.String(allow_none=True)
    start = fields.String(allow_none=True)
    end = fields.String(allow_none=True)
    exit_mode = fields.String(allow_none=True)
    room = fields.Nested(Named, allow_none=True)


class AdmissionOut(Schema):
    resident = fields.Nested(IdentityOut, required=True)
    stay = fields.Nested(StayEndOut, required=True)
    insi = fields.Nested(InsiOut, required=True)
    duplicates = fields.List(fields.Nested(DuplicateOut), required=True, metadata={
        "description": "records that may be the same person (RNIV): check them"})
    created = fields.Dict(keys=fields.String(), values=fields.String(), required=True, metadata={
        "description": "patient, stay, gp, trusted, informed, opposed -> Type/id"})


class StayEndedOut(Schema):
    resident_id = fields.String(required=True)
    stay = fields.Nested(StayEndOut, allow_none=True)
    deceased_at = fields.String(allow_none=True)


class GoalOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    title = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    target_date = fields.String(allow_none=True)
    lifecycle_status = fields.String(allow_none=True)
    achievement_status = fields.String(allow_none=True)
    status_date = fields.String(allow_none=True)


class ReviewOut(Schema):
    id = fields.String(required=True)
    date = fields.String(allow_none=True)
    text = fields.String(allow_none=True)
    next_review = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    recorded = fields.String(allow_none=True)


class ProjetOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    title = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    created = fields.String(allow_none=True)
    goals = fields.List(fields.Nested(GoalOut), required=True)
    reviews = fields.List(fields.Nested(ReviewOut), required=True)


# -- transfers and documents ---------------------------------------------------------------------------------------

ITEMS_TEXT = validate.Length(min=1, max=200)


def _mssante_address(value: str) -> None:
    try:
        address = sending.normalized_address(value)
    except DuiError:
        raise ValidationError(Bilingual("Not an e-mail address (name@domain)",
                                        "Adresse de messagerie invalide (nom@domaine)")) from None
    if sending.is_patient_mailbox(address):
        raise ValidationError(Bilingual("A patient's own mailbox (@patient.mssante.fr) is not a hospital's address",
                                        "Une boîte aux lettres de patient (@patient.mssante.fr) n'est pas l'adresse "
                                        "d'un hôpital"))


class HospitalIn(In):
    name = fields.String(validate=TEXT_SHORT, allow_none=True,
                         metadata={"description": "the hospital and its department: CH de Villefranche, urgences"})
    mssante = fields.String(validate=[validate.Length(max=254), _mssante_address], allow_none=True, metadata={
        "description": "the hospital's MSSanté address (an organisational mailbox): the FLUDT and the DLU go there"})

    @validates_schema
    def _named(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("name") or data.get("mssante")):
            raise ValidationError(Bilingual("Name the hospital, or give its MSSanté address",
                                            "Indiquez l'hôpital ou son adresse MSSanté"), "name")


class TransferIn(In):
    hospital = fields.Nested(HospitalIn, required=True)
    reason = fields.String(required=True, validate=REASON_TEXT, metadata={"description": "le motif du transfert"})
    departed_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "when she left (ISO 8601 with offset); default: now; not in the future"})
    note = fields.String(validate=TEXT_LONG, allow_none=True, metadata={"description": "the nurse's comment (FLUDT)"})
    last_meal = fields.String(validate=TEXT_SHORT, allow_none=True, metadata={"description": "dernier repas"})
    devices = fields.List(fields.String(validate=ITEMS_TEXT), validate=validate.Length(max=20), load_default=list,
                          metadata={"description": "dispositifs, prothèses she leaves with (lunettes...)"})
    belongings = fields.List(fields.String(validate=ITEMS_TEXT), validate=validate.Length(max=20), load_default=list,
                             metadata={"description": "objets personnels she leaves with"})


class ReturnIn(In):
    returned_at = fields.AwareDateTime(allow_none=True, metadata={
        "description": "when she came back (ISO 8601 with offset); default: now"})
    fludr = fields.String(validate=ID, allow_none=True, metadata={
        "description": "the FLUDR the hospital sent back (a DocumentReference id, filed through MSSanté or dui "
                       "documents import); null or absent: none came back"})


class DluIn(In):
    force = fields.Boolean(load_default=False, metadata={
        "description": "a new version even when the record has not changed (who may write documents only)"})


class AssignIn(In):
    resident_id = fields.String(required=True, validate=ID, metadata={"description": "the resident to file it on"})


class RejectIn(In):
    reason = fields.String(required=True, validate=REASON_TEXT, metadata={
        "description": "why, in one line, without health data"})


class SendingOut(Schema):
    address = fields.String(required=True)
    state = fields.String(required=True, metadata={"description": "queued, sent, processed, error or refused"})
    when = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)


class DocumentOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={"description": "DLU, FLUDT, FLUDR, N1 (a PDF attached) or other"})
    type = fields.String(allow_none=True, metadata={"description": "the LOINC code of the document"})
    title = fields.String(allow_none=True)
    date = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    status = fields.String(allow_none=True, metadata={"description": "current, superseded (a DLU replaced)..."})
    outdated = fields.Boolean(required=True, metadata={
        "description": "the record changed since it was built (a new DLU is on its way)"})
    dmp = fields.String(allow_none=True, metadata={
        "description": "queued, sent, masked, archived, deleted or refused; null: not sent to the DMP"})
    pdf = fields.String(allow_none=True, metadata={"description": "where to get its PDF; null: it has none"})
    sendings = fields.List(fields.Nested(SendingOut), required=True, metadata={"description": "MSSanté, by address"})


class DocumentPage(Schema):
    items = fields.List(fields.Nested(DocumentOut), required=True)
    next_cursor = fields.String(allow_none=True)


class DluOut(Schema):
    built = fields.Boolean(required=True, metadata={
        "description": "true: a new DLU was built now; false: the one in force shows the record as it is"})
    document = fields.Nested(DocumentOut, required=True)


class DeliveryOut(Schema):
    state = fields.String(required=True, metadata={
        "description": "queued (an outbox job), sent, processed, error, refused; not-configured (MSSanté settings "
                       "unset), not-permitted (the caller's role may not send documents out), no-address, not-sent"})
    job = fields.Integer(allow_none=True, metadata={"description": "the outbox job (dui outbox show)"})
    job_state = fields.String(allow_none=True)
    detail = fields.String(allow_none=True)


class TransferDocumentOut(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    pdf = fields.String(required=True)
    mssante = fields.Nested(DeliveryOut, required=True)


class HospitalOut(Schema):
    name = fields.String(allow_none=True)
    mssante = fields.String(allow_none=True)


class FludrOut(Schema):
    id = fields.String(required=True)
    items = fields.Integer(allow_none=True, metadata={
        "description": "resources of the record read from it (exit diagnoses, treatments, devices)"})


class TransferOut(Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True)
    resident_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "in-progress (at the hospital) or completed"})
    hospital = fields.Nested(HospitalOut, required=True)
    reason = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    departed_at = fields.String(allow_none=True)
    returned_at = fields.String(allow_none=True)
    stay_id = fields.String(allow_none=True)
    documents = fields.List(fields.Nested(TransferDocumentOut), required=True)
    mssante = fields.String(required=True, metadata={"description": "the documents' common MSSanté state, or mixed"})
    fludr = fields.Nested(FludrOut, allow_none=True)


class TransferPage(Schema):
    items = fields.List(fields.Nested(TransferOut), required=True)
    next_cursor = fields.String(allow_none=True)


class InboxItemOut(Schema):
    id = fields.String(required=True, metadata={"description": "the number in the queue (dui mssante inbox list)"})
    task_id = fields.String(required=True)
    received_at = fields.String(allow_none=True)
    sender_domain = fields.String(allow_none=True)
    code = fields.String(allow_none=True, metadata={
        "description": "MSSanté integration code: 902 INS unknown, 903 INS missing, 904 identity vigilance, 905 INS "
                       "malformed, 900 the rest; null: an acknowledgement"})
    code_label = fields.String(allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why it waits"})
    state = fields.String(required=True, metadata={"description": "pending, assigned or rejected"})
    resident_id = fields.String(allow_none=True)
    documents = fields.List(fields.String(), required=True, metadata={"description": "DocumentReferences filed"})
    note = fields.String(allow_none=True, metadata={"description": "the reason of a rejection"})


class InboxPage(Schema):
    items = fields.List(fields.Nested(InboxItemOut), required=True)
    next_cursor = fields.String(allow_none=True)
