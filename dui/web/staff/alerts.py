"""``/api/devices/events`` (sensor gateways), ``/api/alerts`` and its Server-Sent Events stream (``dui.staff.alerts``).

The stream (``GET /api/alerts/stream``, ``text/event-stream``) sends each alert event of the caller's establishment
as it is committed: ``id`` the event's sequence number, ``event`` raised, merged, acknowledged or escalated, ``data``
the alert as ``GET /api/alerts`` shows it. It polls ``staff_alert_event`` every ``POLL_SECONDS`` (an indexed read of
what follows the last id sent), whatever process or host committed the event, and ends after
``DUI_ALERT_STREAM_SECONDS``; the client reconnects with ``Last-Event-ID`` and misses nothing. Without
``Last-Event-ID`` it starts with the events to come.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
from flask import Response, request, stream_with_context

from dui.auth.policy import may
from dui.errors import Forbidden
from dui.staff import alerts
from dui.web.context import services
from dui.web.staff import schemas
from dui.web.staff.edge import DEVICE, STAFF, Answer, SchemaRefusal, Use, bp, caller, endpoint, load
from dui.web.staff.problems import validation_problem

POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0


@endpoint("POST", "/devices/events", name="device-event", summary="A sensor event (device clients only)",
          tag="Alerts", who=DEVICE, body=schemas.DeviceEventIn, answer=schemas.AlertOut, status=201, writes=True)
def device_event(use: Use) -> Answer:
    """A fall detected by a sensor of the device's establishment: 201 with the new alert, or 200 with the alert it
    joined (the same event again, or another event of the same room while its alert is open)."""
    received = alerts.receive(use.record, use.session, use.actor, use.now, use.body,
                              use.settings.alerts.merge_window)
    if received.alert["resident_id"]:
        use.patients.add(received.alert["resident_id"])
    return Answer(received.alert, 201 if received.created else 200)


@endpoint("GET", "/alerts", name="open-alerts", summary="The open alerts of my establishment", tag="Alerts",
          query=schemas.AlertsQuery, answer=schemas.AlertList)
def open_alerts(use: Use) -> Answer:
    """Oldest first; with ``unit``, that unit's."""
    assert use.actor.establishment is not None
    items = alerts.open_alerts(use.record, use.session, use.actor.establishment, use.query.get("unit"), 200)
    use.patients.update(a["resident_id"] for a in items if a["resident_id"])
    return Answer({"items": items})


@endpoint("POST", "/alerts/<aid>/acknowledge", name="acknowledge-alert", summary="Acknowledge an alert",
          tag="Alerts", answer=schemas.AlertOut, writes=True)
def acknowledge(use: Use, aid: str) -> Answer:
    """Records who and when, and ends the alert's Flag. An alert already acknowledged answers as it stands."""
    alert = alerts.acknowledge(use.record, use.session, use.actor, use.now, aid)
    if alert["resident_id"]:
        use.patients.add(alert["resident_id"])
    return Answer(alert)


@bp.get("/alerts/stream")
def stream() -> Response:
    actor = caller(STAFF)
    query = load(schemas.AlertsQuery, dict(request.args.items()), "query")
    svc = services()
    if not may(actor, "r", "Flag", svc.policy):  # the alerts are care data, as their Flags
        raise Forbidden(f"Not allowed: {', '.join(sorted(actor.roles))} may not read the care team's alerts")
    establishment = actor.establishment
    assert establishment is not None
    last_id = request.headers.get("Last-Event-ID")
    if last_id is not None and not (last_id.isdigit() and len(last_id) <= 18):
        raise SchemaRefusal(validation_problem({"Last-Event-ID": ["Not a valid integer."]}, "query"))
    with svc.unit_of_work(write=False) as session:
        after = int(last_id) if last_id is not None else alerts.last_seq(session, establishment)
    unit = query.get("unit")
    seconds = svc.settings.alerts.stream_seconds

    def events() -> Iterator[bytes]:
        nonlocal after
        yield b"retry: 1000\n\n"
        deadline = time.monotonic() + seconds
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            with svc.unit_of_work(write=False) as session:
                found = alerts.feed(session, establishment, after, unit)
            for seq, kind, alert in found:
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), orjson.dumps(alert))
                after = seq
            if found:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
                yield b": still here\n\n"  # a comment: keeps proxies from closing a quiet stream
                quiet_since = time.monotonic()
            time.sleep(POLL_SECONDS)

    return Response(stream_with_context(events()), content_type="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
