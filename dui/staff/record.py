"""The staff use cases' one door into the record: every read and write is a FHIR interaction.

A use case of the staff API (``/api``) builds FHIR requests and runs them through the FHIR router with the
request's own context (``dui.fhir.router.handle``): the same routing, authorization (roles, SMART scopes,
establishment scoping), write rules, profiles and validation as the same request sent to ``/fhir``. Each call is
kept with its ``Route`` and answer, and the web layer records every one of them in the audit trail exactly as
``/fhir`` records it (``dui.web.audit.record_fhir``): the two faces of the API are views of one record.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from dui.errors import Forbidden, NotFound
from dui.fhir import jsontext, router
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse
from dui.fhir.sql import format_instant

JSON_HEADERS = {"content-type": "application/fhir+json"}


@dataclass(frozen=True)
class Call:
    """One FHIR interaction a use case ran, as the audit trail records it."""

    req: FhirRequest
    route: router.Route
    result: FhirResponse


@dataclass
class Results:
    matches: list[dict[str, Any]]
    included: dict[str, dict[str, Any]]  # by ``Type/id``
    following: str | None  # the cursor of the next page


class Record:
    """The FHIR interactions of one staff request, in its unit of work (``ctx``)."""

    def __init__(self, ctx: FhirContext) -> None:
        self.ctx = ctx
        self.calls: list[Call] = []
        self.refused: router.Route | None = None  # the interaction that raised, for the audit trail

    def run(self, method: str, path: str, query: Iterable[tuple[str, str]] = (), body: Any = None,
            headers: Mapping[str, str] | None = None) -> FhirResponse:
        """Route, authorize and run one interaction; raises what ``/fhir`` would answer as an error."""
        all_headers = {**(JSON_HEADERS if body is not None else {}), **(headers or {})}
        # jsontext writes back the decimals of a resource read here (FhirDecimal) as their own text
        req = FhirRequest(method, path, tuple(query), all_headers, jsontext.dump(body) if body is not None else None)
        routed = router.route(self.ctx, req)
        self.refused = routed
        result = router.handle(self.ctx, req, routed)
        self.refused = None
        self.calls.append(Call(req, routed, result))
        return result

    def search(self, rtype: str, params: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """The matches of a search (``_count`` decides how many; included resources are left out)."""
        return self.results(rtype, params).matches

    def page(self, rtype: str, params: Iterable[tuple[str, str]], cursor: str | None) -> tuple[
            list[dict[str, Any]], str | None]:
        """One page of a search's matches and the cursor of the next page."""
        found = self.results(rtype, [*params, *([("_cursor", cursor)] if cursor else [])])
        return found.matches, found.following

    def results(self, rtype: str, params: Iterable[tuple[str, str]]) -> Results:
        """A search's matches, included resources and next page: the cursor is the FHIR search's own
        ``_cursor``, so a page stays right while others write."""
        bundle = as_json(self.run("GET", rtype, params).body)
        found = Results([], {}, None)
        for entry in bundle.get("entry") or []:
            resource = entry["resource"]
            mode = (entry.get("search") or {}).get("mode", "match")
            if mode == "match":
                found.matches.append(resource)
            elif mode == "include":
                found.included[f"{resource['resourceType']}/{resource['id']}"] = resource
        for link in bundle.get("link") or []:
            if link.get("relation") == "next":
                found.following = dict(parse_qsl(urlsplit(link["url"]).query)).get("_cursor")
        return found

    def require(self, permission: str, rtype: str) -> None:
        """``Forbidden`` unless the actor may ``permission`` on ``rtype``: for what a use case reads or writes
        outside FHIR on behalf of that type (the alerts of the care team, with their Flags)."""
        self.ctx.require(permission, rtype)

    def may(self, permission: str, rtype: str) -> bool:
        """Whether the actor may ``permission`` (a letter of cruds) on ``rtype``: a use case leaves out what its
        actor may not read rather than failing the whole view."""
        try:
            self.ctx.require(permission, rtype)
        except Forbidden:
            return False
        return True

    def read(self, rtype: str, rid: str) -> tuple[dict[str, Any], int]:
        """The resource and its version; ``NotFound`` as ``/fhir`` says it (the same for one not visible)."""
        result = self.run("GET", f"{rtype}/{rid}")
        version = result.version
        if version is None:  # every read answers with its version
            raise NotFound(f"{rtype}/{rid} does not exist")
        return version.resource(), version.version

    def create(self, resource: dict[str, Any]) -> tuple[dict[str, Any], int]:
        result = self.run("POST", resource["resourceType"], body=resource)
        assert result.version is not None
        return result.version.resource(), result.version.version

    def update(self, resource: dict[str, Any], if_match: str | None = None) -> tuple[dict[str, Any], int]:
        """``PUT`` the resource; ``if_match`` (an ETag) refuses it with 412 when the record moved on."""
        headers = {"if-match": if_match} if if_match else {}
        result = self.run("PUT", f"{resource['resourceType']}/{resource['id']}", body=resource, headers=headers)
        assert result.version is not None
        return result.version.resource(), result.version.version

    def transaction(self, entries: list[dict[str, Any]]) -> list[str]:
        """Run a transaction Bundle; returns each entry's ``response.location`` (``Type/id/_history/v``)."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = as_json(self.run("POST", "", body=bundle).body)
        return [(e.get("response") or {}).get("location", "") for e in answer.get("entry") or []]


def as_json(body: Any) -> dict[str, Any]:
    """An interaction's answer body as plain JSON values."""
    if body is None:
        return {}
    value: dict[str, Any] = orjson.loads(body if isinstance(body, bytes) else jsontext.dump(body))
    return value


def create_entry(resource: dict[str, Any], full_url: str) -> dict[str, Any]:
    """A transaction entry creating ``resource``; other entries refer to it by ``full_url`` (``urn:uuid:...``)."""
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def update_entry(resource: dict[str, Any], version: int) -> dict[str, Any]:
    """A transaction entry updating ``resource`` if it is still at ``version`` (``ifMatch``: 412 otherwise)."""
    path = f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": path, "ifMatch": f'W/"{version}"'}}


def editable(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy of a served resource to write back: without the server's ``meta`` (version, update time), with its
    profiles, tags and security labels."""
    out = copy.deepcopy(resource)
    kept = {k: v for k, v in (out.pop("meta", None) or {}).items() if k in ("profile", "tag", "security")}
    if kept:
        out["meta"] = kept
    return out


def version_of(resource: dict[str, Any]) -> int:
    """The version a served resource carries (``meta.versionId``)."""
    return int((resource.get("meta") or {}).get("versionId") or 0)


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC (an aware datetime from the client may carry any offset)."""
    return format_instant(moment.astimezone(UTC))


def location_id(location: str) -> str:
    """The id in a ``Type/id/_history/v`` location."""
    parts = location.split("/")
    return parts[1] if len(parts) > 1 else ""
