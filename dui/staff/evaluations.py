"""Evaluations of a resident: the AGGIR evaluation and its GIR.

An AGGIR evaluation is stored as TDDUI 2.2.0 stores evaluations, a ``tddui-questionnaire-response``
(https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-questionnaire-response): identifier in
``https://identifiant-medicosocial-evaluation.esante.gouv.fr`` (``3<FINESS>/<local id>-EVAL-<n>``), the AGGIR PA
questionnaire, the resident as subject, ``authored`` the day of the evaluation, and the result as the answer of item
``resultat-eval``: the GIR coded in terminologie-cisis (``dui.staff.codes.GIR_CODES``; the TDDUI example
QuestionnaireResponse-tddui-pp-pa-questionnaire-response-aggir-pa-example codes GIR 3 as MED-341). A note goes in
the TDDUI comment extension. The search parameter ``evaluation-result`` (``fhir_profiles``) indexes the GIR, which
is how the establishment's indicators read it in SQL (``dui.staff.indicators``).

Who evaluates: the physician or a nurse (``EVALUATORS``), whatever an establishment's policy lets other roles write.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import TYPE_CHECKING, Any

from dui.auth.actor import Actor
from dui.auth.roles import INFIRMIER, MEDECIN
from dui.errors import Forbidden
from dui.residents.provenance import actor_reference
from dui.staff import codes

if TYPE_CHECKING:  # the demo data build evaluations without the FHIR engine
    from dui.staff.record import Record

PROFILE = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-questionnaire-response"
COMMENT = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-comment"
LOCAL_ID_SYSTEM = "https://identifiant-medicosocial-localusager.esante.gouv.fr"  # the resident's "3<FINESS>/<id>"
EVALUATORS = frozenset({MEDECIN, INFIRMIER})


def record_aggir(record: Record, actor: Actor, patient_id: str, gir: int, evaluated_on: date,
                 note: str | None) -> tuple[dict[str, Any], int]:
    """Record an AGGIR evaluation of a resident the actor sees; returns the QuestionnaireResponse and its version.

    Raises ``Forbidden`` for a role that does not evaluate, ``NotFound`` for a resident not seen (as ``/fhir``)."""
    if not actor.roles & EVALUATORS:
        raise Forbidden("An AGGIR evaluation is recorded by the physician or a nurse")
    patient, _ = record.read("Patient", patient_id)
    identifier = f"3{actor.establishment}/{_local_id(patient)}-EVAL-{uuid.uuid4().hex[:12]}"
    response = aggir_response(patient_id, actor_reference(actor), gir, evaluated_on, note, identifier)
    return record.create(response)


def aggir_response(patient_id: str, author: dict[str, Any], gir: int, evaluated_on: date, note: str | None,
                   identifier: str) -> dict[str, Any]:
    """The ``tddui-questionnaire-response`` of an AGGIR evaluation (also the demo's, ``dui.demo.data``)."""
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "meta": {"profile": [PROFILE]},
        "identifier": {"system": codes.EVALUATION_SYSTEM, "value": identifier},
        "questionnaire": codes.AGGIR_QUESTIONNAIRE,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authored": evaluated_on.isoformat(),
        "author": author,
        "item": [{"linkId": codes.EVALUATION_RESULT, "text": "Résultat évaluation",
                  "answer": [{"valueCoding": {"system": codes.CISIS, "code": codes.GIR_CODES[gir],
                                              "display": f"GIR-{gir}"}}]}],
    }
    if note:
        response["extension"] = [{"url": COMMENT, "valueString": note}]
    return response


def view(response: dict[str, Any], version: int) -> dict[str, Any]:
    """An AGGIR evaluation as the staff API shows it."""
    coding = next((a.get("valueCoding") or {} for item in response.get("item") or []
                   if item.get("linkId") == codes.EVALUATION_RESULT for a in item.get("answer") or []), {})
    gir = next((level for level, code in codes.GIR_CODES.items() if code == coding.get("code")), None)
    note = next((e.get("valueString") for e in response.get("extension") or [] if e.get("url") == COMMENT), None)
    return {"id": response["id"], "version": version,
            "resident_id": str((response.get("subject") or {}).get("reference", "")).removeprefix("Patient/"),
            "gir": gir, "code": coding.get("code"), "evaluated_on": response.get("authored"),
            "author": ((response.get("author") or {}).get("identifier") or {}).get("value"), "note": note}


def _local_id(patient: dict[str, Any]) -> str:
    """The resident's local id in the establishment (the part after ``/`` of her ``3<FINESS>/<id>``), else her id."""
    for identifier in patient.get("identifier") or []:
        value = str(identifier.get("value") or "")
        if identifier.get("system") == LOCAL_ID_SYSTEM and "/" in value:
            return value.split("/", 1)[1]
    return str(patient["id"])
