"""The staff API's HTTP edge: the table of endpoints, and one way to serve each of them.

An endpoint is declared once with ``endpoint(...)``: its method and path, who may call it, its query, body and
answer schemas. The same declaration registers the Flask view and describes the operation in the OpenAPI document
(``dui.web.staff.openapi``): what is documented is what is served.

``serve`` does for every endpoint what ``/fhir`` does for every request: it authenticates (the same tokens), checks
the query and the body with their schemas (422 problem naming each field at fault), runs the use case in one unit
of work under the request budget (everything written, or nothing), and records one audit entry naming the residents
the use case's FHIR interactions touched. Refusals are recorded too, with the interaction that raised them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from flask import Blueprint, Response, g, request
from marshmallow import Schema, ValidationError
from sqlalchemy.orm import Session

from dui.auth.actor import Actor
from dui.errors import DuiError, Forbidden, Invalid, Unauthorized, UnsupportedMediaType
from dui.settings import Settings
from dui.staff.record import Record
from dui.web import audit, budget
from dui.web.context import current_actor, services, unit_of_work
from dui.web.staff import problems

bp = Blueprint("staff", __name__, url_prefix="/api")
STAFF, DEVICE = "staff", "device"


@dataclass(frozen=True)
class Endpoint:
    """One operation of the staff API, as served and as documented."""

    name: str
    method: str
    rule: str  # Flask rule under /api: "/residents/<rid>"
    summary: str
    tag: str
    who: str = STAFF  # STAFF: a staff member's token; DEVICE: a device client's
    query: type[Schema] | None = None
    body: type[Schema] | None = None
    answer: type[Schema] | None = None
    status: int = 200
    writes: bool = False
    etag: bool = False  # the answer carries an ETag
    if_match: bool = False  # takes If-Match
    description: str = ""
    produces: str = "application/json"  # the success answer's content type: another one's body is bytes (a PDF)


ENDPOINTS: list[Endpoint] = []


@dataclass
class Use:
    """What a use case gets from the edge: checked input, and the request's record, session, actor and clock."""

    record: Record
    session: Session
    actor: Actor
    now: datetime
    settings: Settings
    query: dict[str, Any]
    body: dict[str, Any]
    if_match: str | None
    patients: set[str] = field(default_factory=set)  # residents read outside FHIR (alerts), for the audit trail


@dataclass
class Answer:
    body: Any
    status: int = 200
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"  # another type: ``body`` is the bytes to serve


def endpoint(method: str, rule: str, *, name: str, summary: str, tag: str, **options: Any) -> Callable[
        [Callable[..., Answer]], Callable[..., Answer]]:
    """Declare an endpoint served by ``handler(use, **path)``."""

    def register(handler: Callable[..., Answer]) -> Callable[..., Answer]:
        declared = Endpoint(name, method, rule, summary, tag, description=(handler.__doc__ or "").strip(), **options)
        ENDPOINTS.append(declared)

        def view(**path: str) -> Response:
            return serve(declared, handler, path)

        bp.add_url_rule(rule, name, view, methods=[method])
        return handler

    return register


def serve(declared: Endpoint, handler: Callable[..., Answer], path: dict[str, str]) -> Response:
    svc = services()
    actor = caller(declared.who)
    query = load(declared.query, _query_args(), "query") if declared.query else {}
    body = load(declared.body, _json_body(), "body") if declared.body else {}
    where = (request.remote_addr, g.get("request_id"))
    context: dict[str, Any] = {}
    try:
        for attempt in (1, 2):  # a read the replica failed is run once more, on the primary (dui.web.context)
            try:
                with unit_of_work(write=declared.writes) as session:
                    ctx = svc.fhir_context(session, work_actor(actor))
                    use = Use(Record(ctx), session, actor, svc.clock(), svc.settings, query, body,
                              request.headers.get("If-Match"))
                    context["use"] = use
                    answer = budget.run(svc.settings.request_budget, partial(handler, use, **path))
                    calls = [(c.route, c.result) for c in use.record.calls]
                    if declared.writes:  # a read's entry: committed with other threads' (dui.audit.writer)
                        audit.record_api(session, svc, svc.clock(), actor, declared.name, calls, answer.status,
                                         where, use.patients)
                break
            except Exception:
                if declared.writes or attempt == 2 or not g.pop("replica_failed", False):
                    raise
        if not declared.writes and not g.get("audit_recorded"):
            audit.record_api_read(svc, actor, declared.name, calls, answer.status, where, use.patients)
    except Exception as exc:
        status, _, patients = audit.refusal_of(exc)
        started: Use | None = context.get("use")
        audit.record_api_refusal(svc, actor, declared.name, started.record.refused if started else None, status,
                                 patients, where)
        raise
    return respond(answer)


def caller(who: str) -> Actor:
    """The request's actor, if it may call an endpoint for ``who``."""
    actor = current_actor()
    if who == DEVICE:
        if actor.kind != "device":
            raise Forbidden("Only a device client (dui clients create --device) posts sensor events")
        return actor
    if actor.kind == "anonymous":
        raise Unauthorized("The staff API needs a staff member's access token (Authorization: Bearer ...)",
                           headers={"WWW-Authenticate": 'Bearer realm="dui"'})
    if actor.kind != "staff":
        raise Forbidden("The staff API serves staff members; systems and partners use /fhir")
    if not actor.establishment:
        raise Forbidden("The staff API serves the staff of an establishment")
    return actor


def work_actor(actor: Actor) -> Actor:
    """The actor the use case's FHIR interactions run as (a device's: ``dui.staff.alerts.working_actor``)."""
    if actor.kind == "device":
        from dui.staff.alerts import working_actor
        return working_actor(actor)
    return actor


def load(schema: type[Schema], data: Any, where: str) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema().load(data)
    except ValidationError as exc:
        raise SchemaRefusal(problems.validation_problem(exc.messages, where)) from None
    return loaded


class SchemaRefusal(DuiError):
    """422: what a schema refused; rendered as its problem document (``problem``)."""

    status = 422
    code = "validation"

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(problem["detail"])
        self.problem = problem


def respond(answer: Answer) -> Response:
    if isinstance(answer.body, bytes):
        payload = answer.body
    else:
        payload = b"" if answer.body is None else orjson.dumps(answer.body)
    response = Response(payload, status=answer.status, content_type=answer.content_type)
    if not payload:
        del response.headers["Content-Type"]
    if answer.etag:
        response.headers["ETag"] = answer.etag
    for key, value in answer.headers.items():
        response.headers[key] = value
    return response


def _query_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for key, value in request.args.items(multi=True):
        if key in args:
            raise SchemaRefusal(problems.validation_problem({key: ["Given more than once."]}, "query"))
        args[key] = value
    return args


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the request body as application/json")
    data = request.get_data(cache=True)
    if not data:
        raise Invalid("The request has no body; a JSON object was expected")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Invalid("The request body is not valid JSON") from None
