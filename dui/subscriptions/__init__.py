"""FHIR R4 Subscriptions, rest-hook and websocket channels: other systems (a nurse-call system) told of the
Observations and Flags that match their criteria (docs/staff-api.md, "Subscriptions"; http://hl7.org/fhir/R4/subscription.html).

- ``rules``: who may keep a Subscription and what it may say. Only an API client registered for an establishment;
  the server stamps its establishment's Organization as the owner (``dui-owner``, the search parameter ``owner``,
  ``dui.fhir.scope.OWNED_TYPES``: no other establishment reads, searches or learns of it) and the client as the one
  the notifications are evaluated for (``dui-owner-client``); both are kept on every update.
- ``matching``: a listener of the store queues a ``subscription.match`` job with every created or updated
  Observation or Flag, in the writing transaction; the job evaluates each active Subscription's criteria (plus
  ``_id``) as a search by the owner client, with its scopes and its establishment's scope, and queues one
  ``subscription.notify`` per match.
- ``delivery``: the rest-hook call of a ``subscription.notify`` job (POST without a body, or PUT of the resource
  when a payload is asked for), from ``dui worker``, never inside a request.
- ``websocket``: what a socket may bind, the pings the matching writes and the sockets read (the socket itself:
  ``dui.web.websocket``).
"""

from dui.subscriptions.delivery import NOTIFY_KIND, notify
from dui.subscriptions.matching import MATCH_KIND, match, on_change
from dui.subscriptions.rules import filer, prepare

__all__ = ["MATCH_KIND", "NOTIFY_KIND", "filer", "match", "notify", "on_change", "prepare"]
