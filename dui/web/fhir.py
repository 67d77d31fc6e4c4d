"""The /fhir blueprint: HTTP <-> ``FhirRequest``/``FhirResponse``; the FHIR logic is in ``dui.fhir``."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, g, request
from sqlalchemy.exc import DBAPIError

from dui.auth.actor import ANONYMOUS
from dui.db import is_postgresql
from dui.errors import DuiError, NotAcceptable
from dui.fhir import jsontext, router
from dui.fhir.interactions.base import FhirRequest, FhirResponse
from dui.web import audit, budget
from dui.web.context import WRITE_METHODS, current_actor, services, unit_of_work

bp = Blueprint("fhir", __name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


@bp.route("/fhir", methods=METHODS, defaults={"path": ""}, strict_slashes=False)
@bp.route("/fhir/<path:path>", methods=METHODS)
def dispatch(path: str) -> Response:
    _check_format()
    req = FhirRequest(
        method=request.method,
        path=path,
        query=tuple(request.args.items(multi=True)),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.get_data(cache=False) or None,
    )
    svc = services()
    # POST [type]/_search is a read: it must not queue behind writers (BEGIN IMMEDIATE on SQLite).
    write = request.method in WRITE_METHODS and path.rstrip("/").rsplit("/", 1)[-1] != "_search"
    audited = path.strip("/") != "metadata"
    actor = ANONYMOUS
    try:
        actor = current_actor()
        try:
            with unit_of_work(write=write) as session:
                # Stopped with 503 RequestStopped past DUI_REQUEST_BUDGET (dui.web.budget), rolled back, audited below.
                result = _encoded(budget.run(svc.settings.request_budget, router.handle,
                                             svc.fhir_context(session, actor), req))
                # A write and its audit entry commit together; a read on PostgreSQL (autocommit) records
                # its entry in one statement of its own.
                recorded = audited and (write or is_postgresql(session))
                if recorded:
                    audit.record_fhir(session, svc.clock(), actor, req, result, _where())
        except DBAPIError as exc:
            if write or not exc.connection_invalidated:
                raise
            # The database restarted since this pooled connection was opened: a read is safe to retry.
            with unit_of_work(write=False) as session:
                result = _encoded(budget.run(svc.settings.request_budget, router.handle,
                                             svc.fhir_context(session, actor), req))
                recorded = False
    except DuiError as exc:
        if audited:
            audit.record_refusal(svc, actor, req, exc.status, type(exc).__name__, _where())
        raise
    if audited and not recorded:  # nothing is served that was not recorded (SQLite: a write of its own)
        with unit_of_work(write=True) as session:
            audit.record_fhir(session, svc.clock(), actor, req, result, _where())
    return _to_flask(result)


def _encoded(result: FhirResponse) -> FhirResponse:
    """The response with its body as JSON bytes, written once for the audit entry and the client alike."""
    if isinstance(result.body, dict):
        result.body = jsontext.dump(result.body)
    return result


def _where() -> tuple[str | None, str | None]:
    return request.remote_addr, g.get("request_id")


def _check_format() -> None:
    """Answer JSON only; refuse explicitly what else a client asks for (406)."""
    fmt = request.args.get("_format")
    if fmt is not None and fmt.split(";")[0].strip().lower() not in _JSON_FORMATS:
        raise NotAcceptable(f"_format={fmt} is not available; this server answers FHIR JSON only")
    accept = request.accept_mimetypes
    if not accept.provided or fmt is not None:
        return
    acceptable = {"application/fhir+json", "application/json", "application/json+fhir", "*/*", "application/*"}
    if any(value.split(";")[0].strip().lower() in acceptable and quality > 0 for value, quality in accept):
        return
    raise NotAcceptable(f"Accept: {request.headers.get('Accept')} cannot be served; this server answers "
                        "application/fhir+json (FHIR JSON, 4.0.1)")


def _to_flask(result: FhirResponse) -> Response:
    body = result.body
    if body is None or result.status in (204, 304):
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    else:
        payload = jsontext.dump(body)
    if payload and request.args.get("_pretty") == "true":
        payload = orjson.dumps(jsontext.parse(payload, max_depth=10_000), option=orjson.OPT_INDENT_2,
                               default=jsontext.fragment_default)
    response = Response(payload, status=result.status, content_type=FHIR_JSON if payload else None)
    for key, value in result.headers.items():
        response.headers[key] = value
    if request.method == "HEAD":
        response.set_data(b"")
    return response
