"""Which residents a FHIR payload touches: the audit trail's "which resident" for each act."""

from __future__ import annotations

from typing import Any

# Elements that place a resource in a resident's record, as most FHIR resources name them.
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


def patients_in(payload: Any) -> list[str]:
    """Ids of the Patients a resource, or a Bundle's resources, belong to (in first-seen order)."""
    found: dict[str, None] = {}
    for resource in _resources(payload):
        if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
            found[resource["id"]] = None
            continue
        for name in PATIENT_ELEMENTS:
            pid = _patient_id(resource.get(name))
            if pid:
                found[pid] = None
    return list(found)


def _resources(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        return []
    if payload.get("resourceType") == "Bundle":
        out = []
        for entry in payload.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                out.extend(_resources(entry["resource"]))
        return out
    if payload.get("resourceType") == "Parameters":
        return [p["resource"] for p in payload.get("parameter") or [] if isinstance(p.get("resource"), dict)]
    return [payload]


def _patient_id(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str) or "Patient/" not in ref:
        return None
    tail = ref.split("Patient/", 1)[1]
    return tail.split("/", 1)[0] or None
