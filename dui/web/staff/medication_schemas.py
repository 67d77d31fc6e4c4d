"""The staff API's payloads for medications: prescriptions, the round's plan, administrations (``dui.web.staff.schemas``
for the rules every schema follows).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from dui.staff import medications
from dui.web.staff.problems import Bilingual
from dui.web.staff.schemas import ID, REASON_TEXT, TEXT_LONG, TEXT_SHORT, In, Named

ATC_CODE = validate.Regexp(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
ROUND_NAMES = validate.OneOf(list(medications.ROUNDS))


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
