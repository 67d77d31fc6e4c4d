"""The rest-hook call of a ``subscription.notify`` job (http://hl7.org/fhir/R4/subscription.html#channels); for the
websocket channel, the ping the bound sockets send (``dui.subscriptions.websocket``).

"The channel is executed by making a post to the URI. If a payload is included, the URL is interpreted as the
service base, and an update (PUT) is made": without a payload, a POST to the endpoint with no body; with
``application/fhir+json``, a PUT of the version that matched at ``[endpoint]/[type]/[id]``. The ``channel.header``
lines are sent as they are. A 2xx answer delivers; a 5xx, 408 or 429 answer, a timeout or a network failure is
transient (the outbox tries again); any other answer, a redirect included, is permanent (a dead letter). The
Subscription and its owner client are read again at send time: one turned off, deleted or disabled since the
match is not called. Errors name the status or the exception's class, never the URL (it may hold a secret) nor
the resource.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sqlalchemy.orm import Session

from dui.audit.trail import AuditEntry
from dui.auth.actor import SYSTEM
from dui.outbox.queue import Job
from dui.outbox.runner import Outcome, delivered, permanent, transient
from dui.subscriptions import websocket
from dui.subscriptions.matching import NOTIFY_KIND, ContextOf, owner_actor
from dui.subscriptions.rules import PAYLOAD, WEBSOCKET, ended, headers

__all__ = ["NOTIFY_KIND", "call", "notify"]

TIMEOUT = 10.0  # seconds; the outbox lease (DUI_OUTBOX_LEASE, 300 s) outlasts it


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: the endpoint is the one the Subscription names."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def notify(session: Session, job: Job, context_of: ContextOf, timeout: float = TIMEOUT,
           public_only: bool = False) -> Outcome:
    """Call the Subscription's endpoint for the version that matched; a call that delivers carries its audit entry
    (``subscription-notify``: the owner client as the actor, the resource and its resident), which the outbox
    records with the job's new state: the handler itself only reads. ``public_only
    (``DUI_ENV=prod``): an endpoint whose host is not a public address is not called (``endpoint_is_public``)."""
    system = context_of(session, SYSTEM)
    store = system.internal
    sub_id, _, reference = job.idempotency_key.partition(" ")
    found = store.read("Subscription", sub_id)
    sub = found.resource() if found is not None and found.body is not None and not found.deleted else None
    if sub is None or sub.get("status") != "active" or ended(sub, system.clock()):
        return delivered("not sent: the subscription is no longer active")
    owner = owner_actor(session, sub)
    if owner is None:
        return delivered("not sent: the subscription's client is disabled or gone")
    try:
        rtype, rid, _, number = reference.split("/")
        version = store.vread(rtype, rid, int(number))
    except ValueError:
        return permanent("the job's key is not a versioned reference")
    if version is None or version.body is None:
        return permanent("the version that matched can no longer be read")
    channel = sub["channel"]
    if channel.get("type") == WEBSOCKET:  # the bound sockets send it (dui.subscriptions.websocket), audited then
        websocket.queue_ping(session, sub_id, version, system.clock())
        return delivered("ping written for the bound websockets")
    if public_only:
        public = endpoint_is_public(channel["endpoint"])
        if public is None:
            return transient("the endpoint's host name does not resolve")
        if not public:
            return permanent("the endpoint's host is not a public address (DUI_ENV=prod)")
    lines = [*headers(channel), ("User-Agent", "dui-subscriptions")]
    if channel.get("payload") == PAYLOAD:
        url = channel["endpoint"].rstrip("/") + f"/{rtype}/{rid}"
        outcome = call("PUT", url, version.body, [*lines, ("Content-Type", PAYLOAD)], timeout)
    else:
        outcome = call("POST", channel["endpoint"], None, lines, timeout)
    if outcome.status == "delivered":  # recorded by the outbox with the job's new state
        subject = str((version.resource().get("subject") or {}).get("reference") or "")
        outcome = dataclasses.replace(outcome, audit=AuditEntry(
            "subscription-notify", "success", owner, rtype, rid, detail=f"Subscription/{sub_id}: {outcome.text}",
            patients=(subject.removeprefix("Patient/"),) if subject.startswith("Patient/") else ()))
    return outcome


def endpoint_is_public(url: str) -> bool | None:
    """Whether every address the endpoint's host resolves to is a public one (None: it does not resolve).

    A client's Subscription must not make this server call what only the server can reach: its own loopback, the
    hosting network, the cloud's metadata address (server-side request forgery). Checked before each call; the
    call resolves the name again, so a host whose DNS answer changes in between (DNS rebinding) is not covered."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    try:
        found = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found}
    return bool(addresses) and all(a.is_global for a in addresses)


def call(method: str, url: str, body: bytes | None, lines: list[tuple[str, str]], timeout: float) -> Outcome:
    request = urllib.request.Request(url, data=body if body is not None else b"", method=method)
    for name, value in lines:
        request.add_header(name, value)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, refused connections
        return transient(f"{method}: the endpoint cannot be reached ({type(exc).__name__})")
    if 200 <= status < 300:
        return delivered(f"{method} answered {status}")
    if status >= 500 or status in (408, 429):
        return transient(f"{method}: the endpoint answered {status}")
    return permanent(f"{method}: the endpoint answered {status}")
