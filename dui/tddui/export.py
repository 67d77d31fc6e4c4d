"""TDDUI producer: residents' records as one ``tddui-bundle`` transaction Bundle (flux 1).

What goes out, per resident: the Patient (through the sharing gate: no INS unless the identity is qualified),
the resources of the types TDDUI carries that refer to the resident (stays and events, evaluations, documents,
consents, goals, care plans, needs, tasks, related persons), the tasks that refer to those stays and events, then
the organizations, practitioners and practitioner roles all of these refer to. A resource that also refers to a
resident outside the export is left out.

Every entry is a ``POST`` of its resource type, its ``fullUrl`` a ``urn:uuid`` derived from its position, its
resource without server id, version or update time and with the TDDUI profile that fits in ``meta.profile``.
References between exported resources point at those fullUrls; other local references become absolute URLs on
this server. A document's content kept as a Binary of this server goes inline as attachment data.

The output depends only on the content: entries come by resource type, then in creation order (row order), and an
import creates them in entry order, so export -> import into an empty store -> export gives the same entries in the
same order with the same fullUrls (only ``Bundle.id`` and ``timestamp`` differ).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dui.auth.finess import check_finess
from dui.errors import Invalid, NotFound
from dui.fhir.definitions import r4
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import ResourceVersion
from dui.fhir.scope import FINESS_SYSTEM
from dui.fhir.search.plan import parse_search
from dui.fhir.sql import format_instant
from dui.residents import sharing
from dui.tddui import profiles

# Entry order: the resident first, then the directory, then the record.
TYPE_ORDER = ("Patient", "RelatedPerson", "Organization", "Practitioner", "PractitionerRole", "Encounter",
              "QuestionnaireResponse", "DocumentReference", "CarePlan", "Goal", "ServiceRequest", "Consent", "Task")
RECORD_TYPES = frozenset(TYPE_ORDER) - {"Patient", "Organization", "Practitioner", "PractitionerRole"}
DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole"})
# fullUrls are name-based UUIDs of the entry's position in this namespace (uuid5 of the IG's canonical URL).
FULL_URL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, profiles.CANONICAL)
_PAGE = 500

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Selection:
    """Whose records to export: some residents, the residents an establishment manages, or everyone."""

    residents: tuple[str, ...] = ()
    establishment: str | None = None
    everyone: bool = False


@dataclass(frozen=True)
class Export:
    bundle: dict[str, Any]
    residents: tuple[str, ...]  # the Patient ids exported (for the audit trail)


def select_residents(ctx: FhirContext, selection: Selection) -> list[str]:
    """The Patient ids of ``selection``, in creation order (``NotFound`` / ``Invalid`` saying what is wrong)."""
    store = ctx.internal
    if selection.residents:
        found = []
        for pid in dict.fromkeys(selection.residents):
            version = store.read("Patient", pid)
            if version is None or version.deleted:
                raise NotFound(f"Patient/{pid} does not exist")
            found.append(version)
        return [v.id for v in sorted(found, key=lambda v: v.rid)]
    if selection.establishment is not None:
        try:
            finess = check_finess(selection.establishment)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        orgs = _search_all(ctx, "Organization", [("identifier", f"{FINESS_SYSTEM}|{finess}")])
        if not orgs:
            raise NotFound(f"No Organization carries FINESS {finess} ({FINESS_SYSTEM})")
        managed = _search_all(ctx, "Patient", [("organization", ",".join(f"Organization/{v.id}" for v in orgs))])
        return [v.id for v in managed if not _merged_away(v)]
    if selection.everyone:
        return [v.id for v in _search_all(ctx, "Patient", []) if not _merged_away(v)]
    raise Invalid("Say whose records to export: residents, an establishment (FINESS) or everyone")


def export_bundle(ctx: FhirContext, resident_ids: Sequence[str], progress: Progress | None = None) -> Export:
    """The ``tddui-bundle`` of these residents' records."""
    store = ctx.internal
    residents = set(resident_ids)
    chosen: dict[str, ResourceVersion] = {}
    for pid in resident_ids:
        patient = store.read("Patient", pid)
        if patient is None or patient.deleted:
            raise NotFound(f"Patient/{pid} does not exist")
        chosen[patient.reference] = patient
        record = _referring(ctx, [patient.reference], residents, chosen)
        _referring(ctx, [v.reference for v in record if v.type == "Encounter"], residents, chosen)
        if progress is not None:
            progress(pid)
    _add_directory(ctx, chosen)
    ordered = sorted(chosen.values(), key=lambda v: (TYPE_ORDER.index(v.type), v.rid))
    full_urls = {v.reference: f"urn:uuid:{uuid.uuid5(FULL_URL_NAMESPACE, str(n))}" for n, v in enumerate(ordered)}
    entries = [_entry(ctx, version, full_urls) for version in ordered]
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [profiles.BUNDLE.url]},
        "type": "transaction",
        "timestamp": format_instant(ctx.clock()),
        "entry": entries,
    }
    return Export(bundle, tuple(resident_ids))


# -- choosing ---------------------------------------------------------------------------------------


def _search_all(ctx: FhirContext, rtype: str, pairs: list[tuple[str, str]]) -> list[ResourceVersion]:
    """Every current match, in row (creation) order."""
    out: list[ResourceVersion] = []
    cursor = None
    while True:
        plan = parse_search(rtype, pairs, ctx.registry, ctx.settings.limits, strict=True)
        plan.count, plan.cursor = _PAGE, cursor
        result = ctx.internal.search(plan, total=None)
        out.extend(ctx.internal.fetch(result.rids))
        cursor = result.next_cursor
        if cursor is None:
            return sorted(out, key=lambda v: v.rid)


def _merged_away(patient: ResourceVersion) -> bool:
    """A record merged into another (``link`` replaced-by): its data moved to the surviving record."""
    return any(isinstance(link, dict) and link.get("type") == "replaced-by"
               for link in patient.resource().get("link") or [])


def _referring(ctx: FhirContext, targets: Iterable[str], residents: set[str],
               chosen: dict[str, ResourceVersion]) -> list[ResourceVersion]:
    """The resources of the record types that refer to ``targets`` and to no resident outside ``residents``;
    added to ``chosen``, and returned."""
    added = []
    for target in targets:
        rtype, rid = target.split("/", 1)
        for version in ctx.internal.fetch(ctx.internal.referrers(rtype, rid)):
            if version.type not in RECORD_TYPES or version.reference in chosen or version.body is None:
                continue
            body = version.resource()
            others = {ref[1] for ref in _local_references(ctx, body) if ref[0] == "Patient"} - residents
            if others:
                continue
            chosen[version.reference] = version
            added.append(version)
    return added


def _add_directory(ctx: FhirContext, chosen: dict[str, ResourceVersion]) -> None:
    """Add the organizations, practitioners and roles the chosen resources refer to, and those they refer to."""
    pending = list(chosen.values())
    while pending:
        found = []
        for version in pending:
            for rtype, rid in _local_references(ctx, version.resource()):
                if rtype not in DIRECTORY_TYPES or f"{rtype}/{rid}" in chosen:
                    continue
                target = ctx.internal.read(rtype, rid)
                if target is not None and not target.deleted:
                    chosen[target.reference] = target
                    found.append(target)
        pending = found


# -- writing ----------------------------------------------------------------------------------------


def _entry(ctx: FhirContext, version: ResourceVersion, full_urls: dict[str, str]) -> dict[str, Any]:
    resource = version.resource()
    if version.type == "Patient":
        resource = sharing.transferable_patient(resource)
    profile = profiles.profile_for(resource)
    out: dict[str, Any] = {"resourceType": version.type, "meta": _meta(resource, profile)}
    out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
    _rewrite(ctx, out, full_urls)
    if version.type == "DocumentReference":
        _inline_binaries(ctx, out)
    return {"fullUrl": full_urls[version.reference], "resource": out,
            "request": {"method": "POST", "url": version.type}}


def _meta(resource: dict[str, Any], profile: profiles.Profile | None) -> dict[str, Any]:
    """The TDDUI profile first, then the other profiles, security labels and tags; nothing of this server."""
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    meta = meta or {}
    others = [p for p in meta.get("profile") or [] if not (profile and isinstance(p, str)
                                                           and p.split("|", 1)[0] == profile.url)]
    out: dict[str, Any] = {}
    listed = ([profile.url] if profile else []) + others
    if listed:
        out["profile"] = listed
    for key in ("security", "tag"):
        if meta.get(key):
            out[key] = meta[key]
    return out


def _rewrite(ctx: FhirContext, node: Any, full_urls: dict[str, str]) -> None:
    """References to exported resources -> their fullUrls; other local references -> absolute URLs."""
    if isinstance(node, list):
        for item in node:
            _rewrite(ctx, item, full_urls)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "reference" and isinstance(value, str):
            target = _local_target(ctx, value)
            if target is not None:
                reference = f"{target[0]}/{target[1]}"
                node[key] = full_urls.get(reference, f"{ctx.base}/{reference}")
        elif isinstance(value, dict | list):
            _rewrite(ctx, value, full_urls)


def _inline_binaries(ctx: FhirContext, document: dict[str, Any]) -> None:
    for content in document.get("content") or []:
        attachment = content.get("attachment") if isinstance(content, dict) else None
        url = attachment.get("url") if isinstance(attachment, dict) else None
        target = _local_target(ctx, url) if isinstance(url, str) else None
        if attachment is None or target is None or target[0] != "Binary":
            continue
        stored = ctx.internal.read("Binary", target[1])
        if stored is None or stored.deleted:
            continue
        binary = stored.resource()
        attachment.pop("url")
        attachment.setdefault("contentType", binary.get("contentType"))
        if isinstance(binary.get("data"), str):
            attachment["data"] = binary["data"]


# -- references -------------------------------------------------------------------------------------


def _local_references(ctx: FhirContext, node: Any) -> Iterable[tuple[str, str]]:
    if isinstance(node, list):
        for item in node:
            yield from _local_references(ctx, item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                target = _local_target(ctx, value)
                if target is not None:
                    yield target
            elif isinstance(value, dict | list):
                yield from _local_references(ctx, value)


def _local_target(ctx: FhirContext, reference: str) -> tuple[str, str] | None:
    """``(type, id)`` of a reference to a resource of this server (``Type/id``, versioned or absolute)."""
    if reference.startswith(ctx.base + "/"):
        reference = reference[len(ctx.base) + 1:]
    parts = reference.split("/")
    if len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
        return None
    if parts[0] not in r4().resource_types or not parts[1]:
        return None
    return parts[0], parts[1]
