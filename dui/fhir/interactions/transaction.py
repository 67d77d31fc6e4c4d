"""transaction and batch Bundles: http://hl7.org/fhir/R4/http.html#transaction.

Transaction: all or nothing, in one database transaction. Before anything is written, every entry
is checked, conditional creates and conditional updates are resolved (under the same locks as their
single-request forms), ids are assigned to new resources, and every reference is rewritten: to a
``fullUrl`` of the bundle (``urn:uuid:...`` or any other), or, for a conditional reference such as
``Patient?identifier=...``, to the one resource it matches. Entries then run in the order the spec
prescribes: DELETE, POST, PUT and PATCH, then GET and HEAD. Any failure rolls everything back and
answers one OperationOutcome naming the entry.

Batch: each entry on its own, in a savepoint; a failed entry gets its own status and outcome.

Each entry goes through the same router as an HTTP request, so it behaves exactly like one.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from dui.errors import DuiError, Invalid, Issue, PreconditionFailed, TooLarge
from dui.fhir import jsontext
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    criteria_pairs,
    lock_key,
    matching_rids,
    parse_body,
)
from dui.fhir.interactions.bundles import bundle
from dui.fhir.outcomes import error_outcome
from dui.fhir.repository import ResourceVersion
from dui.fhir.sql import format_instant

Dispatch = Callable[[FhirContext, FhirRequest], FhirResponse]
Preflight = Callable[[FhirContext, FhirRequest], None]  # routes and authorizes a request without running it
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
ENTRY_HEADERS = {"ifMatch": "if-match", "ifNoneMatch": "if-none-match", "ifNoneExist": "if-none-exist",
                 "ifModifiedSince": "if-modified-since"}
FORWARDED_HEADERS = tuple(ENTRY_HEADERS.values())


@dataclass
class Entry:
    index: int
    method: str
    path: str
    query: list[tuple[str, str]]
    full_url: str | None
    resource: dict[str, Any] | None
    headers: dict[str, str]
    assigned_id: str | None = None
    existing: FhirResponse | None = None  # a conditional create that matched
    issues: list[Issue] = field(default_factory=list)

    @property
    def where(self) -> str:
        url = self.path + ("?" + "&".join(f"{k}={v}" for k, v in self.query) if self.query else "")
        return f"Bundle.entry[{self.index}] ({self.method} {url})"

    @property
    def rtype(self) -> str:
        return self.path.split("/")[0]


def process_bundle(ctx: FhirContext, req: FhirRequest, dispatch: Dispatch, preflight: Preflight) -> FhirResponse:
    """POST to the base: run a transaction or a batch Bundle. Every entry of a transaction is routed and
    authorized (``preflight``) before any of them is looked up or written."""
    content = parse_body(ctx, req)
    if not isinstance(content, dict) or content.get("resourceType") != "Bundle":
        raise Invalid("POST to the FHIR base takes a Bundle of type transaction or batch")
    for rule in ctx.bundle_rules:  # e.g. a TDDUI transfer, checked and normalised by dui.tddui
        content = rule(ctx, content)
    kind = content.get("type")
    if kind not in ("transaction", "batch"):
        raise Invalid(f"POST to the FHIR base takes a transaction or batch Bundle, not type {kind!r}",
                      expression="Bundle.type")
    raw_entries = content.get("entry") or []
    if not isinstance(raw_entries, list):
        raise Invalid("Bundle.entry must be an array", expression="Bundle.entry")
    limit = ctx.settings.limits.max_bundle_entries
    if len(raw_entries) > limit:
        raise TooLarge(f"The Bundle has {len(raw_entries)} entries; this server takes at most {limit} "
                       "(DUI_MAX_BUNDLE_ENTRIES)")
    entries = [_entry(ctx, i, raw) for i, raw in enumerate(raw_entries)]
    if kind == "batch":
        return _batch(ctx, req, entries, dispatch)
    return _transaction(ctx, req, entries, dispatch, preflight)


# -- reading entries ------------------------------------------------------------------------------


def _entry(ctx: FhirContext, index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    entry = Entry(index, "GET", "", [], None, None, {})
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        entry.issues.append(Issue(f"{where}: an entry needs a request (method and url)", "required",
                                  expression=(f"{where}.request",)))
        return entry
    request = raw["request"]
    method, url = request.get("method"), request.get("url")
    if method not in METHODS or not isinstance(url, str) or not url:
        entry.issues.append(Issue(f"{where}.request: method must be one of {', '.join(METHODS)} and url is "
                                  "required", "required", expression=(f"{where}.request",)))
        return entry
    entry.method = method
    if url.startswith(ctx.base + "/"):
        url = url[len(ctx.base) + 1:]
    path, _, query = url.partition("?")
    entry.path = path.strip("/")
    entry.query = parse_qsl(query, keep_blank_values=True)
    entry.full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    for name, header in ENTRY_HEADERS.items():
        if isinstance(request.get(name), str):
            entry.headers[header] = request[name]
    resource = raw.get("resource")
    if method in ("POST", "PUT", "PATCH"):
        if not isinstance(resource, dict):
            entry.issues.append(Issue(f"{where}: a {method} entry needs a resource", "required",
                                      expression=(f"{where}.resource",)))
            return entry
        entry.resource = resource
        for issue in ctx.validator.issues(resource):
            entry.issues.append(Issue(f"{where}.resource: {issue.diagnostics}", issue.code,
                                      expression=tuple(f"{where}.resource.{e}" for e in issue.expression)))
    return entry


# -- transaction ----------------------------------------------------------------------------------


def _transaction(ctx: FhirContext, req: FhirRequest, entries: list[Entry], dispatch: Dispatch,
                 preflight: Preflight) -> FhirResponse:
    problems = [issue for e in entries for issue in e.issues]
    if problems:
        raise Invalid(f"The transaction has {len(problems)} problem(s); nothing was written",
                      issues=problems, code="invalid")
    for entry in entries:
        try:
            preflight(ctx, _sub_request(req, entry))
        except DuiError as err:
            raise _at(err, entry) from None
    mapping = _resolve_identities(ctx, entries)
    _check_targets(entries)
    for entry in entries:
        if entry.resource is not None:
            try:
                _rewrite_references(ctx, entry.resource, mapping, _server_base(entry.full_url))
            except DuiError as err:
                raise _at(err, entry) from None
    responses: list[dict[str, Any] | None] = [None] * len(entries)
    touched: list[ResourceVersion] = []
    for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
        if entry.existing is not None:
            responses[entry.index] = _response_entry(ctx, entry.existing)
            touched += entry.existing.versions()
            continue
        try:
            result = dispatch(ctx, _sub_request(req, entry))
        except DuiError as err:
            raise _at(err, entry) from None
        responses[entry.index] = _response_entry(ctx, result)
        touched += result.versions()
    return FhirResponse(200, bundle("transaction-response", ctx.clock(), [r for r in responses if r], []),
                        touched=touched)


def _resolve_identities(ctx: FhirContext, entries: list[Entry]) -> dict[str, str]:
    """fullUrl -> Type/id for every entry that creates, updates or matches a resource."""
    mapping: dict[str, str] = {}
    seen_full_urls: set[str] = set()
    for entry in entries:
        if entry.full_url:
            if entry.full_url in seen_full_urls and entry.method in ("POST", "PUT"):
                raise Invalid(f"{entry.where}: fullUrl {entry.full_url} appears twice in the bundle")
            seen_full_urls.add(entry.full_url)
        try:
            reference = _identity(ctx, entry)
        except DuiError as err:
            raise _at(err, entry) from None
        if reference and entry.full_url:
            mapping[entry.full_url] = reference
        if reference and entry.method in ("POST", "PUT") and entry.existing is None:
            ctx.planned.add(reference)  # created by this transaction: its other entries may refer to it
    return mapping


def _identity(ctx: FhirContext, entry: Entry) -> str | None:
    segments = entry.path.split("/")
    if entry.method == "POST" and len(segments) == 1:
        criteria = entry.headers.get("if-none-exist")
        if criteria:
            plan = ctx.criteria_plan(entry.rtype, criteria_pairs(criteria))
            ctx.repo.lock(lock_key(entry.rtype, plan.kept))
            matches = matching_rids(ctx, plan)
            if len(matches) > 1:
                raise PreconditionFailed(f"If-None-Exist: several {entry.rtype} resources match '{criteria}'",
                                         code="multiple-matches")
            if matches:
                found = ctx.repo.fetch(matches)[0]
                entry.existing = FhirResponse(200, found.body, {}, found)
                return found.reference
        entry.assigned_id = str(uuid.uuid4())
        return f"{entry.rtype}/{entry.assigned_id}"
    if entry.method == "PUT" and len(segments) == 2:
        return entry.path
    if entry.method == "PUT" and len(segments) == 1 and entry.query:
        plan = ctx.criteria_plan(entry.rtype, list(entry.query))
        ctx.repo.lock(lock_key(entry.rtype, plan.kept))
        matches = matching_rids(ctx, plan)
        if len(matches) > 1:
            raise PreconditionFailed(f"Conditional update: several {entry.rtype} resources match",
                                     code="multiple-matches")
        if matches:
            target_id = ctx.repo.fetch(matches)[0].id
        else:
            body_id = (entry.resource or {}).get("id")
            target_id = body_id if isinstance(body_id, str) else str(uuid.uuid4())
        if entry.resource is not None:
            entry.resource["id"] = target_id
        entry.path, entry.query = f"{entry.rtype}/{target_id}", []
        return entry.path
    return None


def _check_targets(entries: list[Entry]) -> None:
    """Two entries may not write the same resource (http.html#trules)."""
    written: dict[str, int] = {}
    for entry in entries:
        if entry.method in ("PUT", "PATCH", "DELETE") and entry.path.count("/") == 1:
            if entry.path in written:
                raise Invalid(f"{entry.where}: {entry.path} is also changed by Bundle.entry[{written[entry.path]}]; "
                              "a transaction may change a resource once")
            written[entry.path] = entry.index


def _rewrite_references(ctx: FhirContext, node: Any, mapping: dict[str, str], base: str | None) -> None:
    if isinstance(node, list):
        for item in node:
            _rewrite_references(ctx, item, mapping, base)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "reference" and isinstance(value, str):
            node[key] = _resolve_reference(ctx, value, mapping, base)
        elif isinstance(value, dict | list):
            _rewrite_references(ctx, value, mapping, base)


def _server_base(full_url: str | None) -> str | None:
    """``https://a.fr/fhir/`` of ``https://a.fr/fhir/Encounter/x``: where a relative reference in that entry
    points (http://hl7.org/fhir/R4/bundle.html#references); None for a urn or a fullUrl of another form."""
    if not full_url or not full_url.startswith(("http://", "https://")):
        return None
    parts = full_url.rstrip("/").split("/")
    return "/".join(parts[:-2]) + "/" if len(parts) >= 5 else None


def _resolve_reference(ctx: FhirContext, value: str, mapping: dict[str, str], base: str | None) -> str:
    if value in mapping:
        return mapping[value]
    if base is not None and base + value in mapping:  # Patient/x inside https://a.fr/fhir/Encounter/y
        return mapping[base + value]
    if value.startswith(("urn:uuid:", "urn:oid:")):
        raise Invalid(f"The reference {value} matches no fullUrl in the bundle")
    head, sep, query = value.partition("?")
    if sep and head and head[0].isupper() and "/" not in head:
        matches = matching_rids(ctx, ctx.criteria_plan(head, criteria_pairs(query)))
        if len(matches) != 1:
            raise PreconditionFailed(
                f"The conditional reference {value} matches {'no' if not matches else 'several'} {head} "
                "resources; it must match exactly one", code="multiple-matches" if matches else "not-found")
        return ctx.repo.fetch(matches)[0].reference
    return value


def _sub_request(req: FhirRequest, entry: Entry) -> FhirRequest:
    headers = {k: v for k, v in entry.headers.items() if k in FORWARDED_HEADERS}
    if "prefer" in req.headers:
        headers["prefer"] = req.headers["prefer"]
    body = None
    resource = entry.resource
    if entry.method == "PATCH" and resource is not None and resource.get("resourceType") == "Binary":
        headers["content-type"] = str(resource.get("contentType", ""))
        try:
            body = base64.b64decode(str(resource.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(f"{entry.where}: the Binary holding the JSON Patch is not valid base64") from None
        resource = None
    elif resource is not None:
        headers["content-type"] = "application/fhir+json"
    return FhirRequest(entry.method, entry.path, tuple(entry.query), headers, body, resource, entry.assigned_id)


def _response_entry(ctx: FhirContext, result: FhirResponse) -> dict[str, Any]:
    response: dict[str, Any] = {"status": f"{result.status} {HTTPStatus(result.status).phrase}"}
    version = result.version
    if "Location" in result.headers:
        response["location"] = result.headers["Location"].removeprefix(ctx.base + "/")
    if version is not None:
        response["etag"] = version.etag
        response["lastModified"] = format_instant(version.last_updated)
    entry: dict[str, Any] = {}
    if version is not None:
        entry["fullUrl"] = f"{ctx.base}/{version.reference}"
    if isinstance(result.body, bytes):
        entry["resource"] = jsontext.raw(result.body)
    elif isinstance(result.body, dict):
        if result.body.get("resourceType") == "OperationOutcome":
            response["outcome"] = result.body
        else:
            entry["resource"] = result.body
    entry["response"] = response
    return entry


def _at(err: DuiError, entry: Entry) -> DuiError:
    """The same error, saying which entry failed."""
    located = type(err)(f"{entry.where}: {err.message}", issues=[
        Issue(f"{entry.where}: {i.diagnostics}", i.code, i.severity, i.expression) for i in err.issues
    ], code=err.code, headers=err.headers, patients=err.patients)
    return located


# -- batch ----------------------------------------------------------------------------------------


def _batch(ctx: FhirContext, req: FhirRequest, entries: list[Entry], dispatch: Dispatch) -> FhirResponse:
    out = []
    touched: list[ResourceVersion] = []
    for entry in entries:
        if entry.issues:
            err: DuiError = Invalid(f"{entry.where}: the entry is not valid", issues=entry.issues)
            out.append(_error_entry(err))
            continue
        try:
            with ctx.repo.savepoint():
                if entry.resource is not None:
                    _reject_local_references(entry)
                result = dispatch(ctx, _sub_request(req, entry))
        except DuiError as exc:
            out.append(_error_entry(_at(exc, entry)))
            continue
        out.append(_response_entry(ctx, result))
        touched += result.versions()
    return FhirResponse(200, bundle("batch-response", ctx.clock(), out, []), touched=touched)


def _reject_local_references(entry: Entry) -> None:
    text = jsontext.dump(entry.resource)
    if b'"reference":"urn:uuid:' in text:
        raise Invalid("a batch entry cannot refer to another entry (urn:uuid); use a transaction")


def _error_entry(err: DuiError) -> dict[str, Any]:
    status, outcome = error_outcome(err)
    return {"response": {"status": f"{status} {HTTPStatus(status).phrase}", "outcome": outcome}}
