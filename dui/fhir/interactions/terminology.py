"""Terminology operations over the value sets and code systems in force (installed packages, shipped, base R4).

===========================================  ============================================================
``ValueSet/$expand``, ``ValueSet/{id}/$expand``     http://hl7.org/fhir/R4/valueset-operation-expand.html
``ValueSet/$validate-code`` (and ``{id}``)          http://hl7.org/fhir/R4/valueset-operation-validate-code.html
``CodeSystem/$lookup``                              http://hl7.org/fhir/R4/codesystem-operation-lookup.html
``CodeSystem/$validate-code`` (and ``{id}``)        http://hl7.org/fhir/R4/codesystem-operation-validate-code.html
``CodeSystem/$subsumes``                            http://hl7.org/fhir/R4/codesystem-operation-subsumes.html
===========================================  ============================================================

The work is done by ``fhir_profiles.expansion`` over the validation Context of the service (the same one that
checks bindings, rebuilt when the installed packages change, with its caches). Nothing is asked of another server:
a value set that needs a code system not at hand (SNOMED CT, LOINC...) or a filter the data cannot answer is not
expanded at all (422 ``not-supported``, naming the reason) rather than in part; nor is one larger than
``MAX_EXPANSION`` concepts after ``filter`` unless a ``count`` pages it (422 ``too-costly``). Whether a code is in
such a value set may be undecidable: ``$validate-code`` then answers 422 ``not-supported`` naming the reason, not
``result = false`` (which would say the code is not in it). See docs/fhir-api.md, "Terminology".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dui.errors import Invalid, NotFound, Unprocessable
from dui.fhir import jsontext
from dui.fhir.interactions.base import FhirContext, FhirRequest, FhirResponse, Operation, parse_body
from dui.fhir.search.plan import Undecidable
from fhir_profiles.context import Context
from fhir_profiles.expansion import Concept, Expander, NotExpandable, Validation, fold
from fhir_profiles.expansion import NotFound as UnknownTerm
from fhir_profiles.terminology import Terminology

CORE = "http://hl7.org/fhir/OperationDefinition"
MAX_EXPANSION = 1_000  # concepts an expansion may hold without count (and the largest count)
MAX_SEARCH_CODES = 10_000  # codes a search with :in / :not-in / :below / :above may test
FORMAT = ("_format", "_pretty")

# Parameters of R4 that are understood, and those refused (not implemented: an answer without them would be wrong).
EXPAND = ("url", "valueSet", "valueSetVersion", "filter", "offset", "count", "includeDesignations", "activeOnly",
          "displayLanguage", "excludeNested", "excludeNotForUI", "excludePostCoordinated", "includeDefinition",
          "limitedExpansion")
EXPAND_REFUSED = ("context", "contextDirection", "date", "designation", "exclude-system", "system-version",
                  "check-system-version", "force-system-version")
LOOKUP = ("system", "code", "version", "coding", "displayLanguage", "property")
VS_VALIDATE = ("url", "valueSet", "valueSetVersion", "code", "system", "systemVersion", "display", "coding",
               "codeableConcept", "displayLanguage", "abstract")
CS_VALIDATE = ("url", "codeSystem", "version", "code", "display", "coding", "codeableConcept", "displayLanguage",
               "abstract")
SUBSUMES = ("system", "version", "codeA", "codeB", "codingA", "codingB")
REFUSED = ("context", "date", "contextDirection")


def expander(ctx: FhirContext) -> Expander:
    """The terminology of the Context in force (the validator's, with its caches), or of base R4 alone."""
    if ctx.validator.profiles is not None:
        profiles = ctx.validator.profiles()
        return Expander(profiles.context, profiles.terminology)
    return _base()


_BASE: list[Expander] = []


def _base() -> Expander:
    if not _BASE:
        context = Context()
        _BASE.append(Expander(context, Terminology(context)))
    return _BASE[0]


def conformance_by_id(ctx: FhirContext, context: Context, rtype: str, rid: str) -> dict[str, Any] | None:
    """The ValueSet or CodeSystem ``{rtype}/{rid}``: the stored resource (the installed packages' and the service's
    own are stored under the ids of ``dui.profiles.catalogue.resource_id``; a client's own too), else one of base R4,
    which is not stored, by its own id (``ValueSet/administrative-gender``)."""
    version = ctx.repo.read(rtype, rid)
    if version is not None:
        return None if version.deleted or version.body is None else jsontext.parse(version.body, stored=True)
    return context.by_id(rtype, rid)


# -- arguments --------------------------------------------------------------------------------------------------


@dataclass
class Arguments:
    """The parameters of one call, from the query (GET) or a Parameters body (POST): name -> values, each a
    string (query) or a ``Parameters.parameter`` (body)."""

    values: dict[str, list[Any]]

    def _first(self, name: str) -> Any:
        """The first value given for ``name``, or None."""
        found = self.values.get(name)
        return found[0] if found else None

    def text(self, name: str, key: str = "") -> str | None:
        found = self.values.get(name)
        if not found:
            return None
        if len(found) > 1:
            raise Invalid(f"{name} is given {len(found)} times; it takes one value", expression=name)
        value = found[0]
        if isinstance(value, str):
            return value
        for k in ((key,) if key else ("valueUri", "valueCode", "valueString", "valueCanonical", "valueUrl")):
            if isinstance(value.get(k), str):
                return str(value[k])
        raise Invalid(f"{name} has no value of the expected type", expression=name)

    def flag(self, name: str) -> bool:
        found = self.values.get(name)
        if not found:
            return False
        value = found[0]
        if isinstance(value, str):
            if value not in ("true", "false"):
                raise Invalid(f"{name} is true or false", expression=name)
            return value == "true"
        if not isinstance(value.get("valueBoolean"), bool):
            raise Invalid(f"{name} is a boolean (valueBoolean)", expression=name)
        return bool(value["valueBoolean"])

    def number(self, name: str) -> int | None:
        value = self._first(name)
        if value is None:
            return None
        raw = value if isinstance(value, str) else value.get("valueInteger")
        if isinstance(raw, str) and raw.isdigit():
            raw = int(raw)
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise Invalid(f"{name} is a non-negative integer", expression=name)
        return raw

    def resource(self, name: str, rtype: str) -> dict[str, Any] | None:
        value = self._first(name)
        if value is None:
            return None
        resource = value.get("resource") if isinstance(value, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
            raise Invalid(f"{name} is a {rtype} resource (POST it in a Parameters)", expression=name)
        return resource

    def coding(self, name: str) -> dict[str, Any] | None:
        value = self._first(name)
        if value is None:
            return None
        if isinstance(value, str):  # system|code in a query
            system, bar, code = value.rpartition("|")
            return {"system": system, "code": code} if bar else {"code": value}
        coding = value.get("valueCoding")
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            raise Invalid(f"{name} is a Coding with a code (valueCoding)", expression=name)
        return coding

    def concept(self, name: str) -> dict[str, Any] | None:
        value = self._first(name)
        if value is None:
            return None
        concept = value.get("valueCodeableConcept") if isinstance(value, dict) else None
        if not isinstance(concept, dict):
            raise Invalid(f"{name} is a CodeableConcept (valueCodeableConcept; POST it in a Parameters)",
                          expression=name)
        return concept


def arguments(ctx: FhirContext, req: FhirRequest, allowed: tuple[str, ...], refused: tuple[str, ...] = REFUSED,
              ) -> Arguments:
    values: dict[str, list[Any]] = {}
    pairs: Iterable[tuple[str, Any]] = list(req.query)
    if req.method == "POST" and (req.body or req.resource is not None):
        body = parse_body(ctx, req)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise Invalid("The body of this operation is a Parameters resource", expression="resourceType")
        ctx.validator.check(body)
        pairs = [*pairs, *((p.get("name"), p) for p in body.get("parameter") or [])]
    for name, value in pairs:
        if name in FORMAT:
            continue
        if name in refused:
            raise Invalid(f"the parameter '{name}' is not supported by this server", code="not-supported",
                          expression=name)
        if name not in allowed:
            if req.strict or isinstance(value, dict):
                raise Invalid(f"'{str(name)[:60]}' is not a parameter of this operation (expected: "
                              f"{', '.join(allowed)})", expression=str(name)[:60])
            continue  # an unknown query parameter is ignored, as in searches (refused under handling=strict)
        values.setdefault(name, []).append(value)
    return Arguments(values)


def _refusal(err: NotExpandable) -> Unprocessable:
    return Unprocessable(str(err), code=err.code)


# -- $expand ----------------------------------------------------------------------------------------------------


def expand(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str | None = None) -> FhirResponse:
    args = arguments(ctx, req, EXPAND, EXPAND_REFUSED + REFUSED)
    terms = expander(ctx)
    value_set = _value_set(ctx, terms, args, rid)
    offset = args.number("offset") or 0
    count = args.number("count")
    if count is not None and count > MAX_EXPANSION:
        raise Unprocessable(f"count is at most {MAX_EXPANSION} here", code="too-costly")
    try:
        expansion = terms.expand(value_set)
    except NotExpandable as err:
        raise _refusal(err) from None
    concepts = expansion.concepts
    text = args.text("filter")
    if text:
        folded = fold(text)
        concepts = [c for c in concepts if c.matches(folded)]
    if args.flag("activeOnly"):
        concepts = [c for c in concepts if not c.inactive]
    if args.flag("excludeNotForUI"):
        concepts = [c for c in concepts if not c.abstract]
    if count is None and len(concepts) > MAX_EXPANSION:
        raise Unprocessable(f"the expansion holds {len(concepts):,} concepts, more than the {MAX_EXPANSION:,} "
                            "given at once here: narrow it with filter, or page it with count and offset",
                            code="too-costly")
    page = concepts[offset:offset + count] if count is not None else concepts[offset:]
    language = args.text("displayLanguage")
    designations = args.flag("includeDesignations")
    parameters: list[dict[str, Any]] = []
    for name, key in (("filter", "valueString"), ("displayLanguage", "valueCode")):
        if args.text(name):
            parameters.append({"name": name, key: args.text(name)})
    for name in ("activeOnly", "includeDesignations", "excludeNotForUI"):
        if args.values.get(name):
            parameters.append({"name": name, "valueBoolean": args.flag(name)})
    if args.values.get("offset"):
        parameters.append({"name": "offset", "valueInteger": offset})
    if count is not None:
        parameters.append({"name": "count", "valueInteger": count})
    for system, version in sorted(expansion.used.items()):
        parameters.append({"name": "used-codesystem", "valueUri": f"{system}|{version}" if version else system})
    out: dict[str, Any] = {key: value_set[key] for key in ("id", "url", "version", "name", "title", "status")
                           if key in value_set}
    out = {"resourceType": "ValueSet", **out, "expansion": {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": ctx.clock().isoformat(timespec="seconds"),
        "total": len(concepts),
        "offset": offset,
        **({"parameter": parameters} if parameters else {}),
        **({"contains": [_contains(c, language, designations) for c in page]} if page else {}),
    }}
    if "status" not in out:
        out["status"] = "active"
    return FhirResponse(200, out)


def _contains(concept: Concept, language: str | None, designations: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"system": concept.system}
    if concept.version:
        item["version"] = concept.version
    if concept.abstract:
        item["abstract"] = True
    if concept.inactive:
        item["inactive"] = True
    item["code"] = concept.code
    display = concept.display_in(language)
    if display:
        item["display"] = display
    if designations and concept.designations:
        item["designation"] = [dict(d) for d in concept.designations]
    return item


def _value_set(ctx: FhirContext, terms: Expander, args: Arguments, rid: str | None) -> dict[str, Any]:
    given = args.resource("valueSet", "ValueSet")
    url = args.text("url")
    if rid is not None:
        found = conformance_by_id(ctx, terms.context, "ValueSet", rid)
        if found is None:
            raise NotFound(f"ValueSet/{rid} is not known to this server")
        if url is not None or given is not None:
            raise Invalid("ValueSet/{id}/$expand takes neither url nor valueSet", expression="url")
        return found
    if given is not None:
        if url is not None:
            raise Invalid("give url or valueSet, not both", expression="url")
        return given
    if url is None:
        raise Invalid("$expand needs the url of a value set (or a valueSet, or ValueSet/{id}/$expand)",
                      code="required", expression="url")
    try:
        return terms.value_set(url, args.text("valueSetVersion"))
    except UnknownTerm as err:
        raise NotFound(str(err)) from None


# -- $lookup ----------------------------------------------------------------------------------------------------


def lookup(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    args = arguments(ctx, req, LOOKUP)
    system, code, version = _system_code(args, "system", "code", "coding", "version")
    if not system:
        raise Invalid("$lookup needs the system of the code (system, or coding)", code="required",
                      expression="system")
    terms = expander(ctx)
    try:
        found = terms.lookup(system, code, version)
    except UnknownTerm as err:
        raise NotFound(str(err), code="not-found") from None
    except NotExpandable as err:
        raise _refusal(err) from None
    wanted = set((args.values.get("property") and [_plain(v) for v in args.values["property"]]) or [])
    codes, concept = found.codes, found.concept
    out: list[dict[str, Any]] = [{"name": "name", "valueString": codes.name or system}]
    if codes.version:
        out.append({"name": "version", "valueString": codes.version})
    display = concept.display_in(args.text("displayLanguage"))
    if display:
        out.append({"name": "display", "valueString": display})
    for designation in concept.designations:
        part = [{"name": "value", "valueString": str(designation.get("value", ""))}]
        if isinstance(designation.get("language"), str):
            part.insert(0, {"name": "language", "valueCode": designation["language"]})
        if isinstance(designation.get("use"), dict):
            part.insert(-1, {"name": "use", "valueCoding": designation["use"]})
        out.append({"name": "designation", "part": part})
    properties: list[tuple[str, dict[str, Any]]] = [("parent", {"valueCode": p}) for p in found.parents]
    properties += [("child", {"valueCode": c}) for c in found.children]
    properties.append(("inactive", {"valueBoolean": concept.inactive}))
    for prop in found.properties:
        name = prop.get("code")
        if name in ("parent", "child") or not isinstance(name, str):
            continue
        value = {k: v for k, v in prop.items() if k.startswith("value")}
        if value:
            properties.append((name, value))
    for name, value in properties:
        if not wanted or name in wanted:
            out.append({"name": "property", "part": [{"name": "code", "valueCode": name},
                                                     {"name": "value", **value}]})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": out})


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else str(value.get("valueCode") or value.get("valueString") or "")


def _system_code(args: Arguments, system_name: str, code_name: str, coding_name: str,
                 version_name: str | None) -> tuple[str | None, str, str | None]:
    coding = args.coding(coding_name)
    system, code = args.text(system_name), args.text(code_name)
    version = args.text(version_name) if version_name else None
    if coding is not None:
        if code is not None and code != coding.get("code"):
            raise Invalid(f"{code_name} and {coding_name} disagree", expression=coding_name)
        system, code = coding.get("system") or system, coding["code"]
        version = coding.get("version") or version
    if not code:
        raise Invalid(f"a code is needed ({code_name}, or {coding_name})", code="required", expression=code_name)
    return system, code, version


# -- $validate-code ---------------------------------------------------------------------------------------------


def validate_value_set(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str | None = None) -> FhirResponse:
    args = arguments(ctx, req, VS_VALIDATE)
    terms = expander(ctx)
    value_set = _value_set(ctx, terms, args, rid)
    language, display = args.text("displayLanguage"), args.text("display")
    codings = _codings(args, "system")
    results: list[Validation] = []
    undecided: list[NotExpandable] = []
    for system, code, shown in codings:
        try:
            results.append(terms.validate_in_value_set(value_set, system, code, shown or display, language))
        except NotExpandable as err:
            undecided.append(err)
    return _validation(results, undecided)


def validate_code_system(ctx: FhirContext, req: FhirRequest, rtype: str, rid: str | None = None) -> FhirResponse:
    args = arguments(ctx, req, CS_VALIDATE)
    terms = expander(ctx)
    url = args.text("url")
    if rid is not None:
        found = conformance_by_id(ctx, terms.context, "CodeSystem", rid)
        if found is None:
            raise NotFound(f"CodeSystem/{rid} is not known to this server")
        url = str(found.get("url", ""))
    given = args.resource("codeSystem", "CodeSystem")
    if given is not None:
        raise Invalid("codeSystem (a CodeSystem given inline) is not supported; name one at hand with url",
                      code="not-supported", expression="codeSystem")
    codings = _codings(args, None, default_system=url)
    results: list[Validation] = []
    undecided: list[NotExpandable] = []
    for system, code, shown in codings:
        if not system:
            raise Invalid("$validate-code on CodeSystem needs url (or a coding with its system)", code="required",
                          expression="url")
        try:
            results.append(terms.validate_in_code_system(system, code, shown or args.text("display"),
                                                         args.text("version"), args.text("displayLanguage")))
        except NotExpandable as err:
            undecided.append(err)
    return _validation(results, undecided)


def _codings(args: Arguments, system_name: str | None, default_system: str | None = None,
             ) -> list[tuple[str | None, str, str | None]]:
    concept = args.concept("codeableConcept")
    if concept is not None:
        codings = [c for c in concept.get("coding", []) if isinstance(c, dict) and isinstance(c.get("code"), str)]
        if not codings:
            raise Invalid("codeableConcept has no coding with a code", expression="codeableConcept")
        return [(c.get("system"), c["code"], c.get("display")) for c in codings]
    coding = args.coding("coding")
    if coding is not None:
        return [(coding.get("system") or default_system, coding["code"], coding.get("display"))]
    code = args.text("code")
    if not code:
        raise Invalid("a code is needed (code, coding or codeableConcept)", code="required", expression="code")
    system = args.text(system_name) if system_name else None
    return [(system or default_system, code, None)]


def _validation(results: list[Validation], undecided: list[NotExpandable]) -> FhirResponse:
    passed = [r for r in results if r.result]
    if passed:
        best = passed[0]
    elif undecided:  # no coding is known to be valid, and some cannot be checked: neither true nor false
        raise Unprocessable("; ".join(str(e) for e in undecided), code="not-supported")
    else:
        best = results[0]
    out: list[dict[str, Any]] = [{"name": "result", "valueBoolean": best.result}]
    if best.message:
        out.append({"name": "message", "valueString": best.message})
    if best.display:
        out.append({"name": "display", "valueString": best.display})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": out})


# -- $subsumes --------------------------------------------------------------------------------------------------


def subsumes(ctx: FhirContext, req: FhirRequest, rtype: str) -> FhirResponse:
    args = arguments(ctx, req, SUBSUMES)
    system_a, code_a, _ = _system_code(args, "system", "codeA", "codingA", None)
    system_b, code_b, _ = _system_code(args, "system", "codeB", "codingB", None)
    if not system_a or not system_b:
        raise Invalid("$subsumes needs the system (system, or codingA and codingB with theirs)", code="required",
                      expression="system")
    if system_a != system_b:
        raise Invalid("codingA and codingB are of different systems: subsumption is within one code system",
                      expression="codingB")
    terms = expander(ctx)
    try:
        outcome = terms.subsumes(system_a, code_a, code_b, args.text("version"))
    except UnknownTerm as err:
        raise NotFound(str(err)) from None
    except NotExpandable as err:
        raise _refusal(err) from None
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome}]})


# -- the operations ---------------------------------------------------------------------------------------------


def operations() -> dict[tuple[str, str], Operation]:
    both = ("GET", "POST")

    def pair(canonical: str, handler: Any) -> Operation:  # Type/$op and Type/{id}/$op (one handler, rid optional)
        return Operation(canonical, both, "type", handler,
                         also=Operation(canonical, both, "instance", handler, stored=False))

    return {
        ("ValueSet", "$expand"): pair(f"{CORE}/ValueSet-expand", expand),
        ("ValueSet", "$validate-code"): pair(f"{CORE}/ValueSet-validate-code", validate_value_set),
        ("CodeSystem", "$validate-code"): pair(f"{CORE}/CodeSystem-validate-code", validate_code_system),
        ("CodeSystem", "$lookup"): Operation(f"{CORE}/CodeSystem-lookup", both, "type", lookup),
        ("CodeSystem", "$subsumes"): Operation(f"{CORE}/CodeSystem-subsumes", both, "type", subsumes),
    }


# -- search: :in, :not-in, :below, :above -----------------------------------------------------------------------


class SearchCodes:
    """The pairs a token value stands for under ``:in`` / ``:not-in`` (the members of a value set, from the
    Terminology's cache, per Context version) and ``:below`` / ``:above`` (a code and its descendants or
    ancestors in a code system at hand)."""

    def __init__(self, terms: Callable[[], Expander], ctx: FhirContext) -> None:
        self._terms = terms  # built on first use: most searches have no such modifier
        self._ctx = ctx

    @cached_property
    def terms(self) -> Expander:
        return self._terms()

    def codes(self, modifier: str, value: str) -> frozenset[tuple[str, str]]:
        if modifier in ("in", "not-in"):
            return self._members(value)
        system, bar, code = value.partition("|")
        if not bar or not system or not code:
            raise Invalid(f":{modifier} takes system|code (the code system must be named): {value[:100]!r}",
                          expression=f":{modifier}")
        codes = self.terms.terminology.code_system(system)
        if codes is None:
            raise Undecidable(f"code system {system} is not at hand here: its hierarchy is not known")
        found = codes.canonical(code)
        if found is None:
            if not codes.complete:
                raise Undecidable(f"code {code!r} is not listed in code system {system} (content {codes.content})")
            raise Invalid(f"code {code!r} is not in code system {system}", code="code-invalid",
                          expression=f":{modifier}")
        related = codes.descendants(found) if modifier == "below" else codes.ancestors(found)
        return frozenset((system, c) for c in {found, *related})

    def _members(self, value: str) -> frozenset[tuple[str, str]]:
        url = value
        if value.startswith("ValueSet/"):
            found = conformance_by_id(self._ctx, self.terms.context, "ValueSet", value.split("/")[1])
            url = str(found.get("url")) if found is not None else ""
        members = self.terms.terminology.members(url) if url else None
        if members is None:
            raise Invalid(f"value set {value[:200]} is not known to this server", code="not-found")
        if not members.complete:
            raise Undecidable(f"value set {value} cannot be expanded in full here: {'; '.join(members.incomplete)}")
        if len(members.pairs) > MAX_SEARCH_CODES:
            raise Undecidable(f"value set {value} has {len(members.pairs):,} codes, more than the "
                              f"{MAX_SEARCH_CODES:,} a search may test here")
        return members.pairs


def code_sets(ctx: FhirContext) -> SearchCodes:
    return SearchCodes(lambda: expander(ctx), ctx)
