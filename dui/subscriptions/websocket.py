"""The websocket channel of R4 Subscriptions (http://hl7.org/fhir/R4/subscription.html#2.46.7.2): what a socket may
bind, and the pings it is sent. The socket itself is the web layer's (``dui.web.websocket``).

R4's exchange: the client creates a Subscription whose ``channel.type`` is ``websocket``, opens the server's
websocket (its address is in the CapabilityStatement, extension ``capabilitystatement-websocket``), sends
``bind <id>``; the server answers ``bound <id>`` and, each time a resource matches the criteria, sends ``ping <id>``;
the client then searches for what changed. Here:

- **bind**: a Subscription is bound by the API client that owns it (``dui-owner-client``), read as that client
  through the FHIR router (its scopes, its establishment: another's Subscription answers as one that does not exist),
  active, not ended, with the websocket channel. Anything else answers ``error <id> <reason>``.
- **pings**: the ``subscription.match`` job writes a row of ``subscription_ping`` (``queue_ping``) for each websocket
  Subscription the change matches; every web process holding a socket bound to it reads the rows
  that follow the last one it sent (``pings_after``), whatever process or host wrote them. A socket bound at some
  moment is sent the pings written after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from dui.errors import DuiError
from dui.fhir import router
from dui.fhir.interactions.base import FhirContext, FhirRequest
from dui.fhir.repository import ResourceVersion
from dui.subscriptions.rules import OWNER_CLIENT, WEBSOCKET, ended
from dui.subscriptions.tables import subscription_ping

KEEP_SECONDS = 300  # a ping is for the sockets bound when it is written; older rows serve nobody
MAX_BOUND = 32  # Subscriptions one socket may bind
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
CAPABILITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"
PATH = "/ws/subscriptions"  # served by dui.web.websocket


def address(fhir_base: str) -> str:
    """The websocket's absolute address, beside the FHIR base (``https://h/fhir`` -> ``wss://h/ws/subscriptions``)."""
    root = fhir_base.removesuffix("/").removesuffix("/fhir")
    scheme, _, rest = root.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{PATH}"


@dataclass(frozen=True)
class Ping:
    seq: int
    subscription_id: str
    resource_type: str
    resource_id: str
    patient_id: str | None


def bind(ctx: FhirContext, subscription_id: str) -> str | None:
    """Why the context's actor may not bind ``subscription_id`` (None: it may). The Subscription is read through the
    router as the actor, so that the scopes, the establishment's scope and the audit rules of a read apply."""
    if not FHIR_ID.fullmatch(subscription_id):
        return "not a Subscription id"
    try:
        answer = router.handle(ctx, FhirRequest("GET", f"Subscription/{subscription_id}"))
    except DuiError:
        return "no such Subscription of yours"
    body = answer.body
    if isinstance(body, bytes | bytearray):
        body = orjson.loads(body)
    if answer.status != 200 or not isinstance(body, dict):
        return "no such Subscription of yours"
    return refusal(body, ctx.actor.id, ctx.clock())


def refusal(sub: dict[str, Any], client_id: str, now: datetime) -> str | None:
    """Why a socket of ``client_id`` may not be sent the pings of ``sub`` (None: it may)."""
    owner = next((e.get("valueString") for e in sub.get("extension", [])
                  if isinstance(e, dict) and e.get("url") == OWNER_CLIENT), None)
    if owner != client_id:
        return "no such Subscription of yours"  # another client of the establishment: as if it did not exist
    if (sub.get("channel") or {}).get("type") != WEBSOCKET:
        return "its channel is not websocket"
    if sub.get("status") != "active" or ended(sub, now):
        return "it is not active"
    return None


def queue_ping(session: Session, sub_id: str, version: ResourceVersion, now: datetime) -> None:
    """The notification of a websocket Subscription: a row the sockets bound to it read (and the rows nobody can
    need any more go)."""
    subject = str((version.resource().get("subject") or {}).get("reference") or "")
    session.execute(delete(subscription_ping).where(subscription_ping.c.at < now - timedelta(seconds=KEEP_SECONDS)))
    session.execute(insert(subscription_ping).values(
        subscription_id=sub_id, resource_type=version.type, resource_id=version.id,
        patient_id=subject.removeprefix("Patient/") if subject.startswith("Patient/") else None, at=now))


def last_ping(session: Session) -> int:
    """The number of the last ping written (a socket binding now is sent those that follow)."""
    return int(session.execute(select(func.coalesce(func.max(subscription_ping.c.seq), 0))).scalar_one())


def pings_after(session: Session, subscription_ids: Iterable[str], after: int, limit: int = 100) -> list[Ping]:
    """The pings of these Subscriptions written after ``after``, in order."""
    ids = sorted(set(subscription_ids))
    if not ids:
        return []
    rows = session.execute(select(subscription_ping).where(
        subscription_ping.c.subscription_id.in_(ids), subscription_ping.c.seq > after)
        .order_by(subscription_ping.c.seq).limit(limit)).mappings()
    return [Ping(r["seq"], r["subscription_id"], r["resource_type"], r["resource_id"], r["patient_id"]) for r in rows]
