"""Error handlers: an OperationOutcome under /fhir, a JSON problem (RFC 9457) elsewhere.

A client's mistake gets its 4xx with a message it can act on; a database outage a 503 with
Retry-After; anything else a 500 with the request id to quote, and the traceback in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from dui.errors import DuiError, Fault, TooLarge, Unavailable
from dui.fhir import jsontext
from dui.fhir.outcomes import error_outcome
from dui.web import fhir
from dui.web.staff import problems

logger = logging.getLogger("dui.web")
FHIR_JSON = "application/fhir+json; charset=utf-8"


def register(app: Flask) -> None:
    app.register_error_handler(DuiError, _render)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(OperationalError, _database)
    app.register_error_handler(Exception, _unexpected)


def _http(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length or 0
        return _render(TooLarge(f"The request body is larger than {limit} bytes (DUI_MAX_REQUEST_BYTES)"))
    status = exc.code or 500
    err = DuiError(exc.description or exc.name)
    err.status = status
    err.code = {400: "invalid", 404: "not-found", 405: "not-supported", 406: "not-supported",
                415: "not-supported"}.get(status, "processing")
    err.issues[0] = type(err.issues[0])(err.message, err.code)
    return _render(err)


def _database(exc: OperationalError) -> Response:
    reason = type(exc.orig).__name__ if exc.orig else "?"
    if reason == "QueryCanceled":  # DUI_STATEMENT_TIMEOUT
        logger.warning("statement timeout", extra={"path": request.path})
        return _render(Unavailable("The request took too long and was stopped; narrow the search (fewer "
                                   "results, fewer _include) or retry later", code="timeout",
                                   headers={"Retry-After": "5"}))
    logger.error("database unavailable", extra={"error": reason})
    return _render(Unavailable("The database is unavailable; retry in a moment", headers={"Retry-After": "5"}))


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, RecursionError):
        return _render(TooLarge("The request is nested too deeply to process"))
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return _database(exc)  # type: ignore[arg-type]
    logger.exception("unexpected error", extra={"error": type(exc).__name__})
    return _render(Fault(f"Internal error; quote request id {g.get('request_id', '-')} to the operator"))


def _render(err: DuiError) -> Response:
    status, outcome = error_outcome(err)
    if request.path.startswith("/fhir"):
        body: Any = outcome
        mimetype = FHIR_JSON
        answered_as = g.get("fhir_answered_as")
        if answered_as is not None and fhir.is_xml_answer(answered_as):  # the client asked for FHIR XML
            try:
                xml = fhir.as_xml(jsontext.dump(outcome))
            except DuiError:  # a message XML cannot carry (a control character the client sent): in JSON
                xml = None
            if xml is not None:
                response = Response(xml, status=status, content_type=answered_as)
                for key, value in err.headers.items():
                    response.headers[key] = value
                return response
    elif request.path == "/api" or request.path.startswith("/api/"):
        body = problems.error_problem(err, status)
        mimetype = problems.PROBLEM_JSON
    else:
        body = {"type": "about:blank", "title": err.message, "status": status,
                "errors": [i.diagnostics for i in err.issues]}
        mimetype = "application/problem+json"
    response = Response(jsontext.dump(body), status=status, content_type=mimetype)
    for key, value in err.headers.items():
        response.headers[key] = value
    return response

