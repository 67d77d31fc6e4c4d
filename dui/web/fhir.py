"""The /fhir blueprint: HTTP <-> ``FhirRequest``/``FhirResponse``; the FHIR logic is in ``dui.fhir``.

Each request is routed once (``dui.fhir.router.route``): the same ``Route`` is authorized, run and recorded in
the audit trail, whatever the outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import orjson
from flask import Blueprint, Response, g, request
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from dui.auth.actor import ANONYMOUS, Actor
from dui.errors import Invalid, NotAcceptable, TooLarge
from dui.fhir import jsontext, router, xmlwriter
from dui.fhir.authorization import BREAK_GLASS
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse
from dui.fhir.xml import parse_xml
from dui.services import Services
from dui.web import audit, budget
from dui.web.context import current_actor, retry_on_primary, services, unit_of_work

bp = Blueprint("fhir", __name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"
PLAIN_JSON = "application/json; charset=utf-8"  # the same FHIR JSON, for a client that asks for application/json
FHIR_XML = "application/fhir+xml; charset=utf-8"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
_XML_FORMATS = {"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"}
# The media types an XML answer is labelled with: as the client asked, FHIR XML for the FHIR names.
_XML_ANSWERS = {"application/xml": "application/xml; charset=utf-8", "text/xml": "text/xml; charset=utf-8"}
# Request bodies read as FHIR XML (and converted once to FHIR JSON): ``application/xml-patch+xml`` is a patch.
XML_BODIES = frozenset({"application/fhir+xml", "application/xml+fhir", "application/xml", "text/xml"})
# What a Binary read or an export file looks at in Accept: a FHIR format only, else it answers as itself.
_FHIR_NAMED = {"application/fhir+json", "application/json+fhir", "application/fhir+xml", "application/xml+fhir"}
_ACCEPTABLE = (_JSON_FORMATS | _XML_FORMATS | {"*/*", "application/*"}) - {"json", "xml"}  # in Accept


@bp.route("/fhir", methods=METHODS, defaults={"path": ""}, strict_slashes=False)
@bp.route("/fhir/<path:path>", methods=METHODS)
def dispatch(path: str) -> Response:
    svc = services()
    req = FhirRequest(request.method, path, tuple(request.args.items(multi=True)),
                      {k.lower(): v for k, v in request.headers.items()})
    routed = router.shape(req)  # what is asked, from the method and path alone: until the full route is known
    actor: Actor = ANONYMOUS
    try:
        # A Binary read answers in the Binary's own type, an export file in NDJSON, whatever Accept asks
        native = (routed.rtype == "Binary" and routed.interaction in ("read", "vread")) or (
            routed.interaction == "operation" and routed.operation == "$export-file")
        answered_as = _check_format(native=native)
        g.fhir_answered_as = answered_as  # errors are answered in it too (dui.web.errors)
        actor = current_actor()
        req = FhirRequest(req.method, req.path, req.query, req.headers, request.get_data(cache=False) or None)
        if is_xml_body(req.headers.get("content-type")):
            req = _from_xml(svc, req)
        routed, result = _serve(svc, actor, req, routed)
    except Exception as exc:
        status, category, patients = audit.refusal_of(exc)
        audit.record_refusal(svc, actor, routed, status, category, patients, _where())
        audit.mark_recorded()
        raise
    return _to_flask(result, answered_as)


def _serve(svc: Services, actor: Actor, req: FhirRequest,
           asked: router.Route) -> tuple[router.Route, FhirResponse]:
    """Route, authorize, run and record ``req`` in its unit of work (``asked``: its shape, read from the method and
    path); a read whose pooled connection died with a database restart, or that the read replica failed, is run
    once more (on the primary, for the replica's)."""
    writes = asked.writes
    glass = req.header(BREAK_GLASS)
    for attempt in (1, 2):
        seq = None
        try:
            with unit_of_work(write=writes) as session:
                ctx = svc.fhir_context(session, actor, glass)
                # Stopped with 503 RequestStopped past DUI_REQUEST_BUDGET (dui.web.budget); rolled back, recorded.
                routed, result = budget.run(svc.settings.request_budget, _routed, ctx, req, asked)
                # A write and its audit entry commit together; a read's entry is committed with other threads'
                # (dui.audit.writer) once its unit of work has ended, before the answer is sent.
                if writes:
                    seq = audit.record_fhir(session, svc, svc.clock(), actor, req, routed, result, _where())
            break
        except Exception as exc:
            if seq is not None and writes:  # recorded, then the commit failed: the entry went with it
                audit.void_lost(svc, seq, g.get("request_id"))
            if writes or not retry_on_primary(exc) or attempt == 2:
                raise
    if not writes and not g.get("audit_recorded"):
        audit.record_fhir_read(svc, actor, req, routed, result, _where())
    return routed, _encoded(result)


def _routed(ctx: FhirContext, req: FhirRequest, asked: router.Route) -> tuple[router.Route, FhirResponse]:
    routed = router.route(ctx, req, asked)
    return routed, router.handle(ctx, req, routed)


def is_xml_body(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() in XML_BODIES


def _from_xml(svc: Services, req: FhirRequest) -> FhirRequest:
    """The request with its FHIR XML body read once into FHIR JSON text (what the interactions take and the store
    keeps); ``Invalid`` (400) or ``TooLarge`` (413) for XML refused by ``dui.fhir.xmlsafe`` or not FHIR R4."""
    parameters = (req.headers.get("content-type") or "").partition(";")[2]
    headers = dict(req.headers)
    headers["content-type"] = "application/fhir+json" + (";" + parameters if parameters else "")
    body = None
    if req.body:
        limits = svc.settings.limits
        resource = parse_xml(req.body, max_bytes=limits.max_request_bytes)
        try:
            jsontext.check_depth(resource, limits.max_json_depth)  # what the interactions will apply to the JSON
        except TooLarge:
            raise TooLarge(f"The XML body, read as FHIR JSON, nests objects and arrays deeper than "
                           f"{limits.max_json_depth} levels (DUI_MAX_JSON_DEPTH)") from None
        body = jsontext.dump(resource)
    return FhirRequest(req.method, req.path, req.query, headers, body)


def is_xml_answer(answered_as: str) -> bool:
    return "xml" in answered_as


def as_xml(payload: bytes, pretty: bool = False) -> bytes:
    """A FHIR JSON answer (a resource, a Bundle, an OperationOutcome) as FHIR XML; ``NotAcceptable`` for the rare
    content XML cannot carry (a control character in a string): it can be read as JSON."""
    try:
        return xmlwriter.resource_to_bytes(jsontext.parse(payload, max_depth=10_000, stored=True), pretty=pretty)
    except Invalid as exc:
        raise NotAcceptable(f"{exc.message}; ask for application/fhir+json") from None


def _encoded(result: FhirResponse) -> FhirResponse:
    if isinstance(result.body, dict):
        result.body = jsontext.dump(result.body)
    return result


def _where() -> tuple[str | None, str | None]:
    return request.remote_addr, g.get("request_id")


def _check_format(native: bool = False) -> str:
    """The media type of the answer: FHIR JSON or FHIR XML, named as the client asked (``_format`` first, else
    ``Accept``, best quality first); 406 for anything else, a ``fhirVersion`` other than 4.0 included. ``native``: a
    Binary read or an export file, which answers in its own content type unless a FHIR format is asked for
    (``dui.fhir.interactions.read.wants_native``): then only the FHIR names in ``Accept`` count."""
    return _negotiated(request.args.get("_format"), request.headers.get("Accept"), native)


@functools.lru_cache(maxsize=512)  # a client sends the same Accept every time; a refusal is not kept
def _negotiated(fmt: str | None, accept_header: str | None, native: bool) -> str:
    if fmt is not None:
        if fmt.split(";")[0].strip().lower() not in _JSON_FORMATS | _XML_FORMATS:
            raise NotAcceptable(f"_format={fmt[:80]} is not available; this server answers FHIR JSON (json) and "
                                "FHIR XML (xml)")
        return _answered_as(fmt)
    if not accept_header:
        return FHIR_JSON
    accept = parse_accept_header(accept_header, MIMEAccept)
    acceptable = _FHIR_NAMED if native else _ACCEPTABLE
    other_version = None
    for value, quality in accept:  # best quality first
        if quality <= 0 or value.split(";")[0].strip().lower() not in acceptable:
            continue
        version = _parameter(value, "fhirversion")
        if version is not None and version not in ("4.0", "4.0.1"):
            other_version = version
            continue
        return _answered_as(value)
    if native:
        return FHIR_JSON
    if other_version is not None:
        raise NotAcceptable(f"fhirVersion {other_version} cannot be served; this server speaks FHIR 4.0.1 "
                            "(fhirVersion=4.0)")
    raise NotAcceptable(f"Accept: {accept_header[:200]} cannot be served; this server answers "
                        "application/fhir+json and application/fhir+xml (FHIR 4.0.1)")


def _answered_as(asked: str) -> str:
    kind = asked.split(";")[0].strip().lower()
    if kind in _XML_FORMATS:
        return _XML_ANSWERS.get(kind, FHIR_XML)
    return PLAIN_JSON if kind == "application/json" else FHIR_JSON


def _parameter(media_type: str, name: str) -> str | None:
    for part in media_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def _to_flask(result: FhirResponse, answered_as: str = FHIR_JSON) -> Response:
    body = result.body
    if isinstance(body, Iterator):  # streamed (an export file): never held whole
        streamed = Response(body if request.method != "HEAD" else iter(()), status=result.status,
                            content_type=result.content_type or answered_as, direct_passthrough=True)
        for key, value in result.headers.items():
            streamed.headers[key] = value
        return streamed
    if body is None or result.status in (204, 304):
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    else:
        payload = jsontext.dump(body)
    if payload and result.content_type is None and is_xml_answer(answered_as):
        payload = as_xml(payload, pretty=request.args.get("_pretty") == "true")
    elif payload and request.args.get("_pretty") == "true" and result.content_type is None:
        payload = orjson.dumps(jsontext.parse(payload, max_depth=10_000, stored=True), option=orjson.OPT_INDENT_2,
                               default=jsontext.fragment_default)
    # Every header at once (setting them one by one reads all those already set, each time)
    headers = [("Content-Type", result.content_type or answered_as)] if payload else []
    headers.extend(result.headers.items())
    response = Response(payload, status=result.status, headers=headers)
    if not payload:  # no body, no type (Flask would say text/html)
        del response.headers["Content-Type"]
    if request.method == "HEAD":
        response.set_data(b"")
    return response
