"""A small evaluator of FHIR TestScripts (R4/R5 JSON) against the app, through Flask's test client.

Each ``setup``, ``test`` and ``teardown`` action runs in order: an ``operation`` sends its request (the URL made of
``resource`` and ``params``, or ``url``; ``requestHeader``, ``accept``, ``contentType``; the method from ``method``
or the operation's type), an ``assert`` checks the last response. Every assert element is checked: the response code,
a header, the content type, the resource type, the response (``okay``, ``created``...), the body against a regular
expression (``responseBody``), a FHIRPath ``expression`` on the body. An element this evaluator cannot check fails
the script with its name rather than being skipped: a script passes only when every one of its asserts was evaluated
and held. Fixtures, variables and rules are not supported (a script that uses them fails, saying so).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dui.fhir.fhirpath import compile_fhirpath

MIME = {"json": "application/fhir+json", "xml": "application/fhir+xml", "ttl": "text/turtle", "none": None}
METHODS = {"read": "GET", "vread": "GET", "search": "GET", "history": "GET", "capabilities": "GET",
           "create": "POST", "update": "PUT", "updateCreate": "PUT", "patch": "PATCH", "delete": "DELETE",
           "transaction": "POST", "batch": "POST", "validate": "POST"}
RESPONSES = {"okay": 200, "created": 201, "noContent": 204, "notModified": 304, "bad": 400, "forbidden": 403,
             "notFound": 404, "methodNotAllowed": 405, "conflict": 409, "gone": 410, "preconditionFailed": 412,
             "unprocessable": 422}
CHECKED = ("responseCode", "headerField", "contentType", "resource", "response", "responseBody", "expression")
NOT_CHECKS = frozenset({"id", "extension", "modifierExtension", "label", "description", "direction", "operator",
                        "value", "warningOnly", "stopTestOnFail", "sourceId"})
UNSUPPORTED = ("fixture", "variable", "rule", "ruleset", "profile")


@dataclass
class Result:
    name: str
    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run(web: FlaskClient, script: dict[str, Any], base: str = "/fhir") -> Result:
    result = Result(script.get("name") or script.get("id") or "TestScript")
    for key in UNSUPPORTED:
        if script.get(key):
            result.failures.append(f"{key} is not supported by this evaluator")
    if result.failures:
        return result
    sections = [("setup", script.get("setup") or {}), *((f"test {t.get('id', i)}", t)
                                                        for i, t in enumerate(script.get("test") or [])),
                ("teardown", script.get("teardown") or {})]
    for where, section in sections:
        last: TestResponse | None = None
        for number, action in enumerate(section.get("action") or []):
            label = f"{where} action {number + 1}"
            if "operation" in action:
                try:
                    last = _send(web, action["operation"], base)
                except ValueError as exc:
                    result.failures.append(f"{label}: {exc}")
                    break
            elif "assert" in action:
                verdict = _check(action["assert"], last)
                name = action["assert"].get("label") or label
                (result.failures if verdict else result.passed).append(f"{name}: {verdict}" if verdict else name)
            else:
                result.failures.append(f"{label}: neither an operation nor an assert")
    return result


def _send(web: FlaskClient, operation: dict[str, Any], base: str) -> TestResponse:
    code = (operation.get("type") or {}).get("code")
    method = (operation.get("method") or METHODS.get(code or "") or "").upper()
    if not method:
        raise ValueError(f"no method for the operation type {code!r}")
    if operation.get("url"):
        url = operation["url"]
    elif code == "capabilities":
        url = f"{base}/metadata"
    else:
        url = base + (f"/{operation['resource']}" if operation.get("resource") else "")
        params = operation.get("params") or ""
        if params and params[0] not in "/?":
            params = "/" + params
        url += params
    if operation.get("sourceId") or operation.get("targetId") or operation.get("responseId"):
        raise ValueError("fixtures (sourceId, targetId, responseId) are not supported by this evaluator")
    headers = {h["field"]: h["value"] for h in operation.get("requestHeader") or []}
    if operation.get("accept"):
        accept = MIME.get(operation["accept"], operation["accept"])
        if accept:
            headers.setdefault("Accept", accept)
    if operation.get("contentType"):
        content_type = MIME.get(operation["contentType"], operation["contentType"])
        if content_type:
            headers.setdefault("Content-Type", content_type)
    return web.open(url, method=method, headers=headers)


def _check(assertion: dict[str, Any], response: TestResponse | None) -> str:
    """'' when the assert holds, else why not."""
    if response is None:
        return "no operation before this assert"
    unknown = sorted(k for k in assertion if k not in CHECKED and k not in NOT_CHECKS)
    if unknown:
        return f"cannot evaluate {', '.join(unknown)}"
    checked = [k for k in CHECKED if k in assertion]
    if not checked:
        return "the assert checks nothing this evaluator knows"
    operator = assertion.get("operator", "equals")
    for key in checked:
        problem = _one(key, assertion, operator, response)
        if problem:
            return problem
    return ""


def _one(key: str, assertion: dict[str, Any], operator: str, response: TestResponse) -> str:
    if key == "responseCode":
        expected = str(assertion["responseCode"])
        return _compare(str(response.status_code), operator, expected, "response code")
    if key == "response":
        wanted = RESPONSES.get(assertion["response"])
        if wanted is None:
            return f"cannot evaluate response {assertion['response']!r}"
        return _compare(str(response.status_code), operator, str(wanted), "response")
    if key == "headerField":
        value = response.headers.get(assertion["headerField"])
        return _compare(value, operator, assertion.get("value"), f"header {assertion['headerField']}")
    if key == "contentType":
        expected = MIME.get(assertion["contentType"], assertion["contentType"]) or ""
        actual = (response.content_type or "").split(";")[0].strip()
        return _compare(actual, operator if operator != "equals" else "equals", expected, "content type")
    body_text = response.get_data(as_text=True)
    if key == "responseBody":
        return _compare(body_text, operator, assertion["responseBody"], "response body")
    try:
        body = json.loads(body_text)
    except ValueError:
        return f"{key}: the response body is not JSON"
    if key == "resource":
        return _compare(body.get("resourceType") if isinstance(body, dict) else None, operator,
                        assertion["resource"], "resource type")
    found = compile_fhirpath(assertion["expression"])(body)
    if "value" not in assertion and operator == "equals":
        return "" if (found and all(v is True for v in found)) or (found and found != [False]) else \
            f"expression {assertion['expression']!r} is {found!r}"
    return _compare(",".join(str(v) for v in found) if found else None, operator, assertion.get("value"),
                    f"expression {assertion['expression']!r}")


def _compare(actual: str | None, operator: str, expected: str | None, what: str) -> str:
    holds: bool
    if operator == "empty":
        holds = not actual
    elif operator == "notEmpty":
        holds = bool(actual)
    elif expected is None:
        return f"{what}: operator {operator} needs a value"
    elif operator == "equals":
        holds = actual == expected
    elif operator == "notEquals":
        holds = actual != expected
    elif operator == "in":
        holds = actual in expected.split(",")
    elif operator == "notIn":
        holds = actual not in expected.split(",")
    elif operator == "contains":
        holds = actual is not None and expected in actual
    elif operator == "notContains":
        holds = actual is None or expected not in actual
    elif operator == "matchesRegex":
        holds = actual is not None and re.search(expected, actual) is not None
    elif operator in ("greaterThan", "lessThan"):
        try:
            a, b = float(actual or ""), float(expected)
        except ValueError:
            return f"{what}: {operator} compares numbers"
        holds = a > b if operator == "greaterThan" else a < b
    else:
        return f"{what}: cannot evaluate the operator {operator!r}"
    shown = (actual or "")[:120]
    return "" if holds else f"{what} {shown!r} does not satisfy {operator} {expected!r}"
