"""What every interaction shares: the request and response values, the context, and helpers.

Interactions are plain functions ``(ctx, req, ...) -> FhirResponse``; they know nothing of Flask.
The web layer builds a ``FhirRequest`` from HTTP; transaction and batch bundles build one per entry
and go through the same router (``dui.fhir.router``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from email.utils import format_datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from dui.auth.actor import Actor
from dui.auth.policy import UNRESTRICTED_KINDS, Policy, may
from dui.clock import Clock
from dui.errors import Forbidden, Invalid, Issue, NotFound, PreconditionFailed, UnsupportedMediaType
from dui.fhir import jsontext
from dui.fhir.outcomes import operation_outcome
from dui.fhir.repository import Current, FhirRepository, ResourceVersion
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.search.plan import CodeSets, SearchPlan, parse_search
from dui.fhir.validation import Validator
from dui.settings import Settings

if TYPE_CHECKING:
    from fhir_profiles.context import Context

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class FhirRequest:
    """A FHIR interaction request, independent of the transport."""

    method: str
    path: str  # relative to the FHIR base, without leading slash: "Patient/123/_history"
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes | None = None
    # Set by transaction processing: the entry's resource, already parsed and rewritten, and the
    # id assigned to a created resource so that references to it could be resolved beforehand.
    resource: dict[str, Any] | None = None
    assigned_id: str | None = None

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower())
        return value if value else None

    @cached_property
    def prefer(self) -> dict[str, str]:
        """The ``Prefer`` header as a dict: ``{"return": "minimal", "handling": "strict"}``."""
        out: dict[str, str] = {}
        for part in (self.header("prefer") or "").split(","):
            for token in part.split(";"):
                key, _, value = token.strip().partition("=")
                if key:
                    out[key.strip().lower()] = value.strip().strip('"').lower()
        return out

    @property
    def strict(self) -> bool:
        """Strict unless the client asks ``Prefer: handling=lenient``: a parameter the server cannot honour is
        refused rather than dropped, since results that ignore a filter the client believes applied are the most
        dangerous answer a search can give (docs/fhir-api.md, "Search")."""
        return self.prefer.get("handling") != "lenient"

    @property
    def ignores_empty(self) -> bool:
        """A search parameter without a value is ignored (R4) unless the client asked ``handling=strict``."""
        return self.prefer.get("handling") != "strict"


@dataclass
class FhirResponse:
    status: int
    body: Any = None  # dict, or bytes of JSON, or None
    headers: dict[str, str] = field(default_factory=dict)
    version: ResourceVersion | None = None  # the version written or read, for bundle responses
    # Every other version the answer served or the request changed (search pages and includes, history, the
    # version an update replaced or a delete ended): the audit trail names the residents they belong to.
    touched: list[ResourceVersion] = field(default_factory=list)
    content_type: str | None = None  # a body in another format than FHIR JSON (a Binary served as itself)

    def versions(self) -> list[ResourceVersion]:
        return ([self.version] if self.version is not None else []) + self.touched


# A rule every write of a resource type must pass: (resource, loader of the stored version, actor, today)
# -> the resource to store, or a ``DuiError``. Use-case packages provide them at wiring time.
WriteRule = Callable[[dict[str, Any], Callable[[], "dict[str, Any] | None"], Actor, date], dict[str, Any]]

# A resource type whose creation a use-case package takes over: (context, body) -> (the version filed, whether it
# was created), or None when the body is stored as written. Documents POSTed with their content inline
# (``dui.documents.inbound``): the CDA or the PDF is filed as Binaries of the resident's record.
Filer = Callable[["FhirContext", dict[str, Any]], "tuple[ResourceVersion, bool] | None"]

# A step every Bundle POSTed at the FHIR base goes through before its entries are read: (context, bundle) -> the
# bundle to run (the same one when the step does not concern it), or a ``DuiError``. Use-case packages provide
# them at wiring time (``dui.tddui.consumer.transfer_rule``: TDDUI transfers).
BundleRule = Callable[["FhirContext", dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Operation:
    """A FHIR operation served at ``Type/$name`` ("type"), ``Type/{id}/$name`` ("instance") or ``$name`` ("system",
    keyed with the type ``""``; ``arguments``: the path segments that follow its name, ``$export-status/{job}``)."""

    canonical: str  # its OperationDefinition ("" for an endpoint that is not an operation of its own)
    methods: tuple[str, ...]
    level: str
    handler: Callable[..., FhirResponse]  # (ctx, req, rtype), (ctx, req, rtype, rid), or (ctx, req, *arguments)
    arguments: int = 0
    also: Operation | None = None  # the same name served at the other level (``Group/$export`` says what to ask)
    # False: the instance is not a stored record but one the handler finds itself (``ValueSet/{id}/$expand``: the
    # conformance resources in force); the router then does not look it up in the repository.
    stored: bool = True


@dataclass(frozen=True)
class FhirContext:
    """Everything an interaction needs, passed explicitly.

    ``repo`` is what the actor may see (``Services`` may wrap the store in the sharing gate); ``store``
    is the repository itself, for the server's own reads before a write.
    """

    repo: FhirRepository
    registry: SearchParameterRegistry
    validator: Validator
    settings: Settings
    actor: Actor
    clock: Clock
    store: FhirRepository | None = None
    write_rules: Mapping[str, WriteRule] = field(default_factory=dict)
    operations: Mapping[tuple[str, str], Operation] = field(default_factory=dict)
    bundle_rules: tuple[BundleRule, ...] = ()
    filers: Mapping[str, Filer] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    break_glass: str | None = None  # the reason a health professional gave to read beyond their rights
    planned: set[str] = field(default_factory=set)  # ``Type/id`` a transaction is about to create
    warnings: list[Issue] = field(default_factory=list)  # profile problems of writes under the ``warn`` mode
    # The conformance resources in force (installed packages, shipped definitions): the CapabilityStatement's
    # supportedProfile and implementationGuide (``dui.profiles.registry.ProfileRegistry.context``)
    profiles: Callable[[], Context] | None = None

    @property
    def base(self) -> str:
        return self.settings.fhir_base

    @property
    def internal(self) -> FhirRepository:
        return self.store if self.store is not None else self.repo

    # -- authorization (``dui.fhir.authorization`` decides what a request needs; these apply one rule) --

    @property
    def unrestricted(self) -> bool:
        """The CLI administrator, the server itself, and anonymous callers where they are allowed (dev)."""
        return self.actor.kind in UNRESTRICTED_KINDS

    def require(self, permission: str, rtype: str) -> None:
        """``Forbidden`` unless the actor may ``permission`` (a letter of cruds) on ``rtype``."""
        if self.unrestricted:
            return
        decision = may(self.actor, permission, rtype, self.policy, break_glass=self.break_glass)
        if not decision:
            raise Forbidden(f"Not allowed: {decision.reason}")

    def require_search(self, plan: SearchPlan) -> None:
        """``Forbidden`` unless the actor may search the plan's type and every type it tests or returns."""
        if self.unrestricted:
            return
        self.require("s", plan.resource_type)
        touched = plan.touched_types()
        if touched is None:
            raise Forbidden("Not allowed: name the types to include (a wildcard _include can reach any type)")
        for rtype in sorted(touched):
            self.require("s", rtype)

    def criteria_plan(self, rtype: str, pairs: list[tuple[str, str]]) -> SearchPlan:
        """The criteria of a conditional interaction or reference, read strictly (an ignored parameter would
        widen the match) and authorized like a search."""
        plan = parse_search(rtype, pairs, self.registry, self.settings.limits, strict=True,
                            code_sets=self.code_sets())
        self.require_search(plan)
        return plan

    def code_sets(self) -> CodeSets:
        """The terminology in force, for the ``:in``, ``:not-in``, ``:below`` and ``:above`` of searches."""
        from dui.fhir.interactions.terminology import code_sets  # it builds on this module

        return code_sets(self)

    def prepare(self, rtype: str, resource: dict[str, Any], current: Current | None) -> dict[str, Any]:
        """The resource to store after the write rules of its type and its profiles (either may refuse it)."""
        rule = self.write_rules.get(rtype)
        if rule is not None:
            resource = self._apply(rule, rtype, resource, current)
        self.warnings.extend(self.validator.check_profiles(resource, policy=self.settings.validation.mode(rtype)))
        return resource

    def _apply(self, rule: WriteRule, rtype: str, resource: dict[str, Any], current: Current | None) -> dict[str, Any]:

        def previous() -> dict[str, Any] | None:
            if current is None or current.deleted:
                return None
            stored = self.internal.read(rtype, current.id)
            return stored.resource() if stored is not None and stored.body is not None else None

        return rule(resource, previous, self.actor, self.clock().astimezone(self.tz).date())

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)


# -- request bodies -------------------------------------------------------------------------------


def parse_body(ctx: FhirContext, req: FhirRequest) -> Any:
    """The JSON body of the request (415 for another media type, 400 for bad JSON)."""
    if req.resource is not None:
        return req.resource
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type}' is not supported; send application/fhir+json (FHIR R4 JSON)"
        )
    fhir_version = _media_parameter(req.header("content-type") or "", "fhirversion")
    if fhir_version and not fhir_version.startswith("4.0"):
        raise UnsupportedMediaType(f"fhirVersion {fhir_version} is not supported; this server speaks FHIR 4.0.1")
    if not req.body:
        raise Invalid("The request has no body; a FHIR resource in JSON was expected")
    return jsontext.parse(req.body, ctx.settings.limits.max_json_depth)


def resource_body(ctx: FhirContext, req: FhirRequest, rtype: str) -> dict[str, Any]:
    """The request's resource, checked: a ``rtype`` that conforms to the base R4 structure."""
    content = parse_body(ctx, req)
    if not isinstance(content, dict):
        raise Invalid("The body must be a JSON object holding a FHIR resource")
    actual = content.get("resourceType")
    if actual != rtype:
        raise Invalid(f"The body holds a {actual or 'resource without resourceType'}, "
                      f"but the URL is for {rtype}", expression="resourceType")
    if req.resource is None:
        ctx.validator.check(content)
    return content


def _media_parameter(content_type: str, name: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


# -- ids, versions and ETags ----------------------------------------------------------------------


def not_found(rtype: str, rid: str) -> NotFound:
    """The one answer for a resource that does not exist and for one the actor may not see: the two must never
    be told apart (an existence oracle on another establishment's residents)."""
    return NotFound(f"{rtype}/{rid} does not exist")


def check_id(rid: str) -> str:
    if not 1 <= len(rid) <= 64 or not set(rid) <= ID_CHARS:
        raise Invalid(f"'{rid[:80]}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")
    return rid


def parse_version(text: str) -> int:
    """A version id as this server writes them (a positive integer)."""
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise Invalid(f"'{text[:40]}' is not a version id of this server")
    return int(text)


def parse_etag(header: str) -> int:
    """``W/"3"`` (or ``"3"``, or ``3``) -> 3."""
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit() or len(value) > 9:
        raise Invalid(f"If-Match must be an ETag such as W/\"3\", not {header[:40]!r}")
    return int(value)


def check_if_match(req: FhirRequest, current_version: int | None) -> None:
    header = req.header("if-match")
    if header is None:
        return
    expected = parse_etag(header)
    if current_version is None:
        raise PreconditionFailed(f"If-Match: the resource does not exist (expected version {expected})")
    if current_version != expected:
        raise PreconditionFailed(
            f"If-Match: the resource is at version {current_version}, not {expected}; "
            "read it again and re-apply your change"
        )


def version_headers(version: ResourceVersion) -> dict[str, str]:
    return {"ETag": version.etag, "Last-Modified": format_datetime(version.last_updated, usegmt=True)}


# -- responses ------------------------------------------------------------------------------------


def respond(ctx: FhirContext, req: FhirRequest, version: ResourceVersion, status: int,
            location: bool = False, replaced: ResourceVersion | None = None) -> FhirResponse:
    """Answer a write as the client asked with ``Prefer: return=`` (an OperationOutcome carries the warnings).
    ``replaced``: the version the write replaced, whose residents it touched too."""
    touched = [replaced] if replaced is not None else []
    warnings = list(ctx.warnings)
    ctx.warnings.clear()
    headers = version_headers(version)
    if location:
        headers["Location"] = f"{ctx.base}/{version.versioned_reference}"
    wanted = req.prefer.get("return", "representation")
    if wanted == "minimal":
        return FhirResponse(status, None, headers, version, touched)
    if wanted == "operationoutcome":
        verb = "created" if status == 201 else "updated"
        message = f"{version.reference} {verb}, version {version.version}"
        notes = [Issue(message, "informational", severity="information"), *warnings]
        return FhirResponse(status, operation_outcome(notes), headers, version, touched)
    return FhirResponse(status, version.body, headers, version, touched)


# -- conditional interactions ---------------------------------------------------------------------


def criteria_pairs(criteria: str) -> list[tuple[str, str]]:
    """The parameters of a conditional URL's query (``identifier=a|b&name=x``)."""
    query = criteria.split("?", 1)[1] if "?" in criteria else criteria
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise Invalid(f"The conditional criteria '{criteria[:200]}' hold no search parameter")
    return pairs


def lock_key(rtype: str, pairs: list[tuple[str, str]]) -> str:
    return f"conditional:{rtype}?" + "&".join(f"{k}={v}" for k, v in sorted(pairs))


def matching_rids(ctx: FhirContext, plan: SearchPlan, limit: int = 2) -> list[int]:
    """Row ids of current resources matching conditional criteria (``FhirContext.criteria_plan``; at most
    ``limit``), among those the actor may see."""
    return ctx.repo.search(dataclasses.replace(plan, count=limit), total=None).rids


def operation_parameters(ctx: FhirContext, req: FhirRequest,
                         allowed: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """The body of an operation: its Parameters by name (an empty body is no parameter); unknown names are refused."""
    if not req.body and req.resource is None:
        return {}
    body = parse_body(ctx, req)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Invalid("The body of this operation is a Parameters resource", expression="resourceType")
    ctx.validator.check(body)
    out: dict[str, list[dict[str, Any]]] = {}
    for param in body.get("parameter") or []:
        name = param.get("name")
        if name not in allowed:
            raise Invalid(f"'{str(name)[:60]}' is not a parameter of this operation (expected: "
                          f"{', '.join(allowed) or 'none'})", expression=f"Parameters.parameter.where(name='{name}')")
        out.setdefault(name, []).append(param)
    return out
