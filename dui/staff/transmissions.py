"""Transmissions ciblées: what the care team passes on from one shift to the next, written the DAR way.

A transmission has a target (la cible: "douleur", "alimentation", "chute"...) and three parts: données (what was
seen), actions (what was done), résultats (what came of it; often written by the next shift). It is stored as a
FHIR ``Communication`` of the resident (category ``transmission-ciblee``, ``topic`` the target, one payload per
part marked with the ``dui-dar-part`` extension), so partners read it through ``/fhir`` too, under the same rules.

Shifts are read in the establishment's time zone (``DUI_TIMEZONE``): matin 07:00-14:00, après-midi 14:00-21:00,
nuit 21:00-07:00 (the night of a date begins that evening).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dui.auth.actor import Actor
from dui.errors import NotFound
from dui.residents.provenance import actor_reference
from dui.staff import codes
from dui.staff.record import Record, instant

SHIFTS: dict[str, tuple[time, int]] = {  # name -> (start, hours)
    "matin": (time(7), 7),
    "apres-midi": (time(14), 7),
    "nuit": (time(21), 10),
}


def shift_bounds(day: date, shift: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start, hours = SHIFTS[shift]
    begin = datetime.combine(day, start, tzinfo=tz)
    return begin, begin + timedelta(hours=hours)


def shift_of(moment: datetime, tz: ZoneInfo) -> tuple[date, str]:
    """The shift a moment falls in, and the date it is named by."""
    local = moment.astimezone(tz)
    if local.time() < time(7):
        return local.date() - timedelta(days=1), "nuit"
    for name in ("matin", "apres-midi"):
        begin, end = shift_bounds(local.date(), name, tz)
        if begin <= local < end:
            return local.date(), name
    return local.date(), "nuit"


def write(record: Record, actor: Actor, now: datetime, patient_id: str, target: str,
          parts: dict[str, str | None]) -> tuple[dict[str, Any], int]:
    """Record a transmission; returns the Communication and its version."""
    system, code, display = codes.TRANSMISSION
    payload = [{"extension": [{"url": codes.DAR_PART, "valueCode": part}], "contentString": parts[part]}
               for part in codes.DAR_PARTS if parts.get(part)]
    communication = {
        "resourceType": "Communication", "status": "completed",
        "category": [{"coding": [{"system": system, "code": code, "display": display}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "topic": {"text": target},
        "sent": instant(now),
        "sender": actor_reference(actor),
        "payload": payload,
    }
    return record.create(communication)


def complete(record: Record, communication_id: str, results: str, if_match: str | None) -> tuple[dict[str, Any], int]:
    """Add or replace the résultats of a transmission (the next shift's follow-up)."""
    communication, _ = record.read("Communication", communication_id)
    if not is_transmission(communication):
        raise NotFound(f"No transmission {communication_id}")
    payload = [p for p in communication.get("payload") or [] if part_of(p) != "resultats"]
    payload.append({"extension": [{"url": codes.DAR_PART, "valueCode": "resultats"}], "contentString": results})
    communication["payload"] = payload
    communication.pop("meta", None)
    return record.update(communication, if_match)


def read_shift(record: Record, day: date, shift: str, tz: ZoneInfo, patient_id: str | None = None,
               cursor: str | None = None, limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """The transmissions of a shift, oldest first; the cursor of the next page, if any."""
    begin, end = shift_bounds(day, shift, tz)
    system, code, _ = codes.TRANSMISSION
    params = [("category", f"{system}|{code}"), ("sent", f"ge{instant(begin)}"), ("sent", f"lt{instant(end)}"),
              ("_sort", "sent"), ("_count", str(limit))]
    if patient_id:
        params.append(("subject", f"Patient/{patient_id}"))
    return record.page("Communication", params, cursor)


def is_transmission(communication: dict[str, Any]) -> bool:
    system, code, _ = codes.TRANSMISSION
    return any(c.get("system") == system and c.get("code") == code
               for cat in communication.get("category") or [] for c in cat.get("coding") or [])


def part_of(payload: dict[str, Any]) -> str | None:
    for extension in payload.get("extension") or []:
        if extension.get("url") == codes.DAR_PART:
            value = extension.get("valueCode")
            return value if isinstance(value, str) else None
    return None


def view(communication: dict[str, Any], version: int) -> dict[str, Any]:
    """A transmission as the staff API shows it."""
    parts = {part_of(p): p.get("contentString") for p in communication.get("payload") or []}
    sender = (communication.get("sender") or {}).get("identifier") or {}
    return {"id": communication["id"], "version": version,
            "resident_id": (communication.get("subject") or {}).get("reference", "").removeprefix("Patient/"),
            "target": (communication.get("topic") or {}).get("text"), "sent": communication.get("sent"),
            "author": sender.get("value"), "donnees": parts.get("donnees"), "actions": parts.get("actions"),
            "resultats": parts.get("resultats")}
