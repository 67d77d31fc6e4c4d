"""The documents as FHIR operations on Patient and DocumentReference (INTERFACES.md).

=============================  ==========================================================================
``Patient/{id}/$dlu``          build or refresh the resident's DLU; returns its DocumentReference (200 when the
                               one in force was current, 201 when a new one was built). ``force`` (boolean)
                               builds even when the record has not changed.
``Patient/{id}/$fludt``        a FLUDT for a transfer to hospital now (``reason`` required; ``destination``,
                               ``lastMeal``, ``device`` and ``belonging`` repeated, ``comment``); returns its
                               DocumentReference (201)
``DocumentReference/{id}/``    queue the document for the resident's DMP (``dui dmp send``); 202 with the
``$dmp-send``                  outbox job (Parameters ``job``, ``state``)
``DocumentReference/{id}/``    queue the document for an MSSanté address (``to``, required; ``dui mssante
``$mssante-send``              send``); 202 with the outbox job
=============================  ==========================================================================

Queuing needs the right to update the DocumentReference (the send is recorded on it): who may only read the
resident's documents may print them, not send them out.
"""

from __future__ import annotations

from typing import Any

from dui.documents import dmp_feed, operations
from dui.errors import Invalid
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    Operation,
    check_id,
    operation_parameters,
    version_headers,
)
from dui.fhir.repository import ResourceVersion
from dui.messaging import sending
from dui.outbox.queue import Job
from fhir_profiles import CANONICAL

FLUDT_PARAMETERS = ("reason", "destination", "lastMeal", "device", "belonging", "comment")


def build() -> dict[tuple[str, str], Operation]:
    post = ("POST",)
    return {
        ("Patient", "$dlu"): Operation(f"{CANONICAL}/OperationDefinition/Patient-dlu", post, "instance", dlu),
        ("Patient", "$fludt"): Operation(f"{CANONICAL}/OperationDefinition/Patient-fludt", post, "instance", fludt),
        ("DocumentReference", "$dmp-send"): Operation(f"{CANONICAL}/OperationDefinition/DocumentReference-dmp-send",
                                                      post, "instance", dmp_send),
        ("DocumentReference", "$mssante-send"): Operation(
            f"{CANONICAL}/OperationDefinition/DocumentReference-mssante-send", post, "instance", mssante_send),
    }


def dlu(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    params = _parameters(ctx, req, ("force",))
    force = params.get("force", [None])[0]
    if force is not None and not isinstance(force, bool):
        raise Invalid("'force' is a boolean (valueBoolean)", expression="force")
    if force:  # a new version whatever the record: for those who may write documents, not every reader
        ctx.require("c", "DocumentReference")
    built = operations.refresh_dlu(ctx, check_id(rid), force=bool(force))
    return _answer(ctx, built.reference, 201 if built.created else 200)


def fludt(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    params = _parameters(ctx, req, FLUDT_PARAMETERS)
    facts: dict[str, Any] = {name: values[0] for name, values in params.items() if name not in ("device", "belonging")}
    for name in ("device", "belonging"):
        facts[name] = params.get(name, [])
    for name, value in facts.items():
        if name in ("device", "belonging"):
            if not all(isinstance(v, str) and v.strip() for v in value):
                raise Invalid(f"'{name}' values are strings (valueString)", expression=name)
        elif not isinstance(value, str):
            raise Invalid(f"'{name}' is a string (valueString)", expression=name)
    reference = operations.build_fludt(ctx, check_id(rid), operations.transfer_from(facts))
    return _answer(ctx, reference, 201)


def dmp_send(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    _parameters(ctx, req, ())
    ctx.require("u", "DocumentReference")
    return _queued(ctx, rid, dmp_feed.request_share(ctx, check_id(rid), ctx.clock()))


def mssante_send(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    params = _parameters(ctx, req, ("to",))
    to = params.get("to", [None])
    if len(to) != 1 or not isinstance(to[0], str):
        raise Invalid("'to' (valueString), the recipient's MSSanté address, is required once", expression="to")
    ctx.require("u", "DocumentReference")
    return _queued(ctx, rid, sending.request_send(ctx, check_id(rid), to[0], ctx.clock()))


def _queued(ctx: FhirContext, rid: str, job: Job) -> FhirResponse:
    """202: the delivery is queued (``dui worker`` makes it); the job, to follow it (``dui outbox show``). The
    document is named for the audit trail (whose data leaves)."""
    body = {"resourceType": "Parameters", "parameter": [{"name": "job", "valueInteger": job.id},
                                                        {"name": "state", "valueCode": job.state}]}
    document = ctx.repo.read("DocumentReference", rid)
    return FhirResponse(202, body, {}, None, touched=[document] if document is not None else [])


def _answer(ctx: FhirContext, version: ResourceVersion, status: int) -> FhirResponse:
    headers = version_headers(version)
    if status == 201:
        headers["Location"] = f"{ctx.base}/{version.versioned_reference}"
    return FhirResponse(status, version.body, headers, version)


def _parameters(ctx: FhirContext, req: FhirRequest, allowed: tuple[str, ...]) -> dict[str, list[Any]]:
    """The body's Parameters as name -> values (valueString, valueBoolean...)."""
    return {name: [next((v for k, v in p.items() if k.startswith("value")), None) for p in params]
            for name, params in operation_parameters(ctx, req, allowed).items()}
