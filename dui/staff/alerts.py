"""Fall-sensor alerts: a sensor's event becomes a fact of the record and an alert for the staff on duty.

A sensor gateway (a ``device`` client, ``dui clients create --device``) posts each event it detects. The sensor is
a FHIR ``Device`` of the establishment (``identifier`` its serial number, ``owner`` the establishment's
Organization, ``location`` its room); the resident is the one whose current stay is in that room. The event is
written as an Observation of a fall (``method`` capteur, ``device`` the sensor) with a Flag that stays active until
someone acknowledges the alert, and as an alert in ``staff_alert``.

- The same event posted twice (a gateway retrying) lands once: ``device_event``'s primary key decides.
- Events of the same room while its alert is open, within ``DUI_ALERT_MERGE_WINDOW``, join that alert (a sensor
  that fires again as the resident tries to get up is one fall, not five); events of one room are filed one after
  the other (an advisory lock on PostgreSQL, the single writer on SQLite), so two at once make one alert.
- ``acknowledge`` records who and when, and ends the Flag.
- ``escalate`` (run by ``dui worker``) marks the alerts nobody acknowledged within ``DUI_ALERT_ESCALATION``: from
  then on they go to every staff client of the establishment, not only those of the room's unit.
- ``staff_alert_event`` is the ordered feed the SSE stream (``/api/alerts/stream``) serves, resumable by ``seq``.

The event is processed with the device's establishment as its sight: a gateway names sensors of its own
establishment only, and reaches no other resident than those of its rooms.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dui.auth.actor import Actor
from dui.auth.scopes import ScopeSet
from dui.db import advisory_lock
from dui.errors import Conflict, NotFound, Unprocessable
from dui.fhir.scope import FINESS_SYSTEM
from dui.staff import care, codes
from dui.staff.record import Record, create_entry, instant, location_id
from dui.staff.tables import device_event, staff_alert, staff_alert_event

# What processing one event needs: find the sensor, its room and resident; write the fall and its Flag.
DEVICE_WORK_SCOPES = ScopeSet.parse("system/Device.s system/Organization.s system/Location.r system/Encounter.s "
                                    "system/Patient.r system/Observation.c system/Flag.c")


@dataclass(frozen=True)
class Received:
    alert: dict[str, Any]
    created: bool  # a new alert (201); False: merged into an open one, or this event was already received


def working_actor(device: Actor) -> Actor:
    """The actor an event is processed as: the device's client, bound to its establishment, with only the rights
    processing needs (the device's own token grants nothing under /fhir)."""
    return Actor("client", device.id, frozenset(), device.establishment, scopes=DEVICE_WORK_SCOPES,
                 client_id=device.client_id, auth_method=device.auth_method, issuer=device.issuer,
                 token_id=device.token_id)


def receive(record: Record, session: Session, device: Actor, now: datetime, event: dict[str, Any],
            merge_window: float) -> Received:
    """File one sensor event (see the module's docstring)."""
    assert device.establishment is not None  # a device client is registered with its establishment
    alert_id = str(uuid.uuid4())
    try:
        with session.begin_nested():  # claim the event: a repeat fails here, whoever came first
            session.execute(insert(device_event).values(client_id=device.id, event_id=event["event_id"],
                                                        alert_id=alert_id, received_at=now))
    except IntegrityError:
        earlier = session.execute(select(device_event.c.alert_id).where(
            device_event.c.client_id == device.id, device_event.c.event_id == event["event_id"])).scalar_one()
        return Received(view(_alert_row(session, earlier)), False)
    sensor, room = _sensor(record, device.establishment, event["sensor"])
    # Two events of one room at once: the second waits for the first to commit, then joins its alert.
    advisory_lock(session, f"staff-alert:{device.establishment}:{room['id']}")
    open_alert = session.execute(select(staff_alert).where(
        staff_alert.c.establishment == device.establishment, staff_alert.c.room == room["id"],
        staff_alert.c.kind == event["kind"], staff_alert.c.state == "open",
        staff_alert.c.last_event_at >= now - timedelta(seconds=merge_window))
        .order_by(staff_alert.c.raised_at.desc()).limit(1)).first()
    if open_alert is not None:
        session.execute(update(staff_alert).where(staff_alert.c.id == open_alert.id).values(
            events=staff_alert.c.events + 1, last_event_at=now))
        session.execute(update(device_event).where(device_event.c.client_id == device.id,
                                                   device_event.c.event_id == event["event_id"])
                        .values(alert_id=open_alert.id))
        _log(session, open_alert.id, device.establishment, "merged", now)
        return Received(view(_alert_row(session, open_alert.id)), False)
    patient_id = _resident_in(record, room["id"])
    observation_id = flag_id = None
    if patient_id is not None:
        observation_id, flag_id = _record_fall(record, device, patient_id, sensor, event, now)
    unit = (room.get("partOf") or {}).get("reference", "").removeprefix("Location/") or None
    session.execute(insert(staff_alert).values(
        id=alert_id, establishment=device.establishment, unit=unit, room=room["id"], room_name=room.get("name"),
        patient_id=patient_id, sensor=event["sensor"], kind=event["kind"], state="open", events=1, raised_at=now,
        last_event_at=now, observation_id=observation_id, flag_id=flag_id))
    _log(session, alert_id, device.establishment, "raised", now)
    return Received(view(_alert_row(session, alert_id)), True)


def acknowledge(record: Record, session: Session, actor: Actor, now: datetime, alert_id: str) -> dict[str, Any]:
    """Record who acknowledged the alert and when, and end its Flag. An alert already acknowledged answers as it
    stands (the first acknowledgement is the one kept)."""
    record.require("u", "Flag")  # acknowledging is the care team's, Flag or not (an empty room has none)
    row = visible_alert(record, session, actor, alert_id)
    if row.state == "acknowledged":
        return view(row)
    if row.flag_id is not None:
        flag, version = record.read("Flag", row.flag_id)
        flag.pop("meta", None)
        flag["status"] = "inactive"
        flag["period"] = {**(flag.get("period") or {}), "end": instant(now)}
        record.update(flag, f'W/"{version}"')
    done = session.execute(update(staff_alert).where(staff_alert.c.id == alert_id, staff_alert.c.state == "open")
                           .values(state="acknowledged", acknowledged_at=now, acknowledged_by=actor.id))
    if done.rowcount != 1:  # type: ignore[attr-defined]  # acknowledged by someone else meanwhile: their acknowledgement stands
        raise Conflict("The alert was acknowledged meanwhile; read it again")
    _log(session, alert_id, row.establishment, "acknowledged", now)
    return view(_alert_row(session, alert_id))


def escalate(session: Session, now: datetime, delay: float) -> int:
    """Mark the open alerts nobody acknowledged within ``delay`` seconds; returns how many."""
    due = session.execute(select(staff_alert.c.id, staff_alert.c.establishment).where(
        staff_alert.c.state == "open", staff_alert.c.escalated_at.is_(None),
        staff_alert.c.raised_at <= now - timedelta(seconds=delay))).all()
    for alert_id, establishment in due:
        done = session.execute(update(staff_alert).where(staff_alert.c.id == alert_id,
                                                         staff_alert.c.escalated_at.is_(None))
                               .values(escalated_at=now))
        if done.rowcount == 1:  # type: ignore[attr-defined]
            _log(session, alert_id, establishment, "escalated", now)
    return len(due)


def visible_alert(record: Record, session: Session, actor: Actor, alert_id: str) -> Row[Any]:
    """The alert, if it is the actor's establishment's and its resident is one the actor sees; ``NotFound``
    otherwise (the same answer for one that does not exist)."""
    row = session.execute(select(staff_alert).where(staff_alert.c.id == alert_id)).first()
    if row is None or row.establishment != actor.establishment:
        raise NotFound(f"No alert {alert_id}")
    if row.patient_id is not None:
        try:
            record.read("Patient", row.patient_id)
        except NotFound:
            raise NotFound(f"No alert {alert_id}") from None
    return row


def open_alerts(record: Record, session: Session, establishment: str, unit: str | None, limit: int) -> list[
        dict[str, Any]]:
    """The open alerts, oldest first: care data, read by those who may read Flags."""
    record.require("r", "Flag")
    query = select(staff_alert).where(staff_alert.c.establishment == establishment, staff_alert.c.state == "open")
    if unit:
        query = query.where(staff_alert.c.unit == unit)
    return [view(row) for row in session.execute(query.order_by(staff_alert.c.raised_at).limit(limit))]


def feed(session: Session, establishment: str, after: int, unit: str | None, limit: int = 100) -> list[
        tuple[int, str, dict[str, Any]]]:
    """``(seq, kind, alert)`` of the establishment's alert events after ``after``, in order. With ``unit``: the
    events of that unit's rooms, and every escalation (an escalated alert goes to the whole house)."""
    e = staff_alert_event.c
    query = (select(e.seq, e.kind.label("event_kind"), staff_alert).join(staff_alert, staff_alert.c.id == e.alert_id)
             .where(e.establishment == establishment, e.seq > after).order_by(e.seq).limit(limit))
    out = []
    for row in session.execute(query):
        if unit and row.unit != unit and row.event_kind != "escalated":
            continue
        out.append((row.seq, row.event_kind, view(row)))
    return out


def last_seq(session: Session, establishment: str) -> int:
    e = staff_alert_event.c
    found = session.execute(select(e.seq).where(e.establishment == establishment).order_by(e.seq.desc())
                            .limit(1)).scalar()
    return int(found or 0)


def view(row: Any) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "state": row.state, "escalated": row.escalated_at is not None,
            "resident_id": row.patient_id, "room": {"id": row.room, "name": row.room_name}, "unit_id": row.unit,
            "sensor": row.sensor, "events": row.events, "raised_at": _iso(row.raised_at),
            "last_event_at": _iso(row.last_event_at), "acknowledged_at": _iso(row.acknowledged_at),
            "acknowledged_by": row.acknowledged_by, "escalated_at": _iso(row.escalated_at),
            "observation_id": row.observation_id, "flag_id": row.flag_id}


def _iso(moment: datetime | None) -> str | None:
    return instant(moment) if moment is not None else None


def _alert_row(session: Session, alert_id: str) -> Row[Any]:
    return session.execute(select(staff_alert).where(staff_alert.c.id == alert_id)).one()


def _log(session: Session, alert_id: str, establishment: str, kind: str, now: datetime) -> None:
    session.execute(insert(staff_alert_event).values(alert_id=alert_id, establishment=establishment, kind=kind,
                                                     at=now))


def _sensor(record: Record, establishment: str, serial: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sensor's Device, owned by the device's establishment, and its room."""
    devices = record.search("Device", [("identifier", serial), ("organization.identifier",
                                                                f"{FINESS_SYSTEM}|{establishment}"), ("_count", "2")])
    if len(devices) != 1:
        raise Unprocessable(f"Unknown sensor {serial!r}: register it as a Device of the establishment (identifier, "
                            "owner, location)", expression="sensor", code="not-found")
    ref = (devices[0].get("location") or {}).get("reference", "")
    if not ref.startswith("Location/"):
        raise Unprocessable(f"Sensor {serial!r} has no room (Device.location)", expression="sensor")
    room, _ = record.read("Location", ref.removeprefix("Location/"))
    return devices[0], room


def _resident_in(record: Record, room_id: str) -> str | None:
    stays = record.search("Encounter", [("location", f"Location/{room_id}"), ("status", "in-progress"),
                                        ("_sort", "-date"), ("_count", "1")])
    if not stays:
        return None
    reference = (stays[0].get("subject") or {}).get("reference", "")
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


def _record_fall(record: Record, device: Actor, patient_id: str, sensor: dict[str, Any], event: dict[str, Any],
                 now: datetime) -> tuple[str, str]:
    subject = {"reference": f"Patient/{patient_id}"}
    when = instant(event.get("occurred_at") or now)
    observation_url, flag_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    observation = care.fall_observation(subject, device, when, {}, "sensor", {"reference": f"Device/{sensor['id']}"})
    system, code, display = codes.FALL_ALERT_FLAG
    flag = {"resourceType": "Flag", "status": "active",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "safety"}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": subject, "period": {"start": when}, "author": {"reference": f"Device/{sensor['id']}"}}
    locations = record.transaction([create_entry(observation, observation_url), create_entry(flag, flag_url)])
    return location_id(locations[0]), location_id(locations[1])
