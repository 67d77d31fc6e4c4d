"""capabilities: the CapabilityStatement at ``/fhir/metadata`` (http://hl7.org/fhir/R4/http.html#capabilities).

Generated from the router's tables and the search-parameter registry: what is listed is what the
server does, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from dui import __version__
from dui.fhir import jsontext
from dui.fhir.interactions import validate
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse, Operation
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.search.plan import MODIFIERS, NO_NARRATIVE
from dui.profiles.canonical import api_url
from fhir_profiles import GUIDE

if TYPE_CHECKING:
    from fhir_profiles.context import Context

_cache: dict[tuple[str, str, int, int, tuple[str, ...], tuple[tuple[str, str], ...]], bytes] = {}
_CACHED = 16  # statements kept (one per set of installed packages seen, per base)


def capabilities(ctx: FhirContext, req: FhirRequest) -> FhirResponse:
    context = ctx.profiles() if ctx.profiles is not None else None
    defaults = ctx.settings.validation.default_profiles
    installed = tuple(p.id for p in context.packages) if context is not None else ()
    api_base = ctx.settings.api_canonical_base
    key = (ctx.base, api_base, id(ctx.registry), id(ctx.operations), installed, defaults)
    body = _cache.get(key)
    if body is None:
        if len(_cache) >= _CACHED:
            _cache.clear()
        body = _cache[key] = jsontext.dump(capability_statement(ctx.base, ctx.registry, ctx.operations,
                                                                context=context, default_profiles=defaults,
                                                                api_base=api_base))
    return FhirResponse(200, body)


def supported_profiles(context: Context | None, defaults: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Resource type -> the profiles the server checks it against: the default profiles of the type
    (``DUI_DEFAULT_PROFILES``, whatever a resource claims) first, then every other profile of the type in force
    (installed packages and the service's own: checked when a resource claims it)."""
    found: dict[str, list[str]] = {}
    for rtype, url in defaults:
        found.setdefault(rtype, []).append(url)
    if context is not None:
        for sd in sorted(context.profiles(), key=lambda r: str(r.get("url"))):
            kind, canonical = sd.get("type"), sd.get("url")
            if (sd.get("kind") == "resource" and sd.get("derivation") == "constraint" and isinstance(kind, str)
                    and isinstance(canonical, str) and canonical not in found.get(kind, [])):
                found.setdefault(kind, []).append(canonical)
    return found


def implementation_guides(context: Context | None) -> list[str]:
    """The canonical urls of the ImplementationGuides in force: the service's own, then the installed packages'."""
    if context is None:
        return [GUIDE]
    return [GUIDE, *sorted({str(r["url"]) for p in context.packages for r in p.resources
                            if r.get("resourceType") == "ImplementationGuide" and isinstance(r.get("url"), str)})]


def capability_statement(base: str, registry: SearchParameterRegistry,
                         operations: Mapping[tuple[str, str], Operation] | None = None, *,
                         context: Context | None = None,
                         default_profiles: Sequence[tuple[str, str]] = (), api_base: str) -> dict[str, Any]:
    """The statement of the server at ``base``; ``api_base``: where its own OperationDefinitions are published
    (``Settings.api_canonical_base``). Its SearchParameters' are those of ``registry``."""
    from dui.fhir import router  # the router imports this module
    from dui.subscriptions import websocket  # it reads Subscriptions through the router

    tables = router.describe(operations)
    published = {key: api_url(url, api_base) for key, url in tables["operations"].items()}
    interactions = [*tables["instance"], *tables["type"], *tables["history"]]
    order = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
             "search-type"]
    resources = []
    profiles = supported_profiles(context, default_profiles)
    for rtype in router.storable_types():
        params = [
            {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
            {"name": "_lastUpdated", "type": "date",
             "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"},
        ]
        if registry.full_text:
            params.append({"name": "_content", "type": "string",
                           "documentation": "Words, \"phrases\", AND, OR and parentheses in every string of the "
                                            "resource"})
        if registry.full_text and rtype not in NO_NARRATIVE:
            params.append({"name": "_text", "type": "string",
                           "documentation": "Words, \"phrases\", AND, OR and parentheses in the narrative"})
        references = []
        for code, param in sorted(registry.for_type(rtype).items()):
            if param.indexed and param.type in MODIFIERS:
                item = {"name": code, "type": param.type}
                if param.url:
                    item["definition"] = param.url
                params.append(item)
            if param.type == "reference":
                references.append(f"{rtype}:{code}")
        revincludes = sorted(f"{source}:{code}" for source in router.storable_types()
                             for code, p in registry.for_type(source).items()
                             if p.type == "reference" and (not p.targets or rtype in p.targets))
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            **({"supportedProfile": profiles[rtype]} if profiles.get(rtype) else {}),
            "interaction": [{"code": c} for c in order if c in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "local"],
            "searchInclude": ["*", *references],
            "searchRevInclude": revincludes,
            "searchParam": params,
        })
        listed = [{"name": name.lstrip("$"), "definition": url}
                  for (owner, name), url in published.items() if owner == rtype]
        resources[-1]["operation"] = [*listed, {"name": "validate", "definition": validate.OPERATION}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.today().isoformat(),  # the statement is generated at start-up
        "publisher": "DUI backend",
        "kind": "instance",
        "software": {"name": "DUI backend", "version": __version__},
        "implementation": {"description": "DUI backend: the resident's record of an EHPAD", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/xml-patch+xml",
                        "application/fhir+xml"],
        "implementationGuide": implementation_guides(context),
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                               "extension": [{"url": "token",
                                              "valueUri": base.removesuffix("/fhir") + "/auth/token"}]}],
                "description": "Bearer access tokens: SMART Backend Services (client credentials with a signed "
                               "assertion) for systems, OIDC or local accounts for staff; see "
                               "/.well-known/smart-configuration",
            },
            "extension": [{"url": websocket.CAPABILITY_EXTENSION, "valueUri": websocket.address(base)}],
            "resource": resources,
            "interaction": [{"code": c} for c in tables["system"]],
            "operation": [{"name": "validate", "definition": validate.OPERATION},
                          *({"name": name.lstrip("$"), "definition": url}
                            for (owner, name), url in published.items() if owner == "")],
        }],
    }
