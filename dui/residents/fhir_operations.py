"""The identity use cases as FHIR operations on Patient (inputs and outputs as ``Parameters``).

=============================  ==========================================================================
``Patient/{id}/$ins-fetch``    retrieve the INS through INSi (by traits, or carte Vitale with
                               ``matriculeIndividu``, ``matriculeOD``, ``birthRank``)
``Patient/{id}/$identity-check``  record a high-trust identity document check (``documentType``, ``date``)
``Patient/{id}/$identity-withdraw``  withdraw evidence (``evidence`` insi|document, ``reason``)
``Patient/{id}/$ins-verify``   verify the stored INS against INSi again
``Patient/$match``             potential duplicates (http://hl7.org/fhir/R4/patient-operation-match.html)
``Patient/$merge``             merge ``source-patient`` into ``target-patient`` (``preview``)
``Patient/$unmerge``           undo the merge of ``source-patient`` (administrators; ``reason``)
``Patient/{id}/$access-report``  who opened the record: the audit trail as AuditEvents (direction, admin)
=============================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from dui.audit import trail
from dui.audit.export import audit_event
from dui.errors import Forbidden, Invalid
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    Operation,
    check_id,
    operation_parameters,
)
from dui.fhir.interactions.bundles import bundle
from dui.residents import duplicates, mapping, merge, operations
from dui.residents.operations import IdentityOutcome
from dui.residents.sharing import visible
from fhir_profiles import CANONICAL
from ins.insi.client import InsiClient, VitaleQuery

InsiProvider = Callable[[], InsiClient]


def build(insi: InsiProvider) -> dict[tuple[str, str], Operation]:
    """The Patient operations, bound to the INSi client the service was built with."""

    def ins_fetch(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
        params = operation_parameters(ctx, req, ("matriculeIndividu", "matriculeOD", "birthRank"))
        vitale = _vitale(ctx, rid, params) if params else None
        return _identity_response(ctx, operations.fetch_ins(ctx, insi(), rid, vitale))

    def ins_verify(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
        operation_parameters(ctx, req, ())
        return _identity_response(ctx, operations.verify(ctx, insi(), rid))

    def ours(name: str) -> str:
        return f"{CANONICAL}/OperationDefinition/Patient-{name}"

    post = ("POST",)
    return {
        ("Patient", "$ins-fetch"): Operation(ours("ins-fetch"), post, "instance", ins_fetch),
        ("Patient", "$ins-verify"): Operation(ours("ins-verify"), post, "instance", ins_verify),
        ("Patient", "$identity-check"): Operation(ours("identity-check"), post, "instance", identity_check),
        ("Patient", "$identity-withdraw"): Operation(ours("identity-withdraw"), post, "instance", identity_withdraw),
        ("Patient", "$match"): Operation("http://hl7.org/fhir/OperationDefinition/Patient-match", post, "type",
                                         match),
        ("Patient", "$merge"): Operation(ours("merge"), post, "type", merge_patients),
        ("Patient", "$unmerge"): Operation(ours("unmerge"), post, "type", unmerge_patient),
        ("Patient", "$access-report"): Operation(ours("access-report"), ("GET",), "instance", access_report),
    }


REPORT_READERS = frozenset({"administrateur", "direction"})


def access_report(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    """Who opened this resident's record: the audit trail's entries touching it, as AuditEvents, oldest first."""
    if ctx.actor.kind not in ("cli", "system", "anonymous") and not ctx.actor.roles & REPORT_READERS:
        raise Forbidden("Not allowed: the access report is for the direction and administrators")
    session = ctx.internal.session  # type: ignore[attr-defined]
    events = [{"fullUrl": f"{ctx.base}/AuditEvent/audit-{row['seq']}",
               "resource": audit_event(row, patients, ctx.settings.base_url)}
              for row, patients in trail.entries(session, patient=rid)]
    return FhirResponse(200, bundle("collection", ctx.clock(), events, [], total=None))


def identity_check(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    params = operation_parameters(ctx, req, ("documentType", "date"))
    document = _code(params, "documentType", required=True)
    checked = _value(params, "date", "valueDate")
    when = None
    if checked is not None:
        if not isinstance(checked, str) or len(checked) != 10:
            raise Invalid("date is a full date (YYYY-MM-DD)", expression="date")
        when = date.fromisoformat(checked)
    return _identity_response(ctx, operations.check_document(ctx, rid, str(document), when))


def identity_withdraw(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    params = operation_parameters(ctx, req, ("evidence", "reason"))
    evidence = _code(params, "evidence", required=True)
    reason = _value(params, "reason", "valueString")
    if not isinstance(reason, str) or not reason.strip():
        raise Invalid("reason (valueString) is required to withdraw evidence", expression="reason")
    return _identity_response(ctx, operations.withdraw(ctx, rid, str(evidence), reason))


def match(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    params = operation_parameters(ctx, req, ("resource", "onlyCertainMatches", "count"))
    resource = params.get("resource", [{}])[0].get("resource")
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise Invalid("$match needs a Patient in the 'resource' parameter", expression="resource")
    only_certain = _value(params, "onlyCertainMatches", "valueBoolean") is True
    count = _value(params, "count", "valueInteger")
    if count is not None and (not isinstance(count, int) or count < 1):
        raise Invalid("count is a positive integer", expression="count")
    return FhirResponse(200, duplicates.match_bundle(ctx, resource, only_certain, count))


def merge_patients(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    params = operation_parameters(ctx, req, ("source-patient", "target-patient", "preview"))
    source, target = _patient_id(params, "source-patient"), _patient_id(params, "target-patient")
    preview = _value(params, "preview", "valueBoolean") is True
    return FhirResponse(200, _merge_parameters(ctx, merge.merge(ctx, source, target, preview=preview)))


def unmerge_patient(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    params = operation_parameters(ctx, req, ("source-patient", "reason"))
    reason = _value(params, "reason", "valueString")
    if not isinstance(reason, str):
        raise Invalid("reason (valueString) is required to undo a merge", expression="reason")
    return FhirResponse(200, _merge_parameters(ctx, merge.unmerge(ctx, _patient_id(params, "source-patient"), reason)))


# -- Parameters in and out --------------------------------------------------------------------------


def _value(params: dict[str, list[dict[str, Any]]], name: str, key: str) -> Any:
    found = params.get(name)
    if not found:
        return None
    value = found[0].get(key)
    if value is None:
        raise Invalid(f"'{name}' must be given as {key}", expression=name)
    return value


def _code(params: dict[str, list[dict[str, Any]]], name: str, required: bool = False) -> str | None:
    found = params.get(name)
    if not found:
        if required:
            raise Invalid(f"'{name}' is required", expression=name)
        return None
    param = found[0]
    value = param.get("valueCode") or param.get("valueString") or (param.get("valueCoding") or {}).get("code")
    if not isinstance(value, str):
        raise Invalid(f"'{name}' is a code (valueCode or valueCoding)", expression=name)
    return value


def _patient_id(params: dict[str, list[dict[str, Any]]], name: str) -> str:
    ref = _value(params, name, "valueReference")
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str) or not text.startswith("Patient/") or text.count("/") != 1:
        raise Invalid(f"'{name}' is a reference such as Patient/123 (valueReference)", expression=name)
    return check_id(text.split("/")[1])


def _vitale(ctx: FhirContext, rid: str, params: dict[str, list[dict[str, Any]]]) -> VitaleQuery:
    _, patient = operations.load_patient(ctx, rid, lock=False)
    rank = _value(params, "birthRank", "valueInteger")
    if not isinstance(rank, int) or not 1 <= rank <= 9:
        raise Invalid("birthRank is the rang de naissance read on the carte Vitale (1-9)", expression="birthRank")
    traits = mapping.traits_of(patient)
    individu = str(_value(params, "matriculeIndividu", "valueString") or "")
    return VitaleQuery(nir_individu=individu,
                       nir_od=str(_value(params, "matriculeOD", "valueString") or individu),
                       birth_family=traits.birth_family if traits else "",
                       birth_date=traits.birth_date if traits else "", birth_rank=rank)


def _identity_response(ctx: FhirContext, outcome: IdentityOutcome) -> FhirResponse:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "result", "valueCode": outcome.outcome},
        {"name": "identityStatus", "valueCode": outcome.status.code},
        {"name": "message", "valueString": outcome.message},
        {"name": "patient", "resource": visible(ctx.actor, outcome.patient).resource()},
    ]}
    return FhirResponse(200, body, {"ETag": outcome.patient.etag})


def _merge_parameters(ctx: FhirContext, outcome: merge.MergeOutcome) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "preview", "valueBoolean": outcome.preview},
        {"name": "source", "resource": visible(ctx.actor, outcome.source).resource()},
        {"name": "result", "resource": visible(ctx.actor, outcome.target).resource()},
        *({"name": "moved", "valueReference": {"reference": ref}} for ref in outcome.moved),
    ]}
