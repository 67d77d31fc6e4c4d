"""The staff API's payloads for admissions, stays' ends and the projet personnalisé (``dui.web.staff.schemas`` for the
rules every schema follows).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from dui.auth.finess import luhn_key
from dui.staff.projet import ACHIEVEMENTS
from dui.web.staff.problems import Bilingual
from dui.web.staff.schemas import ID, TEXT_LONG, TEXT_SHORT, IdentityOut, In, Named

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
