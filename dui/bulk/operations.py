"""FHIR Bulk Data Access 2.0 ``$export`` (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) as FHIR operations.

==================================  ==================================================================================
``[base]/$export``                  kick-off of a system-level export (GET, or POST with a Parameters body)
``[base]/Patient/$export``          kick-off of every resident's record the caller sees
``[base]/Group/{id}/$export``       kick-off of the records of the Group's ``member`` Patients
``[base]/$export-status/{job}``     GET: 202 with ``X-Progress`` and ``Retry-After`` while it runs, 200 with the
                                    manifest when complete, 500 with an OperationOutcome when it failed; DELETE:
                                    202, the export cancelled and its files removed
``[base]/$export-file/{job}/{f}``   one NDJSON file of a completed export (``application/fhir+ndjson``), streamed
==================================  ==================================================================================

A kick-off needs ``Prefer: respond-async`` (400 without), creates the job (``dui.bulk.jobs``) and the outbox job that
``dui worker`` runs (``dui.bulk.worker``), and answers 202 with ``Content-Location``. Who may export: API clients
(SMART Backend Services, ``system/`` scopes: the types they may read), the anonymous caller where anonymous calls
are allowed (development), and the administrator with ``dui export --ndjson``; staff members may not (a person
carrying away every resident's record is not a use of the DUI; their establishment's client does it). The status and
the files are the requester's only: for anybody else they do not exist (404).
"""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from dui.bulk import jobs, request
from dui.bulk.files import read_sealed
from dui.errors import Forbidden, Gone, Invalid, Issue, MethodNotAllowed, NotFound
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    Operation,
    check_id,
    not_found,
    operation_parameters,
)
from dui.fhir.outcomes import operation_outcome
from dui.fhir.sql import SqlFhirRepository

BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
NDJSON = "application/fhir+ndjson"
RETRY_AFTER = 5  # seconds: what a client polling the status is asked to wait
EXPORTERS = frozenset({"client", "anonymous", "cli"})
OPERATIONS = ("$export", "$export-status", "$export-file")


def build() -> dict[tuple[str, str], Operation]:
    kick = ("GET", "POST")
    group_type = Operation("", kick, "type", group_without_id)
    return {
        ("", "$export"): Operation(f"{BULK}/export", kick, "system", system_export),
        ("Patient", "$export"): Operation(f"{BULK}/patient-export", kick, "type", patient_export),
        ("Group", "$export"): Operation(f"{BULK}/group-export", kick, "instance", group_export, also=group_type),
        ("", "$export-status"): Operation("", ("GET", "DELETE"), "system", status, arguments=1),
        ("", "$export-file"): Operation("", ("GET",), "system", download, arguments=2),
    }


# -- kick-off -------------------------------------------------------------------------------------------------------


def system_export(ctx: FhirContext, req: FhirRequest) -> FhirResponse:
    return _kickoff(ctx, req, "system", None)


def patient_export(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    return _kickoff(ctx, req, "patient", None)


def group_export(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    return _kickoff(ctx, req, "group", rid)


def group_without_id(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    raise Invalid("A Group export names its Group: [base]/Group/{id}/$export", code="required")


def _kickoff(ctx: FhirContext, req: FhirRequest, level: str, group: str | None) -> FhirResponse:
    if req.method == "HEAD":  # a HEAD starts nothing
        raise MethodNotAllowed("HEAD does not start an export; allowed: GET, POST", headers={"Allow": "GET, POST"})
    if "respond-async" not in req.prefer:
        raise Invalid("$export runs asynchronously: send Prefer: respond-async", code="required")
    if ctx.actor.kind not in EXPORTERS:
        raise Forbidden("Not allowed: bulk export is for systems (API clients) and `dui export --ndjson`, not for "
                        "staff members")
    pairs = [*req.query, *_posted(ctx, req)]
    asked = request.parse(ctx, level, group, pairs)
    touched = []
    if group is not None:
        found = ctx.repo.read("Group", group)
        if found is None or found.deleted:
            raise not_found("Group", group)
        touched.append(found)
    url = f"{ctx.base}/{req.path}" + (f"?{urlencode(list(req.query))}" if req.query else "")
    export = jobs.create(_store(ctx).session, ctx.actor, url, asked, ctx.clock())
    note = Issue(f"Export {export.id} queued: follow Content-Location", "informational", severity="information")
    return FhirResponse(202, operation_outcome([note]), {"Content-Location": _status_url(ctx, export.id)},
                        touched=touched)


def _posted(ctx: FhirContext, req: FhirRequest) -> list[tuple[str, str]]:
    """A POSTed kick-off's Parameters as (name, value) pairs (``_type`` and ``_typeFilter`` may repeat)."""
    if req.method != "POST":
        return []
    pairs = []
    for name, params in operation_parameters(ctx, req, request.PARAMETERS).items():
        for param in params:
            value = next((v for k, v in param.items() if k.startswith("value")), None)
            if not isinstance(value, str):
                raise Invalid(f"'{name}' takes a string value (valueString, valueInstant)", expression=name)
            pairs.append((name, value))
    return pairs


# -- status ---------------------------------------------------------------------------------------------------------


def status(ctx: FhirContext, req: FhirRequest, export_id: str) -> FhirResponse:
    export = _own(ctx, export_id, lock=req.method == "DELETE")
    now = ctx.clock()
    if req.method == "DELETE":
        jobs.cancel(_store(ctx).session, export, now)
        jobs.remove_files(ctx.settings.export.directory, export.id)
        note = Issue(f"Export {export.id} cancelled, its files removed", "informational", severity="information")
        return FhirResponse(202, operation_outcome([note]))
    if export.expired(now):
        raise Gone(f"Export {export.id} has expired: its files were removed; ask again")
    if export.state in ("queued", "running"):
        progress = export.progress or "queued"
        return FhirResponse(202, None, {"X-Progress": progress[:100], "Retry-After": str(RETRY_AFTER)})
    if export.state == "failed":
        issue = Issue(f"The export failed: {export.error or 'see the server log'}", "exception")
        return FhirResponse(500, operation_outcome([issue]))
    expires = export.expires_at or now
    return FhirResponse(200, _manifest(ctx, export), {"Expires": format_datetime(expires, usegmt=True)})


def _manifest(ctx: FhirContext, export: jobs.Export) -> dict[str, Any]:
    when = export.transaction_time or export.created_at
    return {
        "transactionTime": when.isoformat().replace("+00:00", "Z"),
        "request": export.request,
        "requiresAccessToken": export.actor_kind != "anonymous",
        "output": [{"type": f["type"], "url": f"{ctx.base}/$export-file/{export.id}/{f['name']}", "count": f["count"]}
                   for f in export.output],
        "error": [],
    }


# -- files ----------------------------------------------------------------------------------------------------------


def download(ctx: FhirContext, req: FhirRequest, export_id: str, name: str) -> FhirResponse:
    export = _own(ctx, export_id)
    if export.state != "completed":
        raise NotFound(f"Export {export.id} has no files (it is {export.state})")
    if export.expired(ctx.clock()):
        raise Gone(f"Export {export.id} has expired: its files were removed; ask again")
    info = next((f for f in export.output if f["name"] == name), None)
    path = jobs.attempt_folder(ctx.settings.export.directory, export) / name
    if info is None or export.data_key is None:
        raise NotFound(f"Export {export.id} has no file {name[:80]}")
    if not path.is_file():
        raise Gone(f"The file {name} of export {export.id} was removed")
    store = _store(ctx)
    key = store.bodies.keyring.data_key(store.session, export.data_key)
    chunks: Iterator[bytes] = read_sealed(Path(path), key, export.id, name, int(info["chunks"]))
    return FhirResponse(200, chunks, {"Content-Length": str(info["bytes"])}, content_type=NDJSON)


# -- shared ---------------------------------------------------------------------------------------------------------


def _own(ctx: FhirContext, export_id: str, lock: bool = False) -> jobs.Export:
    """The caller's own export (locked on PostgreSQL for a cancel); NotFound for an unknown one, somebody else's,
    or one cancelled."""
    check_id(export_id)
    export = jobs.load(_store(ctx).session, export_id, for_update=lock)
    if export is None or not export.owned_by(ctx.actor) or export.state == "cancelled":
        raise NotFound(f"No export {export_id[:64]}")
    return export


def _status_url(ctx: FhirContext, export_id: str) -> str:
    return f"{ctx.base}/$export-status/{export_id}"


def _store(ctx: FhirContext) -> SqlFhirRepository:
    store = ctx.internal
    inner = getattr(store, "inner", store)  # a scoped repository wraps the store
    assert isinstance(inner, SqlFhirRepository)
    return inner

