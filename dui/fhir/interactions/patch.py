"""patch and conditional patch: http://hl7.org/fhir/R4/http.html#patch.

Three formats: JSON Patch (``application/json-patch+json``), XML Patch (``application/xml-patch+xml``, applied to
the FHIR XML form of the resource and read back) and FHIRPath Patch (a Parameters resource in
``application/fhir+json``, or in FHIR XML, which ``dui.web.fhir`` has already read into JSON). The patched resource
must still be valid R4 and keep its type and id.
"""

from __future__ import annotations

from typing import Any

from dui.errors import Gone, Invalid, NotFound, PreconditionFailed, TooLarge, Unprocessable, UnsupportedMediaType
from dui.fhir import jsontext
from dui.fhir.interactions.base import (
    JSON_TYPES,
    FhirContext,
    FhirRequest,
    FhirResponse,
    check_id,
    check_if_match,
    lock_key,
    matching_rids,
    not_found,
    parse_body,
    respond,
)
from dui.fhir.patch import fhirpath_patch, json_patch, xml_patch
from dui.fhir.search.plan import SearchPlan
from dui.fhir.xml import element_to_resource
from dui.fhir.xmlsafe import UnsafeXml, parse_untrusted
from dui.fhir.xmlwriter import resource_to_element

JSON_PATCH = "application/json-patch+json"


def patch(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str) -> FhirResponse:
    current = ctx.repo.current(rtype, check_id(rid), for_update=True)
    if current is None:
        raise not_found(rtype, rid)
    if current.deleted:
        raise Gone(f"{rtype}/{rid} was deleted")
    check_if_match(req, current.version)
    stored = ctx.repo.read(rtype, rid)
    assert stored is not None
    patched = _patched(ctx, req, stored.resource())
    if patched.get("resourceType") != rtype or patched.get("id") != rid:
        raise Unprocessable("A patch cannot change the resource's type or id")
    issues = ctx.validator.issues(patched)
    if issues:
        raise Unprocessable(f"The patched {rtype} would not be valid FHIR R4 ({len(issues)} problems)",
                            issues=issues, code="processing")
    patched = ctx.prepare(rtype, patched, current)
    version = ctx.repo.update(current, rtype, rid, patched, method="PATCH")
    return respond(ctx, req, version, 200, replaced=stored)


def conditional_patch(ctx: FhirContext, req: FhirRequest, rtype: str, criteria: SearchPlan) -> FhirResponse:
    ctx.repo.lock(lock_key(rtype, criteria.kept))
    matches = matching_rids(ctx, criteria)
    if len(matches) != 1:
        if not matches:
            raise NotFound(f"Conditional patch: no {rtype} matches the criteria")
        raise PreconditionFailed(f"Conditional patch: several {rtype} resources match the criteria",
                                 code="multiple-matches")
    found = ctx.repo.fetch(matches)[0]
    return patch(ctx, req, rtype, found.id)


def _patched(ctx: FhirContext, req: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if content_type == JSON_PATCH:
        if not req.body:
            raise Invalid("The request has no body; a JSON Patch document was expected")
        document = jsontext.parse(req.body, ctx.settings.limits.max_json_depth)
        patched: Any = json_patch.apply(resource, document)
    elif content_type == xml_patch.XML_PATCH:
        patched = _xml_patched(ctx, req, resource)
    elif content_type in JSON_TYPES or req.resource is not None:
        patched = fhirpath_patch.apply(resource, parse_body(ctx, req))
    else:
        raise UnsupportedMediaType(
            f"PATCH takes {JSON_PATCH} (JSON Patch), {xml_patch.XML_PATCH} (XML Patch), or application/fhir+json "
            f"or application/fhir+xml (FHIRPath Patch), not '{content_type or 'no Content-Type'}'"
        )
    if not isinstance(patched, dict):
        raise Unprocessable("The patch does not leave a resource")
    return patched


def _xml_patched(ctx: FhirContext, req: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
    """XML Patch over the FHIR XML form of ``resource``, read back into JSON."""
    if not req.body:
        raise Invalid("The request has no body; an XML Patch document was expected")
    try:
        document = parse_untrusted(req.body, max_bytes=ctx.settings.limits.max_request_bytes)
    except UnsafeXml as exc:
        if "nested deeper" in str(exc) or "larger than" in str(exc):
            raise TooLarge(f"The XML Patch document is refused: {exc}") from None
        raise Invalid(f"The XML Patch document is refused: {exc}") from None
    root = xml_patch.apply(resource_to_element(resource), document)
    try:
        return element_to_resource(root)
    except Invalid as exc:
        raise Unprocessable(f"The patched resource is not FHIR R4 XML: {exc.message}") from None
