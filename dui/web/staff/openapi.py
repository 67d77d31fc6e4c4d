"""The staff API's OpenAPI 3.1 document, generated from the endpoint table (``dui.web.staff.edge.ENDPOINTS``) and
its marshmallow schemas (apispec): every operation served is described, and nothing else."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from dui import __version__
from dui.web.staff import schemas
from dui.web.staff.edge import DEVICE, ENDPOINTS, Endpoint
from dui.web.staff.problems import PROBLEM_JSON

ERRORS = {
    "400": "The request cannot be read (bad JSON, a malformed id or cursor)",
    "401": "No valid access token",
    "403": "The caller's role or token may not do this",
    "404": "No such resident or item, or not one the caller may see",
    "415": "The body is not application/json",
    "422": "A field is not valid, or a rule of the record refuses the request",
    "429": "Too many requests",
    "503": "The request ran too long or the database is unavailable; retry",
}
ID_PATTERN = "^[A-Za-z0-9\\-.]{1,64}$"
_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


@cache
def document() -> dict[str, Any]:
    spec = APISpec(title="DUI staff API", version=__version__, openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin()], info={
                       "description": "Task-shaped JSON for the EHPAD's integrated client. The same records, rules, "
                                      "authorization and audit as the FHIR API at /fhir. Errors are RFC 9457 problem "
                                      "details naming the field at fault, in English and French."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Problem", schema=schemas.Problem)
    for declared in ENDPOINTS:
        path = "/api" + _PARAM.sub(r"{\1}", declared.rule)
        spec.path(path=path, operations={declared.method.lower(): _operation(declared)})
    spec.path(path="/api/alerts/stream", operations={"get": {
        "operationId": "alerts-stream", "tags": ["Alerts"], "summary": "Alerts as they happen (Server-Sent Events)",
        "description": "text/event-stream: `id` the event number, `event` raised, merged, acknowledged or "
                       "escalated, `data` the alert. Reconnect with Last-Event-ID to get what was missed.",
        "security": [{"bearer": []}],
        "parameters": [{"in": "query", "name": "unit", "schema": {"type": "string"}, "required": False},
                       {"in": "header", "name": "Last-Event-ID", "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        "required": False}],
        "responses": {"200": {"description": "The stream", "content": {"text/event-stream": {
            "schema": {"type": "string"}}}}, **_errors(("401", "403", "422"))}}})
    return spec.to_dict()


def _operation(declared: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": declared.name, "tags": [declared.tag], "summary": declared.summary,
                                 "security": [{"bearer": []}], "responses": {}}
    if declared.description:
        operation["description"] = declared.description
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        for name in _PARAM.findall(declared.rule)]
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})
    if declared.if_match:
        parameters.append({"in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
                           "description": "The ETag read: refused with 412 if the item changed since"})
    if parameters:
        operation["parameters"] = parameters
    if declared.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": declared.body}}}
    success: dict[str, Any] = {"description": "Done" if declared.writes else "Found"}
    if declared.produces != "application/json":
        success["content"] = {declared.produces: {"schema": {"type": "string", "format": "binary"}}}
    elif declared.answer is not None:
        success["content"] = {"application/json": {"schema": declared.answer}}
    if declared.etag:
        success["headers"] = {"ETag": {"schema": {"type": "string"}, "description": "The item's version"}}
    operation["responses"][str(declared.status)] = success
    if declared.who == DEVICE and declared.answer is not None:  # merged into an existing alert
        operation["responses"]["200"] = {"description": "Joined an open alert",
                                         "content": {"application/json": {"schema": declared.answer}}}
    codes = ["400", "401", "403", "404", "422", "429", "503"]
    if declared.body is not None:
        codes.append("415")
    if declared.if_match:
        codes.append("412")
    if declared.writes:
        codes.append("409")
    operation["responses"].update(_errors(codes))
    return operation


def _errors(codes: Any) -> dict[str, Any]:
    text = {**ERRORS, "409": "The item changed meanwhile", "412": "If-Match does not match the item's version"}
    return {code: {"description": text[code], "content": {PROBLEM_JSON: {"schema": {"$ref":
                                                                                     "#/components/schemas/Problem"}}}}
            for code in sorted(codes)}
