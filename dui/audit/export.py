"""Audit entries as FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html), built as plain dicts."""

from __future__ import annotations

from typing import Any

from dui.fhir.sql import format_instant

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACTION = {"read": "R", "vread": "R", "search": "E", "history": "R", "create": "C", "update": "U", "patch": "U",
          "delete": "D", "operation": "E", "transaction": "E", "export": "R", "login": "E"}
SUBTYPE = {"read": "read", "vread": "vread", "search": "search-type", "history": "history-instance",
           "create": "create", "update": "update", "patch": "patch", "delete": "delete", "operation": "operation",
           "transaction": "transaction"}
OUTCOME = {"success": "0", "failed": "4", "denied": "4", "error": "8"}


def audit_event(row: Any, patients: list[str], base: str) -> dict[str, Any]:
    """One entry of the trail as an AuditEvent (id ``audit-{seq}``)."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"audit-{row['seq']}",
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "action": ACTION.get(row["action"], "E"),
        "recorded": format_instant(row["recorded"]),
        "outcome": OUTCOME.get(row["outcome"], "8"),
        "agent": [{
            "who": {"identifier": {"system": f"{base}/actor/{row['actor_kind']}", "value": row["actor_id"]}},
            "requestor": True,
            **({"role": [{"text": r} for r in row["roles"].split(",") if r]} if row["roles"] else {}),
            **({"network": {"address": row["source"], "type": "2"}} if row["source"] else {}),
        }],
        "source": {"observer": {"display": "DUI backend"}, "site": row["establishment"] or "-"},
    }
    if row["action"] in SUBTYPE:
        event["subtype"] = [{"system": INTERACTION, "code": SUBTYPE[row["action"]]}]
    if row["outcome"] != "success":
        event["outcomeDesc"] = f"{row['outcome']} ({row['status'] or '-'}; {row['detail'] or '-'})"
    entities: list[dict[str, Any]] = []
    if row["resource_type"]:
        what = row["resource_type"] + (f"/{row['resource_id']}" if row["resource_id"] else "")
        entities.append({"what": {"reference": what} if row["resource_id"] else {"display": what}, "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}})
    entities += [{"what": {"reference": f"Patient/{pid}"}, "type": {
        "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"}} for pid in patients]
    if entities:
        event["entity"] = entities
    if row["purpose"]:
        event["purposeOfEvent"] = [{"text": row["purpose"]}]
    if row["request_id"]:
        event["source"]["type"] = [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                    "code": "3", "display": f"Web Server (request {row['request_id']})"}]
    return event
