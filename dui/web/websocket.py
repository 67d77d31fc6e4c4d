"""``/ws/subscriptions``: the websocket of the Subscriptions' websocket channel (``dui.subscriptions.websocket``).

The upgrade request carries the client's bearer token, as every request does; only an API client registered for an
establishment is let in (the Subscriptions are theirs, ``dui.auth.policy.CLIENT_TYPES``). Then, in text messages:
``bind <id>`` answered ``bound <id>`` or ``error <id> <reason>``; ``ping <id>`` sent when a resource matches that
Subscription. The socket polls ``subscription_ping`` every ``POLL_SECONDS`` (an indexed read of what follows the last
ping sent), so it sees the pings written by ``dui worker`` on any host. The token is checked again every
``RECHECK_SECONDS``: once it expires, or its client is disabled, the socket is closed (1008); the client connects again
with a new token and binds again.

Audit: one entry for the connection (``websocket``, 101), one per bind (a read of the Subscription, allowed or
refused), one per ping sent (``subscription-notify``, with the resource that matched and its resident, as the
rest-hook channel records its calls).

Each open socket holds a server thread for its life (``dui serve --threads``), as an SSE stream does.

Under ``dui serve --server granian`` there is no socket to take over: every request here is answered 501
(``NoWebsocket``), before authentication, saying the channel needs gunicorn.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from flask import Blueprint, Response, g, request
from simple_websocket import ConnectionClosed, Server

from dui.audit import trail
from dui.auth.actor import Actor
from dui.errors import DuiError, Forbidden, Invalid, Unauthorized
from dui.services import Services
from dui.subscriptions import websocket
from dui.web.audit import mark_recorded, record_apart
from dui.web.context import current_actor, services

logger = logging.getLogger("dui.web")
bp = Blueprint("websocket", __name__)
PATH = websocket.PATH
POLL_SECONDS = 0.2
RECHECK_SECONDS = 5.0
MAX_MESSAGE = 1024  # bytes: "bind <id>" is short
KEEPALIVE_SECONDS = 25  # a websocket ping frame: keeps proxies from closing a quiet socket, finds a vanished peer


class NoWebsocket(DuiError):
    """501: the server running the app cannot hand its socket over (``dui serve --server granian``)."""

    status = 501
    code = "not-supported"


# The WSGI servers that hand the connection's socket to the app (simple_websocket finds it there): gunicorn's
# threaded workers, werkzeug's development server. granian's WSGI interface hands none.
SOCKETS = ("gunicorn.socket", "werkzeug.socket")


class UpgradeRequired(DuiError):
    """426: a plain HTTP request to the websocket."""

    status = 426
    code = "not-supported"


def subscriptions() -> Response:
    if not any(key in request.environ for key in SOCKETS):
        raise NoWebsocket("The Subscriptions' websocket channel is not served by this server: it needs "
                          "`dui serve --server gunicorn` (granian's WSGI interface cannot hand a socket over); "
                          "use a rest-hook Subscription, or a server run with gunicorn")
    svc = services()
    actor = current_actor()
    if actor.kind == "anonymous":
        raise Unauthorized("The websocket needs an API client's access token (Authorization: Bearer ...)",
                           headers={"WWW-Authenticate": 'Bearer realm="dui"'})
    if actor.kind != "client" or actor.establishment is None:
        raise Forbidden("The Subscriptions' websocket serves API clients registered for an establishment")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise UpgradeRequired("This is a websocket (RFC 6455): connect with 'Upgrade: websocket'",
                              headers={"Upgrade": "websocket"})
    try:
        ws = Server.accept(request.environ, max_message_size=MAX_MESSAGE, ping_interval=KEEPALIVE_SECONDS)
    except Exception:  # a handshake the library refuses (no key, wrong version), or no socket to take over
        raise Invalid("Not a websocket handshake this server can accept (RFC 6455, version 13)") from None
    where = (request.remote_addr, g.get("request_id"))
    record_apart(svc, trail.AuditEntry("websocket", "success", actor, "Subscription", None, f"websocket {PATH}", 101,
                                       *where))
    mark_recorded()
    try:
        Socket(svc, ws, actor, request.headers.get("Authorization"), where).run()
    finally:
        if ws.connected:
            with contextlib.suppress(ConnectionClosed, OSError):
                ws.close()
    return _Ended(ws.mode)


# werkzeug routes an upgrade request to a websocket rule only: a rule of each kind, so that a plain GET is answered 426
bp.add_url_rule(PATH, "socket", subscriptions, methods=["GET"], websocket=True)
bp.add_url_rule(PATH, "plain", subscriptions, methods=["GET"])


class _Ended(Response):
    """What the view returns once the socket is closed: nothing more is written to the connection, and the server
    is told to drop it (``StopIteration`` for gunicorn's workers, ``ConnectionError`` for werkzeug's)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":
            raise ConnectionError()
        return []


class Socket:
    """One client's socket: its binds, the pings it is sent, its token checked again."""

    def __init__(self, svc: Services, ws: Server, actor: Actor, authorization: str | None,
                 where: tuple[str | None, str | None]) -> None:
        self.svc = svc
        self.ws = ws
        self.actor = actor
        self.authorization = authorization
        self.where = where
        self.bound: set[str] = set()
        self.after = 0  # the last ping sent (or, before the first bind, none yet)

    def run(self) -> None:
        polled = checked = time.monotonic()
        while self.ws.connected:
            try:
                message = self.ws.receive(timeout=POLL_SECONDS)
                if message is not None:
                    self.answer(message)
                if self.bound and time.monotonic() - polled >= POLL_SECONDS:
                    self.send_pings()
                    polled = time.monotonic()
            except ConnectionClosed:
                return
            if time.monotonic() - checked >= RECHECK_SECONDS:
                checked = time.monotonic()
                if not self.still_allowed():
                    self.ws.close(1008, "the access token expired or its client was disabled: connect again")
                    return

    def still_allowed(self) -> bool:
        try:
            return self.svc.authenticator.actor_for(self.authorization).id == self.actor.id
        except DuiError:
            return False

    def answer(self, message: str | bytes) -> None:
        words = message.split() if isinstance(message, str) else []
        if len(words) != 2 or words[0] != "bind":
            self.ws.send("error expected 'bind <Subscription id>'")
            return
        sub_id = words[1]
        if sub_id in self.bound:
            self.ws.send(f"bound {sub_id}")
            return
        if len(self.bound) >= websocket.MAX_BOUND:
            self.ws.send(f"error {sub_id} a socket binds at most {websocket.MAX_BOUND} Subscriptions")
            return
        with self.svc.unit_of_work(write=False) as session:
            reason = websocket.bind(self.svc.fhir_context(session, self.actor), sub_id)
            if reason is None and not self.bound:
                self.after = websocket.last_ping(session)
        record_apart(self.svc, trail.AuditEntry(
            "read", "success" if reason is None else "denied", self.actor, "Subscription", sub_id[:64],
            "websocket bind", 200 if reason is None else 404, *self.where))
        if reason is not None:
            self.ws.send(f"error {sub_id} {reason}")
            return
        self.bound.add(sub_id)
        self.ws.send(f"bound {sub_id}")

    def send_pings(self) -> None:
        with self.svc.unit_of_work(write=False) as session:
            pings = websocket.pings_after(session, self.bound, self.after)
        sent = []
        try:
            for ping in pings:
                self.ws.send(f"ping {ping.subscription_id}")
                self.after = ping.seq
                sent.append(ping)
        finally:
            if sent:
                self.audit(sent)

    def audit(self, sent: list[websocket.Ping]) -> None:
        try:
            with self.svc.unit_of_work(write=True) as session:
                for ping in sent:
                    trail.record(session, trail.AuditEntry(
                        "subscription-notify", "success", self.actor, ping.resource_type, ping.resource_id,
                        f"Subscription/{ping.subscription_id}: websocket ping", 200, *self.where,
                        patients=(ping.patient_id,) if ping.patient_id else ()), self.svc.clock())
        except Exception:  # the pings are sent: the log says their entries are missing
            logger.exception("audit entries of websocket pings not recorded", extra={"count": len(sent)})
