"""Errors of the staff API as RFC 9457 problem details (``application/problem+json``), with the field at fault.

Every problem has ``type``, ``title``, ``status`` and ``detail``, and ``errors``: one item per fault, each with
``field`` (a dotted path into the request: ``pain.score``, or a query parameter's name; null when the fault is not
one field's), ``code``, ``detail`` (English) and ``detail_fr`` (French), so that the client can put the message next
to the field in the language of its user. Validation problems come from the marshmallow schemas
(``validation_problem``); every other refusal from the ``DuiError`` the use case raised (``error_problem``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dui.errors import DuiError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://dui.example.org/problems/"


class Bilingual(str):
    """A validation message written in English, with its French: raise ``ValidationError(Bilingual(en, fr))``."""

    fr: str

    def __new__(cls, en: str, fr: str) -> Bilingual:
        value = super().__new__(cls, en)
        value.fr = fr
        return value


# marshmallow's own messages, and their French: (pattern, French template, code)
_FRENCH: list[tuple[re.Pattern[str], str, str]] = [(re.compile(p), fr, code) for p, fr, code in (
    (r"Missing data for required field\.", "Champ obligatoire manquant.", "required"),
    (r"Field may not be null\.", "Ce champ ne peut pas être vide (null).", "null"),
    (r"Unknown field\.", "Champ inconnu.", "unknown"),
    (r"Not a valid integer\.", "Nombre entier attendu.", "type"),
    (r"Not a valid number\.", "Nombre attendu.", "type"),
    (r"Not a valid string\.", "Texte attendu.", "type"),
    (r"Not a valid boolean\.", "Booléen attendu (true ou false).", "type"),
    (r"Not a valid aware datetime\.", "Date et heure avec fuseau horaire attendues (ISO 8601).", "type"),
    (r"Not a valid datetime\.", "Date et heure attendues (ISO 8601).", "type"),
    (r"Not a valid date\.", "Date attendue (AAAA-MM-JJ).", "type"),
    (r"Not a valid mapping type\.", "Objet JSON attendu.", "type"),
    (r"Not a valid list\.", "Liste attendue.", "type"),
    (r"Invalid input type\.", "Type de donnée invalide.", "type"),
    (r"Special numeric values \(nan or infinity\) are not permitted\.",
     "Les valeurs numériques spéciales (nan, infini) sont refusées.", "type"),
    (r"Must be greater than or equal to (?P<min>\S+) and less than or equal to (?P<max>\S+)\.",
     "Doit être compris entre {min} et {max}.", "range"),
    (r"Must be greater than or equal to (?P<min>\S+)\.", "Doit être supérieur ou égal à {min}.", "range"),
    (r"Must be less than or equal to (?P<max>\S+)\.", "Doit être inférieur ou égal à {max}.", "range"),
    (r"Shorter than minimum length (?P<min>\d+)\.", "Trop court : au moins {min} caractères.", "length"),
    (r"Longer than maximum length (?P<max>\d+)\.", "Trop long : au plus {max} caractères.", "length"),
    (r"Length must be between (?P<min>\d+) and (?P<max>\d+)\.", "Longueur entre {min} et {max} attendue.",
     "length"),
    (r"Must be one of: (?P<choices>.*)\.", "Doit être l'une des valeurs : {choices}.", "choice"),
    (r"String does not match expected pattern\.", "Format invalide.", "pattern"),
    (r"Given more than once\.", "Paramètre donné plusieurs fois.", "repeated"),
)]


def validation_problem(messages: Any, where: str) -> dict[str, Any]:
    """422 from marshmallow's messages; ``where`` is ``body`` or ``query``."""
    errors = [_item(field, message) for field, message in _flatten(messages, "")]
    title = "The request body is not valid" if where == "body" else "The query parameters are not valid"
    return {"type": TYPE_BASE + "validation", "title": title, "status": 422,
            "detail": "; ".join(f"{e['field'] or where}: {e['detail']}" for e in errors)[:1000], "errors": errors}


def error_problem(err: DuiError, status: int) -> dict[str, Any]:
    """The problem of a refusal raised below the web layer (the same categories and statuses as ``/fhir``)."""
    prepared = getattr(err, "problem", None)  # a schema's refusal carries its problem already
    if isinstance(prepared, dict):
        return prepared
    errors = []
    for issue in err.issues:
        field = issue.expression[0] if issue.expression else None
        errors.append({"field": field, "code": issue.code or err.code, "detail": issue.diagnostics,
                       "detail_fr": getattr(issue.diagnostics, "fr", None)})
    return {"type": TYPE_BASE + (err.code or "error"), "title": err.message[:300], "status": status,
            "detail": err.message, "errors": errors}


def _flatten(messages: Any, prefix: str) -> list[tuple[str | None, str]]:
    if isinstance(messages, Mapping):
        out: list[tuple[str | None, str]] = []
        for key, value in messages.items():
            name = prefix if key == "_schema" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(_flatten(value, name))
        return out
    if isinstance(messages, list | tuple):
        return [pair for value in messages for pair in _flatten(value, prefix)]
    return [(prefix or None, messages if isinstance(messages, str) else str(messages))]


def _item(field: str | None, message: str) -> dict[str, Any]:
    if isinstance(message, Bilingual):
        return {"field": field, "code": "invalid", "detail": str(message), "detail_fr": message.fr}
    for pattern, french, code in _FRENCH:
        found = pattern.fullmatch(message)
        if found:
            return {"field": field, "code": code, "detail": message, "detail_fr": french.format(**found.groupdict())}
    return {"field": field, "code": "invalid", "detail": message, "detail_fr": f"Valeur refusée : {message}"}
