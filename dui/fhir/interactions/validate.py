"""``$validate`` at system and type level: http://hl7.org/fhir/R4/resource-operation-validate.html.

The body is a ``Parameters`` (``resource``, optional ``profile`` and ``mode``) or the resource itself;
``?profile=`` may name the profile too. The answer is always an OperationOutcome with status 200 listing
every problem a write would meet (base structure, model, profiles in force, the business rules of the
type) plus the warnings; a request that cannot be understood (no resource, a type that does not match the
URL, an unknown profile asked for by name) is a 400. Nothing is stored.
"""

from __future__ import annotations

from typing import Any

from dui.errors import Invalid, Issue
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse, parse_body
from dui.fhir.outcomes import operation_outcome

OPERATION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
MODES = ("create", "update", "profile")  # "delete" asks whether a delete would be allowed: not supported


def validate(ctx: FhirContext, req: FhirRequest, rtype: str | None) -> FhirResponse:
    """``POST [base]/$validate`` (``rtype`` None) or ``POST [base]/[type]/$validate``."""
    resource, profiles = _arguments(ctx, req)
    actual = resource.get("resourceType")
    if rtype is not None and actual != rtype:
        raise Invalid(f"$validate on {rtype} received a {actual or 'resource without resourceType'}",
                      expression="resource")
    for url in profiles:
        if not ctx.validator.knows_profile(url):
            raise Invalid(f"The profile {url} is not in force here (see `dui profiles list`; "
                          "install its package with `dui profiles install`)", code="not-found")
    issues = ctx.validator.validate(resource, profiles)
    if not issues:
        issues = [Issue("No problems found", "informational", severity="information")]
    return FhirResponse(200, operation_outcome(issues))


def _arguments(ctx: FhirContext, req: FhirRequest) -> tuple[dict[str, Any], list[str]]:
    body = parse_body(ctx, req)
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise Invalid("$validate takes a Parameters resource (parameter 'resource') or the resource itself")
    profiles = [value for name, value in req.query if name == "profile"]
    if body["resourceType"] != "Parameters":
        return body, profiles
    resource = None
    for index, param in enumerate(body.get("parameter") or []):
        name = param.get("name") if isinstance(param, dict) else None
        where = f"Parameters.parameter[{index}]"
        if name == "resource":
            resource = param.get("resource")
        elif name == "profile":
            value = param.get("valueUri") or param.get("valueCanonical")
            if not isinstance(value, str):
                raise Invalid("the parameter 'profile' carries valueUri or valueCanonical", expression=where)
            profiles.append(value)
        elif name == "mode":
            mode = param.get("valueCode")
            if mode not in MODES:
                raise Invalid(f"mode {mode!r} is not supported by this server; use one of {', '.join(MODES)}",
                              expression=where)
        else:
            raise Invalid(f"$validate has no parameter {name!r} (resource, profile, mode)", expression=where)
    if not isinstance(resource, dict):
        raise Invalid("$validate needs the parameter 'resource' holding the resource to check",
                      expression="Parameters.parameter")
    return resource, profiles
