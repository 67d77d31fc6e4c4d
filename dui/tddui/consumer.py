"""TDDUI consumer: a ``tddui-bundle`` POSTed at the FHIR base (or given to ``dui import --tddui``).

A transaction Bundle is a TDDUI transfer when its ``meta.profile`` names ``tddui-bundle`` or an entry's
``request.url`` names a TDDUI profile. Before the transaction machinery runs it (all or nothing, every write
rule applying to every entry as in any transaction), ``transfer_rule``:

- refuses a transfer that is not a transaction, or an entry whose method is not ``POST`` (TDDUI creates only);
- maps a profile name in ``request.url`` (``TDDUIPatientINS``, as the IG's own example does) to its resource
  type, refusing a name whose type is not the entry's ``resourceType``;
- validates the Bundle against the ``tddui-bundle`` profile (``Validator.check_profiles``).

Every refusal is a 422 naming the entry, and nothing is stored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from dui.errors import Invalid, Issue, Unprocessable
from dui.fhir import jsontext, router
from dui.fhir.interactions.base import FhirContext, FhirRequest
from dui.tddui import profiles


def is_transfer(bundle: dict[str, Any]) -> bool:
    """Whether a Bundle is a TDDUI transfer (its profile, or a TDDUI profile name in a request.url)."""
    meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
    if any(isinstance(url, str) and profiles.by_url(url) is profiles.BUNDLE for url in (meta or {}).get("profile")
           or []):
        return True
    return any(profiles.named(_request_path(entry)) is not None for entry in _entries(bundle))


def transfer_rule(ctx: FhirContext, bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle to run: unchanged when it is not a TDDUI transfer, else checked and normalised."""
    if not is_transfer(bundle):
        return bundle
    if bundle.get("type") != "transaction":
        raise Unprocessable(f"A TDDUI transfer is a Bundle of type transaction, not {bundle.get('type')!r}",
                            code="business-rule", expression="Bundle.type")
    out = copy.deepcopy(bundle)
    issues = [issue for index, entry in enumerate(_entries(out)) for issue in _check_entry(index, entry)]
    if issues:
        count = len(issues)
        raise Unprocessable(f"The TDDUI transfer has {count} problem{'s' if count > 1 else ''}; nothing was stored",
                            issues=issues, code="business-rule")
    ctx.validator.check_profiles(out, [profiles.BUNDLE.url])
    return out


def _check_entry(index: int, entry: Any) -> list[Issue]:
    """The entry's problems; a profile name in its ``request.url`` is replaced by the resource type."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        return []  # the transaction machinery names what is missing
    request = entry["request"]
    method, url = request.get("method"), request.get("url")
    if method != "POST":
        return [Issue(f"{where} ({method} {url}): a TDDUI transfer only creates (request.method POST)",
                      "business-rule", expression=(f"{where}.request.method",))]
    path = _request_path(entry)
    profile = profiles.named(path)
    if profile is None:
        return []
    resource = entry.get("resource")
    actual = resource.get("resourceType") if isinstance(resource, dict) else None
    if actual != profile.rtype:
        return [Issue(f"{where} (POST {url}): the profile {profile.name} is for a {profile.rtype}, but the entry "
                      f"holds {'a ' + str(actual) if actual else 'no resource'}", "business-rule",
                      expression=(f"{where}.request.url",))]
    _, mark, query = str(url).partition("?")
    request["url"] = profile.rtype + mark + query
    return []


def _entries(bundle: dict[str, Any]) -> list[Any]:
    entries = bundle.get("entry")
    return entries if isinstance(entries, list) else []


def _request_path(entry: Any) -> str:
    request = entry.get("request") if isinstance(entry, dict) else None
    url = request.get("url") if isinstance(request, dict) else None
    return url.split("?", 1)[0].strip("/") if isinstance(url, str) else ""


# -- import from a file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    created: dict[str, int]  # resource type -> how many were created
    residents: tuple[str, ...]  # ids of the Patients created (for the audit trail)


def import_transfer(ctx: FhirContext, body: bytes) -> Imported:
    """Run a TDDUI transfer read from a file through the FHIR base, as a POST would (``dui import --tddui``)."""
    content = jsontext.parse(body, ctx.settings.limits.max_json_depth)
    if not isinstance(content, dict) or content.get("resourceType") != "Bundle" or not is_transfer(content):
        raise Invalid("Not a TDDUI transfer: expected a Bundle whose meta.profile names "
                      f"{profiles.BUNDLE.url} (or whose request.url hold TDDUI profile names)")
    request = FhirRequest("POST", "", (), {"content-type": "application/fhir+json", "prefer": "return=minimal"},
                          body)
    response = router.handle(ctx, request)
    created: dict[str, int] = {}
    residents = []
    for entry in response.body.get("entry", []):
        location = str(entry.get("response", {}).get("location", ""))
        rtype, _, rest = location.partition("/")
        created[rtype] = created.get(rtype, 0) + 1
        if rtype == "Patient":
            residents.append(rest.split("/", 1)[0])
    return Imported(created, tuple(residents))
