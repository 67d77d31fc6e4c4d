"""Tables of the fall-sensor alerts (``dui.staff.alerts``).

- ``staff_alert``: one row per alert, its state (open, acknowledged) and what the record holds of it (the
  Observation of the fall, the Flag shown while nobody has acknowledged it). The resident is named by the id of
  her Patient resource only.
- ``staff_alert_event``: what happened to alerts, in order (raised, merged, acknowledged, escalated). Its ``seq``
  is the Server-Sent Events id: a client that reconnects with ``Last-Event-ID`` gets what it missed, and nothing
  twice.
- ``device_event``: every sensor event accepted, by the device client and the event's own id. Its primary key is
  the constraint that makes a repeated event (a sensor or gateway retrying) land once, whatever the interleaving.

Times are timezone-aware (``UtcDateTime``), as in the other tables of the service.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, String, Table

from dui.db import UtcDateTime, metadata

staff_alert = Table(
    "staff_alert",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("establishment", String(9), nullable=False),  # FINESS
    Column("unit", String(64), nullable=True),  # Location id of the unit (ward) of the room
    Column("room", String(64), nullable=False),  # Location id
    Column("room_name", String(200), nullable=True),
    Column("patient_id", String(64), nullable=True),  # no resident in the room: still an alert
    Column("sensor", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("events", Integer, nullable=False),  # sensor events merged into this alert
    Column("raised_at", UtcDateTime, nullable=False),
    Column("last_event_at", UtcDateTime, nullable=False),
    Column("observation_id", String(64), nullable=True),
    Column("flag_id", String(64), nullable=True),
    Column("acknowledged_at", UtcDateTime, nullable=True),
    Column("acknowledged_by", String(64), nullable=True),
    Column("escalated_at", UtcDateTime, nullable=True),
    CheckConstraint("state IN ('open', 'acknowledged')", name="state"),
)
Index("ix_staff_alert_open", staff_alert.c.establishment, staff_alert.c.state, staff_alert.c.raised_at)

staff_alert_event = Table(
    "staff_alert_event",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(36), ForeignKey("staff_alert.id"), nullable=False),
    Column("establishment", String(9), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    CheckConstraint("kind IN ('raised', 'merged', 'acknowledged', 'escalated')", name="kind"),
)
Index("ix_staff_alert_event_establishment", staff_alert_event.c.establishment, staff_alert_event.c.seq)

device_event = Table(
    "device_event",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("alert_id", String(36), nullable=False),  # no foreign key: inserted first, to claim the event
    Column("received_at", UtcDateTime, nullable=False),
)
