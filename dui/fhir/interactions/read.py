"""read and vread: http://hl7.org/fhir/R4/http.html#read, #vread (with conditional read)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from dui.errors import DuiError, Gone, NotFound, Unprocessable
from dui.fhir.definitions import r4
from dui.fhir.interactions.base import (
    FhirContext,
    FhirRequest,
    FhirResponse,
    check_id,
    not_found,
    parse_etag,
    parse_version,
    version_headers,
)
from dui.fhir.repository import ResourceVersion
from dui.fhir.search.plan import SUMMARY_MODES, element_names, one_of
from dui.fhir.search.shaping import shape


def read(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    """The current version; 404 if it never existed, 410 if deleted, 304 if the client's copy is current."""
    version = ctx.repo.read(rtype, check_id(rid))
    if version is None:
        raise not_found(rtype, rid)
    if version.deleted:
        raise Gone(f"{rtype}/{rid} was deleted (version {version.version})", headers=version_headers(version))
    headers = version_headers(version)
    if _not_modified(req, version.version, version.last_updated):
        return FhirResponse(304, None, headers, version)
    if rtype == "Binary" and wants_native(req):
        return _native(version, headers)
    return FhirResponse(200, _shaped(req, version.resource) or version.body, headers, version)


def vread(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str, vid: str) -> FhirResponse:
    """One version; 404 if there is no such version, 410 if that version is a deletion."""
    version = ctx.repo.vread(rtype, check_id(rid), parse_version(vid))
    if version is None:
        raise NotFound(f"{rtype}/{rid} has no version {vid}")
    if version.deleted:
        raise Gone(f"Version {vid} of {rtype}/{rid} is its deletion", headers=version_headers(version))
    if rtype == "Binary" and wants_native(req):
        return _native(version, version_headers(version))
    return FhirResponse(200, version.body, version_headers(version), version)


FHIR_FORMATS = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "json",
                          "application/fhir+xml", "application/xml+fhir", "xml"})


def wants_native(req: FhirRequest) -> bool:
    """A Binary is answered in its own content type unless the client names a FHIR format (``_format``, or a FHIR
    type in ``Accept``): http://hl7.org/fhir/R4/binary.html#rest."""
    if any(name == "_format" for name, _ in req.query):
        return False
    accept = req.header("accept") or ""
    for part in accept.split(","):
        kind, _, params = part.partition(";")
        refused = any(p.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params.split(";"))
        if kind.strip().lower() in FHIR_FORMATS and not refused:
            return False
    return True


def _native(version: ResourceVersion, headers: dict[str, str]) -> FhirResponse:
    """The Binary's content as itself (its ``data`` decoded, with its ``contentType``)."""
    binary = version.resource()
    kind = binary.get("contentType")
    try:
        data = base64.b64decode(binary.get("data") or "", validate=True)
    except (ValueError, TypeError):
        raise Unprocessable(f"Binary/{version.id} holds data that is not base64: read it as FHIR JSON "
                            "(Accept: application/fhir+json)") from None
    return FhirResponse(200, data, headers, version, content_type=kind if isinstance(kind, str) and kind
                        else "application/octet-stream")


def _shaped(req: FhirRequest, content: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """The resource cut down by ``_summary`` / ``_elements``, when the client asked (search.html#summary)."""
    query = dict(req.query)
    summary, elements = query.get("_summary"), query.get("_elements")
    if summary is None and elements is None:
        return None
    if summary is not None:
        one_of("_summary", summary, SUMMARY_MODES)
    wanted = element_names(elements) if elements is not None else None
    return shape(content(), r4(), summary, wanted)


def _not_modified(req: FhirRequest, version: int, last_updated: datetime) -> bool:
    """Conditional read (http://hl7.org/fhir/R4/http.html#cread)."""
    if_none_match = req.header("if-none-match")
    if if_none_match:
        try:
            return parse_etag(if_none_match) == version
        except DuiError:
            return False  # a malformed ETag simply does not match
    since = req.header("if-modified-since")
    if since:
        try:
            moment = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if moment.tzinfo is None:
            return False
        return last_updated.replace(microsecond=0) <= moment
    return False
