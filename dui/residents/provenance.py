"""Each identity change is recorded as a FHIR Provenance that targets the versions it wrote.

The activity says what happened (``dui-identity-event``), the ``dui-identity-status-change``
extension the status before and after, ``reason`` why, and the agent who. A resident's identity
history is the list of these Provenances (``Provenance?target=Patient/{id}``), which is also how an
administrator undoes a merge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dui.auth.actor import Actor
from dui.fhir.interactions.base import FhirContext
from dui.fhir.repository import ResourceVersion
from dui.fhir.sql import format_instant
from fhir_profiles import CANONICAL
from ins.status import Event, IdentityStatus, StatusChange, StatusHistory

EVENT_SYSTEM = f"{CANONICAL}/CodeSystem/dui-identity-event"
STATUS_CHANGE = f"{CANONICAL}/StructureDefinition/dui-identity-status-change"
ACTOR_SYSTEM = f"{CANONICAL}/actor"

# Activities beyond the status events of ``ins.status.Event``.
ADMITTED = "admitted"  # a new record with a provisional identity
VERIFIED = "ins-verified"  # INSi confirmed the stored INS; nothing else changed
MATRICULE_CHANGED = "matricule-changed"  # INSi now returns a NIR where the record held an NIA
MERGE = "merge"
UNMERGE = "unmerge"


def record(ctx: FhirContext, activity: str, targets: list[ResourceVersion], *, reason: str | None = None,
           change: StatusChange | None = None, entities: list[str] | None = None) -> ResourceVersion:
    """Store a Provenance of ``activity`` over the given versions (the first target is the resident)."""
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": v.versioned_reference} for v in targets],
        "recorded": format_instant(ctx.clock()),
        "activity": {"coding": [{"system": EVENT_SYSTEM, "code": activity}]},
        "agent": [_agent(ctx.actor)],
    }
    if change is not None:
        provenance["extension"] = [{"url": STATUS_CHANGE, "extension": [
            {"url": "before", "valueCode": change.before.code},
            {"url": "after", "valueCode": change.after.code},
            *([{"url": "document", "valueCode": change.document}] if change.document else []),
        ]}]
    if reason:
        provenance["reason"] = [{"text": reason}]
    if entities:
        provenance["entity"] = [{"role": "source", "what": {"reference": ref}} for ref in entities]
    return ctx.internal.create("Provenance", provenance)


def activity_of(provenance: dict[str, Any]) -> str | None:
    for coding in (provenance.get("activity") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == EVENT_SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def status_history(provenances: list[dict[str, Any]]) -> StatusHistory:
    """The status changes the Provenances record, in time order."""
    changes = []
    for prov in sorted(provenances, key=lambda p: str(p.get("recorded"))):
        ext = next((e for e in prov.get("extension") or [] if e.get("url") == STATUS_CHANGE), None)
        activity = activity_of(prov)
        if ext is None or activity not in {e.value for e in Event}:
            continue
        values = {sub["url"]: sub.get("valueCode") for sub in ext.get("extension") or []}
        before, after = IdentityStatus.from_code(values["before"]), IdentityStatus.from_code(values["after"])
        changes.append(StatusChange(before, after, Event(activity), datetime.fromisoformat(str(prov["recorded"])),
                                    values.get("document"), (prov.get("reason") or [{}])[0].get("text")))
    return StatusHistory(changes, changes[0].before if changes else IdentityStatus.PROV)


def _agent(actor: Actor) -> dict[str, Any]:
    return {"who": actor_reference(actor)}


def actor_reference(actor: Actor) -> dict[str, Any]:
    """A logical reference to the actor (a staff login, a client id): the author of what they record."""
    return {"identifier": {"system": f"{ACTOR_SYSTEM}/{actor.kind}", "value": actor.id},
            "display": f"{actor.kind}:{actor.id}"}
