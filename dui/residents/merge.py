"""Merging two records of the same resident, and undoing it.

``merge`` keeps the target: every current resource whose references point at the source now points
at the target (a new version each; their history keeps the old one), the source becomes inactive
with ``link`` replaced-by the target, the target gets ``link`` replaces the source
(http://hl7.org/fhir/R4/patient-definitions.html#Patient.link), and a Provenance lists every version
written. Nothing is deleted. ``unmerge`` reads that Provenance back and moves the same resources back;
only an administrator may run it. Provenance and AuditEvent resources are records of the past and are
never moved. References are found through the search index (every reference a search parameter covers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from dui.errors import Conflict, Forbidden, Invalid, NotFound
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import Current, ResourceVersion
from dui.fhir.search.plan import parse_search
from dui.residents import mapping, provenance
from dui.residents.operations import load_patient, save_patient

NEVER_MOVED = frozenset({"Provenance", "AuditEvent"})
ADMINISTRATOR = "administrateur"


@dataclass(frozen=True)
class MergeOutcome:
    source: ResourceVersion
    target: ResourceVersion
    moved: list[str]  # "Type/id" of the resources whose references moved
    preview: bool = False


def merge(ctx: FhirContext, source_id: str, target_id: str, *, preview: bool = False) -> MergeOutcome:
    """Merge ``source_id`` into ``target_id``; with ``preview``, say what would move and write nothing."""
    if source_id == target_id:
        raise Invalid("The source and target of a merge are two different Patients", expression="target-patient")
    loaded = _lock_both(ctx, source_id, target_id)
    (s_current, source), (t_current, target) = loaded[source_id], loaded[target_id]
    for pid, patient in ((source_id, source), (target_id, target)):
        into = merged_into(patient)
        if into is not None:
            raise Conflict(f"Patient/{pid} was already merged into Patient/{into}", code="conflict")
    s_ins, t_ins = mapping.active_ins(source), mapping.active_ins(target)
    if s_ins is not None and t_ins is not None and (s_ins.kind, s_ins.value) != (t_ins.kind, t_ins.value):
        raise Conflict("The two Patients carry different INS: they are two people and cannot be merged",
                       code="business-rule")
    if s_ins is not None and t_ins is None:
        raise Conflict("The source carries an INS and the target does not: merge into the record that holds the "
                       "INS (swap source-patient and target-patient)", code="business-rule")
    referrers = _referrers(ctx, source_id, {s_current.rid, t_current.rid})
    moved = [v.reference for v in referrers]
    if preview:
        return MergeOutcome(_read(ctx, source_id), _read(ctx, target_id), moved, preview=True)
    written = [_retarget(ctx, v, source_id, target_id) for v in referrers]
    source = copy.deepcopy(source)
    source["active"] = False
    source["link"] = [*(source.get("link") or []), {"other": {"reference": f"Patient/{target_id}"},
                                                    "type": "replaced-by"}]
    target = copy.deepcopy(target)
    target["link"] = [*(target.get("link") or []), {"other": {"reference": f"Patient/{source_id}"},
                                                    "type": "replaces"}]
    s_version = save_patient(ctx, s_current, source)
    t_version = save_patient(ctx, t_current, target)
    provenance.record(ctx, provenance.MERGE, [t_version, s_version, *written],
                      reason=f"Patient/{source_id} merged into Patient/{target_id}")
    return MergeOutcome(s_version, t_version, moved)


def unmerge(ctx: FhirContext, source_id: str, reason: str) -> MergeOutcome:
    """Undo the last merge of ``source_id``: its resources back, its previous version restored (administrators)."""
    if ADMINISTRATOR not in ctx.actor.roles:
        raise Forbidden("Only an administrator may undo a merge")
    if not reason.strip():
        raise Invalid("Undoing a merge needs a reason", expression="reason")
    _, source = load_patient(ctx, source_id, lock=False)
    target_id = merged_into(source)
    if target_id is None:
        raise Conflict(f"Patient/{source_id} is not merged into another Patient", code="conflict")
    loaded = _lock_both(ctx, source_id, target_id)
    (s_current, _), (t_current, target) = loaded[source_id], loaded[target_id]
    record = _merge_record(ctx, source_id, target_id)
    source_version = next(int(ref.rsplit("/", 1)[1]) for ref in _targets(record) if ref.startswith(
        f"Patient/{source_id}/"))
    before = ctx.internal.vread("Patient", source_id, source_version - 1)
    if before is None or before.body is None:
        raise Conflict(f"Patient/{source_id} has no version before the merge to restore", code="conflict")
    written = []
    for ref in _targets(record)[2:]:
        rtype, rid = ref.split("/")[:2]
        found = ctx.internal.read(rtype, rid)
        if found is not None and found.body is not None:
            written.append(_retarget(ctx, found, target_id, source_id))
    target = copy.deepcopy(target)
    target["link"] = [link for link in target.get("link") or []
                      if not (link.get("type") == "replaces"
                              and (link.get("other") or {}).get("reference") == f"Patient/{source_id}")]
    if not target["link"]:
        del target["link"]
    s_version = save_patient(ctx, s_current, before.resource())
    t_version = save_patient(ctx, t_current, target)
    provenance.record(ctx, provenance.UNMERGE, [s_version, t_version, *written], reason=reason)
    return MergeOutcome(s_version, t_version, [v.reference for v in written])


def merged_into(patient: dict[str, Any]) -> str | None:
    """The id of the Patient this one was merged into (``link`` replaced-by), if any."""
    for link in patient.get("link") or []:
        ref = (link.get("other") or {}).get("reference") if isinstance(link, dict) else None
        if link.get("type") == "replaced-by" and isinstance(ref, str) and ref.startswith("Patient/"):
            return ref.split("/")[1]
    return None


def _lock_both(ctx: FhirContext, a: str, b: str) -> dict[str, tuple[Current, dict[str, Any]]]:
    """Both rows locked in id order, so that concurrent merges of the same records never deadlock; each
    must be a record the actor may see."""
    for pid in (a, b):
        if ctx.repo.current("Patient", pid) is None:  # a scoped repository refuses other residents
            raise NotFound(f"Patient/{pid} does not exist")
    return {pid: load_patient(ctx, pid) for pid in sorted((a, b))}


def _read(ctx: FhirContext, pid: str) -> ResourceVersion:
    found = ctx.internal.read("Patient", pid)
    assert found is not None
    return found


def _referrers(ctx: FhirContext, source_id: str, skip: set[int]) -> list[ResourceVersion]:
    rids = [r for r in ctx.internal.referrers("Patient", source_id) if r not in skip]
    return [v for v in ctx.internal.fetch(rids) if v.type not in NEVER_MOVED and v.body is not None]


def _retarget(ctx: FhirContext, version: ResourceVersion, old: str, new: str) -> ResourceVersion:
    """A new version of ``version`` whose references to ``Patient/old`` point at ``Patient/new``."""
    current = ctx.internal.current(version.type, version.id, for_update=True)
    assert current is not None
    body = _replace_references(version.resource(), old, new, ctx.base)
    return ctx.internal.update(current, version.type, version.id, body)


def _replace_references(value: Any, old: str, new: str, base: str) -> Any:
    if isinstance(value, list):
        return [_replace_references(v, old, new, base) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _replace_references(v, old, new, base) for k, v in value.items()}
    ref = value.get("reference")
    if isinstance(ref, str):
        prefix = f"{base}/" if ref.startswith(f"{base}/") else ""
        local = ref[len(prefix):]
        if local == f"Patient/{old}" or local.startswith(f"Patient/{old}/_history/"):
            out["reference"] = f"{prefix}Patient/{new}"
    return out


def _merge_record(ctx: FhirContext, source_id: str, target_id: str) -> dict[str, Any]:
    plan = parse_search("Provenance", [("target", f"Patient/{source_id}"), ("_sort", "-_lastUpdated")],
                        ctx.registry, ctx.settings.limits, strict=True)
    plan.count = 100
    for version in ctx.internal.fetch(ctx.internal.search(plan, total=None).rids):
        record = version.resource()
        targets = _targets(record)
        if provenance.activity_of(record) == provenance.MERGE and targets[:1] and \
                targets[0].startswith(f"Patient/{target_id}/"):
            return record
    raise NotFound(f"No merge record of Patient/{source_id} into Patient/{target_id} was found")


def _targets(record: dict[str, Any]) -> list[str]:
    return [t.get("reference", "") for t in record.get("target") or [] if isinstance(t, dict)]
